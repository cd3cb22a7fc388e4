"""SMART discovery: /.well-known/smart-configuration (root and under /fhir), without a token,
and the CapabilityStatement's security section naming the same endpoints."""

from __future__ import annotations

import pytest

from tests.conftest import BASE_URL

REQUIRED_CAPABILITIES = {
    "launch-ehr",
    "launch-standalone",
    "client-public",
    "client-confidential-asymmetric",
    "context-ehr-patient",
    "context-standalone-patient",
    "permission-v1",
    "permission-v2",
    "permission-patient",
    "permission-user",
    "sso-openid-connect",
}


@pytest.mark.parametrize(
    "path", ["/.well-known/smart-configuration", "/fhir/.well-known/smart-configuration"]
)
async def test_smart_configuration(client, path):
    r = await client.get(f"{BASE_URL}{path}")
    assert r.status_code == 200, r.text
    assert r.headers["access-control-allow-origin"] == "*"
    doc = r.json()
    assert doc["issuer"] == BASE_URL
    assert doc["jwks_uri"] == f"{BASE_URL}/.well-known/jwks.json"
    for name in ("authorize", "token", "introspect", "revoke"):
        key = {"authorize": "authorization_endpoint", "token": "token_endpoint"}.get(
            name, f"{'introspection' if name == 'introspect' else 'revocation'}_endpoint"
        )
        assert doc[key] == f"{BASE_URL}/auth/{name}"
    assert set(doc["grant_types_supported"]) == {
        "authorization_code",
        "client_credentials",
        "refresh_token",
    }
    assert doc["token_endpoint_auth_methods_supported"] == ["private_key_jwt"]
    assert doc["token_endpoint_auth_signing_alg_values_supported"] == ["RS384", "ES384"]
    assert doc["code_challenge_methods_supported"] == ["S256"]
    assert doc["response_types_supported"] == ["code"]
    assert {"openid", "fhirUser", "launch/patient", "offline_access"} <= set(
        doc["scopes_supported"]
    )
    assert set(doc["capabilities"]) >= REQUIRED_CAPABILITIES


async def test_capability_statement_points_to_the_same_endpoints(client):
    doc = (await client.get(f"{BASE_URL}/.well-known/smart-configuration")).json()
    security = (await client.get("/metadata")).json()["rest"][0]["security"]
    assert security["service"][0]["coding"][0]["code"] == "SMART-on-FHIR"
    ext = next(
        e
        for e in security["extension"]
        if e["url"] == "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
    )
    uris = {e["url"]: e["valueUri"] for e in ext["extension"]}
    assert uris["authorize"] == doc["authorization_endpoint"]
    assert uris["token"] == doc["token_endpoint"]
    assert uris["introspect"] == doc["introspection_endpoint"]
    assert uris["revoke"] == doc["revocation_endpoint"]


async def test_every_advertised_endpoint_answers(client):
    """Nothing in the discovery document is a dead link."""
    doc = (await client.get(f"{BASE_URL}/.well-known/smart-configuration")).json()
    assert (await client.get(doc["jwks_uri"])).status_code == 200
    assert (await client.get(doc["authorization_endpoint"])).status_code == 400  # no client_id
    for key in ("token_endpoint", "revocation_endpoint"):
        r = await client.post(doc[key], data={})
        assert r.status_code == 400 and "error" in r.json()
    assert (await client.post(doc["introspection_endpoint"], data={})).status_code == 401
