"""Trusting an external authorization server (DXF_EXTERNAL_ISSUER + DXF_EXTERNAL_JWKS_URL)."""

from __future__ import annotations

import time

import httpx
import pytest
from joserfc import jwt
from pydantic import ValidationError

from app.container import build_container
from app.main import create_app
from tests.conftest import BASE_URL, FHIR_BASE, FHIR_JSON, bearer, make_settings
from tests.factories import patient
from tests.oauth import public_jwks, rsa_key

EHR_ISSUER = "https://ehr.example.org/oauth"
EHR_JWKS = "https://ehr.example.org/oauth/jwks"


@pytest.fixture(scope="module")
def ehr_key():
    return rsa_key()


@pytest.fixture
async def ehr_client(db, key_file):
    settings = make_settings(
        db.url, key_file, external_issuer=EHR_ISSUER, external_jwks_url=EHR_JWKS
    )
    container = build_container(settings, db=db)
    transport = httpx.ASGITransport(app=create_app(settings, container=container))
    async with httpx.AsyncClient(transport=transport, base_url=FHIR_BASE) as c:
        yield c
    await container.http.aclose()


def _ehr_token(key, **over):
    now = int(time.time())
    claims = {
        "iss": EHR_ISSUER,
        "aud": FHIR_BASE,
        "sub": "ehr-user",
        "client_id": "ehr-app",
        "exp": now + 300,
        "iat": now,
        "scope": "user/*.rs",
    }
    claims.update(over)
    return jwt.encode({"alg": "RS256", "kid": key.kid}, claims, key, algorithms=["RS256"])


async def test_tokens_from_the_trusted_issuer_work(ehr_client, ehr_key, httpx_mock, auth):
    httpx_mock.add_response(url=EHR_JWKS, json=public_jwks(ehr_key))
    await ehr_client.post("/Patient", json=patient("m1"), headers={**auth, **FHIR_JSON})
    r = await ehr_client.get("/Patient", headers=bearer(_ehr_token(ehr_key)))
    assert r.status_code == 200 and len(r.json()["entry"]) == 1
    # our own tokens keep working next to the external ones
    assert (await ehr_client.get("/Patient", headers=auth)).status_code == 200


async def test_forged_external_tokens_are_refused(ehr_client, ehr_key, httpx_mock):
    httpx_mock.add_response(url=EHR_JWKS, json=public_jwks(ehr_key), is_reusable=True)
    other = rsa_key()
    forged = {
        "other_key_same_kid": jwt.encode(
            {"alg": "RS256", "kid": ehr_key.kid},
            {"iss": EHR_ISSUER, "aud": FHIR_BASE, "sub": "x", "exp": int(time.time()) + 60},
            other,
            algorithms=["RS256"],
        ),
        "wrong_audience": _ehr_token(ehr_key, aud="https://elsewhere.example.org/fhir"),
        "expired": _ehr_token(ehr_key, exp=int(time.time()) - 600),
        "claims_our_issuer": _ehr_token(ehr_key, iss=BASE_URL),
    }
    for name, token in forged.items():
        r = await ehr_client.get("/Patient", headers=bearer(token))
        assert r.status_code == 401, name


def test_external_issuer_settings_are_checked(tmp_path):
    with pytest.raises(ValidationError):
        make_settings("sqlite:///x.db", tmp_path / "k", external_issuer=EHR_ISSUER)
    with pytest.raises(ValidationError):
        make_settings(
            "sqlite:///x.db",
            tmp_path / "k",
            external_issuer=EHR_ISSUER,
            external_jwks_url="http://ehr.example.org/jwks",
        )
    with pytest.raises(ValidationError):
        make_settings(
            "sqlite:///x.db", tmp_path / "k", external_issuer=BASE_URL, external_jwks_url=EHR_JWKS
        )
