"""SMART App Launch: authorization_code with PKCE S256, standalone and EHR launch, login and
consent pages, patient picker, id_token, rotated refresh tokens."""

from __future__ import annotations

import pytest
from joserfc import jwt

from app.auth.launch import issue_launch
from tests.conftest import BASE_URL, FHIR_BASE, FHIR_JSON, bearer
from tests.factories import encounter, observation, patient
from tests.oauth import (
    AUTHORIZE_URL,
    REDIRECT,
    TOKEN_URL,
    authorize_params,
    flow_value,
    pkce,
    redirect_query,
    register_app,
)

PASSWORD = "correct horse battery staple"


@pytest.fixture
async def world(client, container, auth):
    await register_app(container)
    await container.users.add("dr", PASSWORD, "Practitioner/p1")
    ids = {}
    for who in ("me", "other"):
        pid = (
            await client.post("/Patient", json=patient(f"mrn-{who}"), headers={**auth, **FHIR_JSON})
        ).json()["id"]
        await client.post("/Observation", json=observation(pid), headers={**auth, **FHIR_JSON})
        ids[who] = pid
    return ids


async def _login(client, params):
    r = await client.get(AUTHORIZE_URL, params=params)
    assert r.status_code == 200, r.text
    assert "no-store" in r.headers["cache-control"] and r.headers["x-frame-options"] == "DENY"
    r = await client.post(
        f"{AUTHORIZE_URL}/login",
        data={"flow": flow_value(r.text), "username": "dr", "password": PASSWORD},
    )
    assert r.status_code == 200, r.text
    return r


async def _code(client, params, patient_id=None):
    consent = await _login(client, params)
    form = {"flow": flow_value(consent.text), "decision": "approve"}
    if patient_id:
        form["patient"] = patient_id
    return redirect_query(await client.post(f"{AUTHORIZE_URL}/consent", data=form))


async def _exchange(client, code, verifier, **over):
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT,
        "code_verifier": verifier,
        "client_id": "app",
    }
    form.update(over)
    return await client.post(TOKEN_URL, data=form)


async def test_standalone_launch_with_patient_picker(client, container, world):
    verifier, challenge = pkce()
    params = authorize_params(challenge, nonce="n-123")
    consent = await _login(client, params)
    assert world["me"] in consent.text and "Choose the patient" in consent.text
    got = await _code(client, params, world["me"])
    assert got["state"] == params["state"]
    r = await _exchange(client, got["code"], verifier)
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    body = r.json()
    assert body["patient"] == world["me"] and body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600 and body["refresh_token"]
    assert set(body["scope"].split()) == set(params["scope"].split())
    # id_token: signed by the server key, for this client, with fhirUser and the nonce
    id_token = jwt.decode(body["id_token"], container.keys.keyset, algorithms=["RS256"])
    assert id_token.claims["aud"] == "app" and id_token.claims["iss"] == BASE_URL
    assert id_token.claims["fhirUser"] == f"{FHIR_BASE}/Practitioner/p1"
    assert id_token.claims["nonce"] == "n-123" and id_token.claims["sub"] == "dr"
    token = bearer(body["access_token"])
    assert (await client.get(f"/Patient/{world['me']}", headers=token)).status_code == 200
    assert (await client.get(f"/Patient/{world['other']}", headers=token)).status_code == 404
    obs = (await client.get("/Observation", headers=token)).json()
    assert {e["resource"]["subject"]["reference"] for e in obs["entry"]} == {
        f"Patient/{world['me']}"
    }
    # the id_token is not an access token
    assert (await client.get("/Patient", headers=bearer(body["id_token"]))).status_code == 401


async def test_ehr_launch_carries_patient_and_encounter(client, container, world, auth):
    enc = (
        await client.post(
            "/Encounter", json=encounter(world["other"]), headers={**auth, **FHIR_JSON}
        )
    ).json()["id"]
    launch = issue_launch(container.keys, container.settings, patient=world["other"], encounter=enc)
    verifier, challenge = pkce()
    params = authorize_params(challenge, launch=launch, scope="launch openid patient/*.rs")
    consent = await _login(client, params)
    assert f"Patient/{world['other']}" in consent.text and "Choose the patient" not in consent.text
    got = await _code(client, params)
    body = (await _exchange(client, got["code"], verifier)).json()
    assert body["patient"] == world["other"] and body["encounter"] == enc
    assert "refresh_token" not in body  # no offline_access requested


@pytest.mark.parametrize(
    "over, error",
    [
        ({"code_challenge_method": "plain"}, "invalid_request"),
        ({"code_challenge_method": ""}, "invalid_request"),
        ({"code_challenge": ""}, "invalid_request"),
        ({"aud": "https://other-fhir.example.org/fhir"}, "invalid_request"),
        ({"aud": ""}, "invalid_request"),
        ({"launch": "INVALID_LAUNCH_PARAM"}, "invalid_request"),
        ({"response_type": "token"}, "unsupported_response_type"),
        ({"scope": "system/*.cruds"}, "invalid_scope"),
    ],
)
async def test_bad_authorization_requests_get_no_code(client, world, over, error):
    _, challenge = pkce()
    params = authorize_params(challenge, **over)
    got = redirect_query(await client.get(AUTHORIZE_URL, params=params))
    assert got["error"] == error and "code" not in got
    assert got["state"] == params["state"]


async def test_expired_or_foreign_launch_is_refused(client, container, world):
    _, challenge = pkce()
    stale = issue_launch(container.keys, container.settings, patient=world["me"], now=1_000_000)
    got = redirect_query(
        await client.get(AUTHORIZE_URL, params=authorize_params(challenge, launch=stale))
    )
    assert got["error"] == "invalid_request"


async def test_unregistered_redirect_uri_is_never_redirected_to(client, world):
    _, challenge = pkce()
    params = authorize_params(challenge, redirect_uri="https://evil.example.org/cb")
    r = await client.get(AUTHORIZE_URL, params=params)
    assert r.status_code == 400 and "location" not in r.headers
    r = await client.get(AUTHORIZE_URL, params=authorize_params(challenge, client_id="nobody"))
    assert r.status_code == 400 and "location" not in r.headers


async def test_wrong_password_and_forged_flow(client, world):
    _, challenge = pkce()
    r = await client.get(AUTHORIZE_URL, params=authorize_params(challenge))
    flow = flow_value(r.text)
    bad = await client.post(
        f"{AUTHORIZE_URL}/login",
        data={"flow": flow, "username": "dr", "password": "wrong-password"},
    )
    assert bad.status_code == 401 and "wrong username or password" in bad.text
    unknown = await client.post(
        f"{AUTHORIZE_URL}/login", data={"flow": flow, "username": "nobody", "password": PASSWORD}
    )
    assert unknown.status_code == 401
    # the login-step flow token cannot be used to consent (no signed-in user in it)
    r = await client.post(f"{AUTHORIZE_URL}/consent", data={"flow": flow, "decision": "approve"})
    assert r.status_code == 400 and "location" not in r.headers
    tampered = flow[:-6] + ("AAAAAA" if not flow.endswith("AAAAAA") else "BBBBBB")
    r = await client.post(
        f"{AUTHORIZE_URL}/login", data={"flow": tampered, "username": "dr", "password": PASSWORD}
    )
    assert r.status_code == 400


async def test_deny_redirects_access_denied(client, world):
    _, challenge = pkce()
    params = authorize_params(challenge)
    consent = await _login(client, params)
    r = await client.post(
        f"{AUTHORIZE_URL}/consent", data={"flow": flow_value(consent.text), "decision": "deny"}
    )
    assert redirect_query(r)["error"] == "access_denied"


async def test_picker_requires_an_existing_patient(client, world):
    _, challenge = pkce()
    consent = await _login(client, authorize_params(challenge))
    r = await client.post(
        f"{AUTHORIZE_URL}/consent",
        data={"flow": flow_value(consent.text), "decision": "approve", "patient_id": "no-such"},
    )
    assert r.status_code == 400 and "location" not in r.headers


@pytest.mark.parametrize(
    "over",
    [
        {"code_verifier": ""},
        {"code_verifier": "x" * 43},
        {"code_verifier": "CHALLENGE"},  # the challenge itself, as a plain verifier
        {"redirect_uri": "https://app.example.org/other"},
        {"client_id": "other-app"},
    ],
)
async def test_code_exchange_checks(client, container, world, over):
    await register_app(container, "other-app")
    verifier, challenge = pkce()
    got = await _code(client, authorize_params(challenge), world["me"])
    if over.get("code_verifier") == "CHALLENGE":
        over = {"code_verifier": challenge}
    r = await _exchange(client, got["code"], verifier, **over)
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant", r.text
    assert "access_token" not in r.json()


async def test_code_is_single_use_and_replay_revokes_its_tokens(client, world):
    verifier, challenge = pkce()
    got = await _code(client, authorize_params(challenge), world["me"])
    first = (await _exchange(client, got["code"], verifier)).json()
    replay = await _exchange(client, got["code"], verifier)
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    assert (
        await client.get(f"/Patient/{world['me']}", headers=bearer(first["access_token"]))
    ).status_code == 401
    r = await client.post(
        TOKEN_URL,
        data={
            "grant_type": "refresh_token",
            "refresh_token": first["refresh_token"],
            "client_id": "app",
        },
    )
    assert r.json()["error"] == "invalid_grant"


async def test_bad_code_is_invalid_grant(client, world):
    r = await _exchange(client, "BAD_CODE", "v" * 43)
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"


async def test_refresh_tokens_rotate_and_reuse_revokes_the_grant(client, world):
    verifier, challenge = pkce()
    got = await _code(client, authorize_params(challenge), world["me"])
    tokens = (await _exchange(client, got["code"], verifier)).json()

    def refresh(token, **extra):
        data = {"grant_type": "refresh_token", "refresh_token": token, "client_id": "app", **extra}
        return client.post(TOKEN_URL, data=data)

    second = await refresh(tokens["refresh_token"])
    assert second.status_code == 200, second.text
    second = second.json()
    assert second["refresh_token"] != tokens["refresh_token"] and second["patient"] == world["me"]
    narrowed = await refresh(second["refresh_token"], scope="patient/*.rs launch/patient")
    assert narrowed.status_code == 200 and narrowed.json()["scope"] == "patient/*.rs launch/patient"
    third = narrowed.json()
    wider = await refresh(third["refresh_token"], scope="patient/*.cruds")
    assert wider.json()["error"] == "invalid_scope"
    # the wider request failed before rotation: third's refresh token still works once
    fourth = await refresh(third["refresh_token"])
    assert fourth.status_code == 200
    # reusing a rotated token revokes the whole grant, access tokens included
    reuse = await refresh(tokens["refresh_token"])
    assert reuse.status_code == 400 and reuse.json()["error"] == "invalid_grant"
    assert (await refresh(fourth.json()["refresh_token"])).json()["error"] == "invalid_grant"
    read = await client.get(
        f"/Patient/{world['me']}", headers=bearer(fourth.json()["access_token"])
    )
    assert read.status_code == 401
    assert (await refresh("random-refresh-token")).json()["error"] == "invalid_grant"


async def test_refresh_token_is_bound_to_its_client(client, container, world):
    await register_app(container, "other-app")
    verifier, challenge = pkce()
    got = await _code(client, authorize_params(challenge), world["me"])
    tokens = (await _exchange(client, got["code"], verifier)).json()
    r = await client.post(
        TOKEN_URL,
        data={
            "grant_type": "refresh_token",
            "refresh_token": tokens["refresh_token"],
            "client_id": "other-app",
        },
    )
    assert r.json()["error"] == "invalid_grant"


async def test_patient_user_gets_own_record_as_context(client, container, world):
    await container.users.add("pat", PASSWORD, f"Patient/{world['me']}")
    verifier, challenge = pkce()
    params = authorize_params(challenge)
    r = await client.get(AUTHORIZE_URL, params=params)
    consent = await client.post(
        f"{AUTHORIZE_URL}/login",
        data={"flow": flow_value(r.text), "username": "pat", "password": PASSWORD},
    )
    assert "Choose the patient" not in consent.text
    got = redirect_query(
        await client.post(
            f"{AUTHORIZE_URL}/consent",
            data={
                "flow": flow_value(consent.text),
                "decision": "approve",
                "patient": world["other"],
            },
        )
    )
    body = (await _exchange(client, got["code"], verifier)).json()
    assert body["patient"] == world["me"]


async def test_authorize_accepts_post(client, world):
    _, challenge = pkce()
    r = await client.post(AUTHORIZE_URL, data=authorize_params(challenge))
    assert r.status_code == 200 and "Sign in" in r.text


async def test_app_launch_never_grants_system_scopes(client, container, world):
    await register_app(container, "greedy", "launch/patient patient/*.rs system/*.cruds")
    verifier, challenge = pkce()
    params = authorize_params(
        challenge, client_id="greedy", scope="launch/patient patient/*.rs system/*.cruds"
    )
    got = await _code(client, params, world["me"])
    body = (await _exchange(client, got["code"], verifier, client_id="greedy")).json()
    assert body["scope"] == "launch/patient patient/*.rs"
    only_system = authorize_params(challenge, client_id="greedy", scope="system/*.cruds")
    assert redirect_query(await client.get(AUTHORIZE_URL, params=only_system))["error"] == (
        "invalid_scope"
    )


async def test_stale_codes_and_refresh_tokens_are_purged(container, db):
    from sqlalchemy import func, select

    from app.auth.grants import Grant
    from app.store.tables import oauth_code

    now = [1_000_000.0]
    container.tokens._clock = lambda: now[0]
    await container.tokens.create_code("app", Grant(scopes=("openid",)))
    now[0] += 2 * 3600
    await container.tokens.create_code("app", Grant(scopes=("openid",)))
    async with db.read() as conn:
        assert await conn.scalar(select(func.count()).select_from(oauth_code)) == 1


async def test_concurrent_exchanges_of_one_code_give_one_token(client, world):
    import asyncio

    verifier, challenge = pkce()
    got = await _code(client, authorize_params(challenge), world["me"])
    answers = await asyncio.gather(*(_exchange(client, got["code"], verifier) for _ in range(5)))
    assert sorted(r.status_code for r in answers) == [200, 400, 400, 400, 400]


async def test_confidential_app_authenticates_with_an_assertion(client, container, world):
    from app.auth.registry import Client
    from tests.oauth import ASSERTION_TYPE, assertion, public_jwks, rsa_key

    key = rsa_key()
    await container.clients.add(
        Client(
            client_id="conf-app",
            scopes=("launch/patient", "patient/*.rs"),
            jwks=public_jwks(key),
            redirect_uris=(REDIRECT,),
        )
    )
    verifier, challenge = pkce()
    params = authorize_params(challenge, client_id="conf-app", scope="launch/patient patient/*.rs")
    got = await _code(client, params, world["me"])
    # a client_id alone does not authenticate a confidential client
    r = await _exchange(client, got["code"], verifier, client_id="conf-app")
    assert r.json()["error"] == "invalid_client"
    signed = {
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": assertion(key, "conf-app"),
    }
    r = await _exchange(client, got["code"], verifier, client_id="conf-app", **signed)
    assert r.status_code == 200, r.text
    assert r.json()["patient"] == world["me"]


async def test_launch_values_and_page_state_are_not_interchangeable(client, container, world):
    """Both are signed by the server for the authorize endpoint; their typ keeps them apart."""
    launch = issue_launch(container.keys, container.settings, patient=world["me"])
    r = await client.post(
        f"{AUTHORIZE_URL}/login", data={"flow": launch, "username": "dr", "password": PASSWORD}
    )
    assert r.status_code == 400 and "location" not in r.headers
    _, challenge = pkce()
    page = await client.get(AUTHORIZE_URL, params=authorize_params(challenge))
    as_launch = authorize_params(challenge, launch=flow_value(page.text))
    assert redirect_query(await client.get(AUTHORIZE_URL, params=as_launch))["error"] == (
        "invalid_request"
    )


async def test_repeated_wrong_passwords_lock_the_username(client, world):
    _, challenge = pkce()
    page = await client.get(AUTHORIZE_URL, params=authorize_params(challenge))
    flow = flow_value(page.text)

    def attempt(password):
        data = {"flow": flow, "username": "dr", "password": password}
        return client.post(f"{AUTHORIZE_URL}/login", data=data)

    for _ in range(5):
        assert (await attempt("wrong-password")).status_code == 401
    locked = await attempt(PASSWORD)  # even the right password, while locked
    assert locked.status_code == 429 and "Allow access?" not in locked.text


def test_login_throttle_window():
    from app.auth.throttle import LoginThrottle

    now = [0.0]
    throttle = LoginThrottle(max_failures=2, window_seconds=60, clock=lambda: now[0])
    throttle.failed("Dr")
    throttle.failed("dr")
    assert throttle.blocked("DR") and not throttle.blocked("someone")
    now[0] = 61
    assert not throttle.blocked("dr")
    throttle.failed("dr")
    throttle.succeeded("dr")
    throttle.failed("dr")
    assert not throttle.blocked("dr")
