"""A third-party OAuth client (authlib's httpx client, with its own private_key_jwt signer and
its own key pair) completes the SMART Backend Services flow and reads data."""

from __future__ import annotations

import time
import warnings

import httpx
import pytest
from authlib.oauth2.rfc7523 import PrivateKeyJWT

with warnings.catch_warnings():
    # authlib announces a future move of its httpx integration; the client works as is
    warnings.simplefilter("ignore", DeprecationWarning)
    from authlib.integrations.httpx_client import AsyncOAuth2Client

from app.main import create_app
from tests.conftest import FHIR_BASE, FHIR_JSON
from tests.factories import patient
from tests.oauth import TOKEN_URL, ec_key, register_backend, rsa_key


def _oauth_client(container, key, alg, *, exp_in):
    client = AsyncOAuth2Client(
        client_id="intermediary",
        client_secret=key,
        token_endpoint_auth_method="private_key_jwt",
        scope="system/Patient.rs",
        transport=httpx.ASGITransport(app=create_app(container.settings, container=container)),
    )
    client.register_client_auth_method(
        PrivateKeyJWT(
            TOKEN_URL,
            alg=alg,
            headers={"kid": key.kid, "typ": "JWT"},
            claims={"exp": int(time.time()) + exp_in},
        )
    )
    return client


@pytest.mark.parametrize("make_key, alg", [(rsa_key, "RS384"), (ec_key, "ES384")])
async def test_authlib_backend_services_client(client, container, auth, make_key, alg):
    key = make_key()
    await register_backend(container, "intermediary", key, "system/Patient.rs")
    await client.post("/Patient", json=patient("m-3p"), headers={**auth, **FHIR_JSON})
    async with _oauth_client(container, key, alg, exp_in=240) as oauth:
        token = await oauth.fetch_token(TOKEN_URL, grant_type="client_credentials")
        assert token["token_type"] == "Bearer" and token["scope"] == "system/Patient.rs"
        r = await oauth.get(f"{FHIR_BASE}/Patient")
        assert (
            r.status_code == 200 and r.json()["entry"][0]["resource"]["resourceType"] == "Patient"
        )
        r = await oauth.get(f"{FHIR_BASE}/Observation")
        assert r.status_code == 403  # not granted


async def test_authlib_default_one_hour_assertion_is_refused(container):
    """authlib signs assertions valid for an hour unless told otherwise: too long for SMART."""
    from authlib.integrations.base_client import OAuthError

    key = rsa_key()
    await register_backend(container, "intermediary", key, "system/Patient.rs")
    async with _oauth_client(container, key, "RS384", exp_in=3600) as oauth:
        with pytest.raises(OAuthError) as caught:
            await oauth.fetch_token(TOKEN_URL, grant_type="client_credentials")
    assert caught.value.error == "invalid_client"
