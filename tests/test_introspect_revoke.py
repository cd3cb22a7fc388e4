"""Token introspection (RFC 7662, SMART token-introspection) and revocation (RFC 7009): a
revoked token stops working at once."""

from __future__ import annotations

import pytest

from tests.conftest import FHIR_JSON, bearer
from tests.factories import patient
from tests.oauth import (
    INTROSPECT_URL,
    REVOKE_URL,
    TOKEN_URL,
    assertion,
    backend_form,
    register_backend,
    rsa_key,
)


@pytest.fixture(scope="module")
def key():
    return rsa_key()


@pytest.fixture
async def backend(client, container, key):
    await register_backend(container, "qhio", key, "system/*.rs")
    await register_backend(container, "other", key, "system/*.rs")

    async def token(client_id="qhio"):
        r = await client.post(TOKEN_URL, data=backend_form(assertion(key, client_id)))
        assert r.status_code == 200, r.text
        return r.json()["access_token"]

    return token


async def test_introspection_of_active_and_invalid_tokens(client, backend, make_token):
    token = await backend()
    caller = bearer(await backend("other"))  # any authorized client may introspect any token
    r = await client.post(INTROSPECT_URL, data={"token": token}, headers=caller)
    assert r.status_code == 200
    body = r.json()
    assert body["active"] is True and body["client_id"] == "qhio"
    assert body["scope"] == "system/*.rs" and isinstance(body["exp"], int)
    patient_token = make_token("patient/*.rs", patient="p1")
    body = (await client.post(INTROSPECT_URL, data={"token": patient_token}, headers=caller)).json()
    assert body["active"] is True and body["patient"] == "p1"
    for junk in ("not-a-token", token[:-5] + "AAAAA", ""):
        r = await client.post(INTROSPECT_URL, data={"token": junk}, headers=caller)
        assert r.json() == {"active": False}


async def test_introspection_needs_a_token(client, backend):
    token = await backend()
    r = await client.post(INTROSPECT_URL, data={"token": token})
    assert r.status_code == 401 and "active" not in r.text


async def test_revoked_access_token_stops_working_at_once(client, backend, auth, key):
    await client.post("/Patient", json=patient("m1"), headers={**auth, **FHIR_JSON})
    token = await backend()
    assert (await client.get("/Patient", headers=bearer(token))).status_code == 200
    r = await client.post(REVOKE_URL, data={**backend_form(assertion(key, "qhio")), "token": token})
    assert r.status_code == 200, r.text
    assert (await client.get("/Patient", headers=bearer(token))).status_code == 401
    caller = bearer(await backend("other"))
    body = (await client.post(INTROSPECT_URL, data={"token": token}, headers=caller)).json()
    assert body == {"active": False}


async def test_other_clients_token_cannot_be_revoked(client, backend, key):
    token = await backend("other")
    r = await client.post(REVOKE_URL, data={**backend_form(assertion(key, "qhio")), "token": token})
    assert r.status_code == 400 and r.json()["error"] == "unauthorized_client"
    assert (await client.get("/Patient", headers=bearer(token))).status_code == 200


async def test_revocation_needs_client_authentication(client, backend):
    token = await backend()
    r = await client.post(REVOKE_URL, data={"token": token, "client_id": "qhio"})
    assert r.status_code == 400 and r.json()["error"] == "invalid_client"
    assert (await client.get("/Patient", headers=bearer(token))).status_code == 200


async def test_unknown_token_revocation_is_200(client, backend, key):
    r = await client.post(
        REVOKE_URL, data={**backend_form(assertion(key, "qhio")), "token": "whatever"}
    )
    assert r.status_code == 200


async def test_revocation_made_by_another_process_is_seen(client, container, backend):
    """The revocation list is shared through the database: a row written elsewhere applies
    after the next poll (poll interval 0 in this test)."""
    from app.auth.revocation import RevocationList

    token = await backend()
    claims = container.validator.authenticate(f"Bearer {token}").claims
    elsewhere = RevocationList(container.db, poll_seconds=0)
    await elsewhere.revoke(claims["jti"], claims["exp"])
    container.revocations._poll = 0  # this process polls on every request
    assert (await client.get("/Patient", headers=bearer(token))).status_code == 401
