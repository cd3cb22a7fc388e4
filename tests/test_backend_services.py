"""SMART Backend Services: client_credentials with private_key_jwt (RS384, ES384), the
assertion checks, RFC 6749 errors and scope mediation."""

from __future__ import annotations

import time

import pytest

from app.auth.registry import Client
from tests.conftest import FHIR_JSON, bearer
from tests.factories import patient
from tests.oauth import (
    TOKEN_URL,
    assertion,
    backend_form,
    ec_key,
    flip_signature,
    hs256,
    public_jwks,
    register_backend,
    rsa_key,
    unsigned,
)


@pytest.fixture(scope="module")
def rsa():
    return rsa_key()


@pytest.fixture(scope="module")
def ec():
    return ec_key()


@pytest.fixture(scope="module")
def intruder():
    return rsa_key()


async def _token(client, form):
    return await client.post(TOKEN_URL, data=form)


async def test_rs384_client_gets_a_token_and_reads(client, container, rsa, auth):
    await register_backend(container, "qhio", rsa, "system/*.rs")
    await client.post("/Patient", json=patient("m1"), headers={**auth, **FHIR_JSON})
    r = await _token(client, backend_form(assertion(rsa, "qhio")))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["token_type"] == "Bearer" and body["scope"] == "system/*.rs"
    assert body["expires_in"] == 300 and "refresh_token" not in body
    assert r.headers["cache-control"] == "no-store" and r.headers["pragma"] == "no-cache"
    read = await client.get("/Patient", headers=bearer(body["access_token"]))
    assert read.status_code == 200 and len(read.json()["entry"]) == 1
    write = await client.post(
        "/Patient", json=patient("m2"), headers={**bearer(body["access_token"]), **FHIR_JSON}
    )
    assert write.status_code == 403  # rs only


async def test_es384_client_by_jwks_url(client, container, ec, httpx_mock):
    url = "https://keys.example.org/jwks.json"
    httpx_mock.add_response(url=url, json=public_jwks(ec))
    await container.clients.add(
        Client(client_id="hg", scopes=("system/DocumentReference.rs",), jwks_url=url)
    )
    form = backend_form(assertion(ec, "hg"), scope="system/DocumentReference.rs")
    r = await _token(client, form)
    assert r.status_code == 200, r.text
    # cached: a second assertion does not fetch the key set again
    r = await _token(client, backend_form(assertion(ec, "hg"), "system/DocumentReference.rs"))
    assert r.status_code == 200
    assert len(httpx_mock.get_requests()) == 1


async def test_granted_is_requested_intersect_registered(client, container, rsa):
    await register_backend(
        container, "narrow", rsa, "system/Patient.rs system/Encounter.cruds patient/*.rs"
    )
    scope = "system/Patient.rs system/Observation.rs system/Encounter.r patient/*.rs"
    r = await _token(client, backend_form(assertion(rsa, "narrow"), scope=scope))
    assert r.status_code == 200
    assert r.json()["scope"] == "system/Patient.rs system/Encounter.r"  # never patient/ here
    r = await _token(client, backend_form(assertion(rsa, "narrow"), scope="system/*.rs"))
    assert r.status_code == 400 and r.json()["error"] == "invalid_scope"
    r = await _token(client, backend_form(assertion(rsa, "narrow"), scope=""))
    assert r.json()["error"] == "invalid_scope"


def _claims(client_id: str = "qhio") -> dict:
    now = int(time.time())
    return {"iss": client_id, "sub": client_id, "aud": TOKEN_URL, "exp": now + 60, "jti": "x1"}


@pytest.mark.parametrize(
    "variant",
    [
        "exp_6_minutes_ahead",
        "wrong_aud",
        "iss_not_sub",
        "unknown_client",
        "disabled_client",
        "unknown_kid",
        "signed_by_other_key",
        "rs256",
        "alg_none",
        "hs256_public_key",
        "flipped_signature",
        "expired",
        "no_jti",
        "no_exp",
        "client_id_mismatch",
        "wrong_assertion_type",
        "jku_not_registered",
        "embedded_jwk",
        "oversized",
    ],
)
async def test_bad_assertions_are_invalid_client(client, container, rsa, intruder, variant):
    await register_backend(container, "qhio", rsa, "system/*.rs")
    await register_backend(container, "off", rsa, "system/*.rs")
    await container.clients.set_disabled("off")
    extra: dict[str, str] = {}
    signed = {
        "exp_6_minutes_ahead": lambda: assertion(rsa, "qhio", exp_in=360),
        "wrong_aud": lambda: assertion(rsa, "qhio", aud="https://other.example.org/token"),
        "iss_not_sub": lambda: assertion(rsa, "qhio", sub="someone-else"),
        "unknown_client": lambda: assertion(rsa, "nobody"),
        "disabled_client": lambda: assertion(rsa, "off"),
        "unknown_kid": lambda: assertion(rsa, "qhio", header={"kid": "not-registered"}),
        "signed_by_other_key": lambda: assertion(intruder, "qhio", header={"kid": rsa.kid}),
        "rs256": lambda: assertion(rsa, "qhio", alg="RS256"),
        "alg_none": lambda: unsigned({"kid": rsa.kid}, _claims()),
        "hs256_public_key": lambda: hs256({"kid": rsa.kid}, _claims(), rsa.as_pem(private=False)),
        "flipped_signature": lambda: flip_signature(assertion(rsa, "qhio")),
        "expired": lambda: assertion(rsa, "qhio", exp_in=-120),
        "no_jti": lambda: assertion(rsa, "qhio", drop=("jti",)),
        "no_exp": lambda: assertion(rsa, "qhio", drop=("exp",)),
        "client_id_mismatch": lambda: assertion(rsa, "qhio"),
        "wrong_assertion_type": lambda: assertion(rsa, "qhio"),
        "jku_not_registered": lambda: assertion(
            rsa, "qhio", header={"jku": "https://evil.example.org/jwks"}
        ),
        "embedded_jwk": lambda: assertion(
            intruder, "qhio", header={"kid": rsa.kid, "jwk": intruder.as_dict(private=False)}
        ),
        "oversized": lambda: assertion(rsa, "qhio") + "A" * 10000,
    }[variant]()
    if variant == "client_id_mismatch":
        extra["client_id"] = "off"
    form = backend_form(signed, **extra)
    if variant == "wrong_assertion_type":
        form["client_assertion_type"] = "urn:ietf:params:oauth:client-assertion-type:saml2-bearer"
    r = await _token(client, form)
    assert r.status_code == 400, (variant, r.text)
    assert r.json()["error"] == "invalid_client", variant
    assert "access_token" not in r.json()


async def test_replayed_assertion_is_refused(client, container, rsa):
    await register_backend(container, "qhio", rsa, "system/*.rs")
    signed = assertion(rsa, "qhio")
    first = await _token(client, backend_form(signed))
    assert first.status_code == 200
    for _ in range(5):
        again = await _token(client, backend_form(signed))
        assert again.status_code == 400 and again.json()["error"] == "invalid_client"
        assert "replay" in again.json()["error_description"]
    # a fresh jti works again
    assert (await _token(client, backend_form(assertion(rsa, "qhio")))).status_code == 200


async def test_two_keys_with_the_same_kid_are_refused(client, container, rsa, intruder):
    twin = intruder.as_dict(private=False)
    twin["kid"] = rsa.kid
    jwks = {"keys": [rsa.as_dict(private=False), twin]}
    await container.clients.add(Client(client_id="twins", scopes=("system/*.rs",), jwks=jwks))
    r = await _token(client, backend_form(assertion(rsa, "twins")))
    assert r.json()["error"] == "invalid_client"


async def test_jku_is_never_fetched(client, container, rsa, httpx_mock):
    """A jku that is not the registered URL fails before any request (pytest-httpx would
    raise on an unexpected request, and fails the test on an unused registered response)."""
    await register_backend(container, "qhio", rsa, "system/*.rs")
    r = await _token(
        client, backend_form(assertion(rsa, "qhio", header={"jku": "https://evil.example/k"}))
    )
    assert r.json()["error"] == "invalid_client"
    assert httpx_mock.get_requests() == []


async def test_rfc6749_errors(client, container, rsa):
    await register_backend(container, "qhio", rsa, "system/*.rs")
    r = await _token(client, {"grant_type": "password", "username": "x", "password": "y"})
    assert r.status_code == 400 and r.json()["error"] == "unsupported_grant_type"
    r = await _token(client, {"scope": "system/*.rs"})
    assert r.json()["error"] == "invalid_request"
    r = await client.post(
        TOKEN_URL,
        content=b"grant_type=client_credentials&grant_type=client_credentials",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert r.json()["error"] == "invalid_request"
    r = await client.post(TOKEN_URL, json=backend_form(assertion(rsa, "qhio")))
    assert r.json()["error"] == "invalid_request"
    # a public client cannot use client_credentials
    r = await _token(client, {"grant_type": "client_credentials", "client_id": "qhio"})
    assert r.json()["error"] == "invalid_client"


async def test_jwks_url_refetched_on_unknown_kid_at_most_once_a_minute(rsa, ec, httpx_mock):
    """A client rotates in a new key: an assertion with the new kid makes the server fetch the
    key set again, but a stream of unknown kids causes at most one fetch per interval."""
    import httpx

    from app.auth.jwks import JwksCache
    from app.auth.oauth_errors import OAuthError

    url = "https://keys.example.org/rotating.json"
    now = [1000.0]
    httpx_mock.add_response(url=url, json=public_jwks(rsa))
    httpx_mock.add_response(url=url, json=public_jwks(rsa, ec))
    client = Client(client_id="rot", scopes=("system/*.rs",), jwks_url=url)
    async with httpx.AsyncClient() as http:
        cache = JwksCache(
            http, cache_seconds=300, refetch_interval_seconds=60, clock=lambda: now[0]
        )
        assert await cache.key_for(client, kid=rsa.kid, alg="RS384", jku=None)
        now[0] += 10  # too soon: the unknown kid does not trigger a fetch
        with pytest.raises(OAuthError):
            await cache.key_for(client, kid=ec.kid, alg="ES384", jku=None)
        assert len(httpx_mock.get_requests()) == 1
        now[0] += 55  # a minute after the first fetch: one refetch, which finds the new key
        assert await cache.key_for(client, kid=ec.kid, alg="ES384", jku=None)
        for _ in range(5):
            with pytest.raises(OAuthError):
                await cache.key_for(client, kid="random-kid", alg="RS384", jku=None)
        assert len(httpx_mock.get_requests()) == 2
        # kty must fit alg: the EC key is not selected for RS384
        with pytest.raises(OAuthError):
            await cache.key_for(client, kid=ec.kid, alg="RS384", jku=None)


async def test_jwks_cache_honours_cache_control(rsa, httpx_mock):
    import httpx

    from app.auth.jwks import JwksCache

    url = "https://keys.example.org/short.json"
    now = [0.0]
    for _ in range(2):
        httpx_mock.add_response(
            url=url, json=public_jwks(rsa), headers={"Cache-Control": "max-age=30"}
        )
    client = Client(client_id="c", scopes=("system/*.rs",), jwks_url=url)
    async with httpx.AsyncClient() as http:
        cache = JwksCache(
            http, cache_seconds=300, refetch_interval_seconds=60, clock=lambda: now[0]
        )
        await cache.key_for(client, kid=rsa.kid, alg="RS384", jku=None)
        now[0] = 20
        await cache.key_for(client, kid=rsa.kid, alg="RS384", jku=None)
        assert len(httpx_mock.get_requests()) == 1
        now[0] = 31  # the client said 30 s: fetch again although our own limit is 300 s
        await cache.key_for(client, kid=rsa.kid, alg="RS384", jku=None)
        assert len(httpx_mock.get_requests()) == 2


async def test_concurrent_replays_of_one_assertion_give_one_token(client, container, rsa):
    import asyncio

    await register_backend(container, "qhio", rsa, "system/*.rs")
    signed = assertion(rsa, "qhio")
    answers = await asyncio.gather(*(_token(client, backend_form(signed)) for _ in range(8)))
    assert sorted(r.status_code for r in answers) == [200] + [400] * 7
