"""CORS: discovery and metadata for any origin; token endpoint and FHIR API only for the origins
of registered clients."""

from __future__ import annotations

from tests.conftest import BASE_URL
from tests.oauth import TOKEN_URL, register_app

APP = "https://app.example.org"  # the origin of tests.oauth.REDIRECT
EVIL = "https://evil.example.org"


def _preflight(origin, method="POST"):
    return {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": "authorization, content-type",
    }


async def test_registered_origin_may_call_token_endpoint_and_api(client, container, auth):
    await register_app(container)
    r = await client.options(TOKEN_URL, headers=_preflight(APP))
    assert r.status_code == 204 and r.headers["access-control-allow-origin"] == APP
    assert "Authorization" in r.headers["access-control-allow-headers"]
    r = await client.post(TOKEN_URL, data={"grant_type": "x"}, headers={"Origin": APP})
    assert r.headers["access-control-allow-origin"] == APP and r.headers["vary"] == "Origin"
    r = await client.options("/Patient", headers=_preflight(APP, "GET"))
    assert r.status_code == 204
    r = await client.get("/Patient", headers={**auth, "Origin": APP})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == APP
    assert "Location" in r.headers["access-control-expose-headers"]


async def test_other_origins_get_no_cors(client, container, auth):
    await register_app(container)
    r = await client.options(TOKEN_URL, headers=_preflight(EVIL))
    assert r.status_code == 403 and "access-control-allow-origin" not in r.headers
    r = await client.get("/Patient", headers={**auth, "Origin": EVIL})
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers


async def test_discovery_and_metadata_are_open_to_any_origin(client):
    for url in (f"{BASE_URL}/.well-known/smart-configuration", "/metadata"):
        r = await client.get(url, headers={"Origin": EVIL})
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "*"
        assert r.headers.get_list("access-control-allow-origin") == ["*"]
    r = await client.options("/metadata", headers=_preflight(EVIL, "GET"))
    assert r.status_code == 204 and r.headers["access-control-allow-origin"] == "*"
