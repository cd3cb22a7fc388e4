"""The kit's SMART checks: discovery fields (SMART App Launch 2.x) and a Backend Services token
request with a private_key_jwt assertion, against a small authorization server written here
that verifies the assertion the way the specification says."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
import orjson
import pytest
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, RSAKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from conformance import Outcome, Report, run_kit
from conformance.smart import ASSERTION_TYPE, client_assertion, load_private_key

BASE = "http://smart.test/fhir"
TOKEN_URL = "http://smart.test/auth/token"
CLIENT_ID = "kit-client"


def good_config() -> dict[str, Any]:
    return {
        "issuer": "http://smart.test",
        "jwks_uri": "http://smart.test/jwks",
        "token_endpoint": TOKEN_URL,
        "grant_types_supported": ["client_credentials"],
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384"],
        "scopes_supported": ["system/*.rs"],
        "capabilities": ["client-confidential-asymmetric", "permission-v2"],
    }


class _SmartServer:
    def __init__(self, client_key: RSAKey, config: dict[str, Any]) -> None:
        self.client_key = client_key
        self.config = config
        self.issued: set[str] = set()
        self.app = Starlette(
            routes=[
                Route("/fhir/metadata", self.metadata),
                Route("/fhir/.well-known/smart-configuration", self.discovery),
                Route("/auth/token", self.token, methods=["POST"]),
                Route("/fhir/Patient", self.patients),
            ]
        )

    async def metadata(self, request: Request) -> Response:
        return _fhir(
            {
                "resourceType": "CapabilityStatement",
                "fhirVersion": "4.0.1",
                "format": ["json"],
                "rest": [
                    {
                        "mode": "server",
                        "resource": [{"type": "Patient", "interaction": [{"code": "search-type"}]}],
                    }
                ],
            }
        )

    async def discovery(self, request: Request) -> Response:
        return JSONResponse(self.config)

    async def token(self, request: Request) -> Response:
        form = dict(parse_qsl((await request.body()).decode()))
        if form.get("grant_type") != "client_credentials" or (
            form.get("client_assertion_type") != ASSERTION_TYPE
        ):
            return JSONResponse({"error": "invalid_request"}, status_code=400)
        try:
            decoded = jwt.decode(str(form["client_assertion"]), self.client_key, ["RS384"])
        except (JoseError, ValueError):
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        claims = decoded.claims
        now = time.time()
        if not (
            claims.get("iss") == claims.get("sub") == CLIENT_ID
            and claims.get("aud") == TOKEN_URL
            and now < claims.get("exp", 0) <= now + 300
            and claims.get("jti")
        ):
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        token = uuid.uuid4().hex
        self.issued.add(token)
        return JSONResponse(
            {
                "access_token": token,
                "token_type": "bearer",
                "expires_in": 300,
                "scope": form.get("scope"),
            }
        )

    async def patients(self, request: Request) -> Response:
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        if token not in self.issued:
            return _fhir({"resourceType": "OperationOutcome", "issue": []}, 401)
        return _fhir({"resourceType": "Bundle", "type": "searchset", "entry": []})


def _fhir(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status, media_type="application/fhir+json")


@pytest.fixture(scope="module")
def client_key() -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": "kit-key"}, private=True)


async def _run(server: _SmartServer, key: RSAKey | None) -> Report:
    return await run_kit(
        BASE,
        client_id=CLIENT_ID if key else None,
        key=key,
        scope="system/*.rs",
        transport=httpx.ASGITransport(app=server.app),
        only=["smart", "crud"],
    )


def _by_id(report: Report) -> dict[str, Any]:
    return {r.id: r for r in report.results}


async def test_discovery_and_a_private_key_jwt_token_request_pass(
    client_key: RSAKey, tmp_path: Path
) -> None:
    key_file = tmp_path / "client.jwk"
    key_file.write_bytes(orjson.dumps(client_key.as_dict(private=True)))
    server = _SmartServer(client_key, good_config())
    results = _by_id(await _run(server, load_private_key(key_file)))
    assert results["smart.discovery"].outcome is Outcome.PASS
    assert results["smart.token"].outcome is Outcome.PASS
    # the token the kit obtained is the one it used
    assert results["crud.Patient.search"].outcome is Outcome.PASS
    assert "<signed JWT>" in results["smart.token"].evidence[0].request_body


async def test_missing_and_contradictory_discovery_fields_fail(client_key: RSAKey) -> None:
    config = {
        **good_config(),
        "capabilities": ["launch-ehr", "client-confidential-asymmetric"],
        "code_challenge_methods_supported": ["S256", "plain"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic"],
    }
    del config["grant_types_supported"]
    results = _by_id(await _run(_SmartServer(client_key, config), None))
    discovery = results["smart.discovery"]
    assert discovery.outcome is Outcome.FAIL
    for problem in (
        "grant_types_supported",
        "offers plain",
        "authorization_endpoint",
        "private_key_jwt",
    ):
        assert problem in discovery.reason
    assert results["smart.token"].outcome is Outcome.SKIP


async def test_a_refused_assertion_is_a_failed_token_check(client_key: RSAKey) -> None:
    stranger = RSAKey.generate_key(2048, private=True)
    results = _by_id(await _run(_SmartServer(client_key, good_config()), stranger))
    assert results["smart.token"].outcome is Outcome.FAIL
    assert "401" in results["smart.token"].reason


async def test_discovery_only_at_the_server_root_is_a_failure_that_says_so(
    client_key: RSAKey,
) -> None:
    server = _SmartServer(client_key, good_config())
    server.app.router.routes = [
        Route("/.well-known/smart-configuration", server.discovery)
        if getattr(r, "path", "") == "/fhir/.well-known/smart-configuration"
        else r
        for r in server.app.router.routes
    ]
    results = _by_id(await _run(server, client_key))
    assert results["smart.discovery"].outcome is Outcome.FAIL
    assert "server root" in results["smart.discovery"].reason
    assert results["smart.token"].outcome is Outcome.PASS  # the endpoint it names still works


def test_an_ec_pem_key_signs_es384_with_the_backend_services_claims(tmp_path: Path) -> None:
    key = ECKey.generate_key("P-384", private=True)
    pem = tmp_path / "client.pem"
    pem.write_bytes(key.as_pem(private=True))
    loaded = load_private_key(pem)
    assertion = client_assertion(loaded, client_id=CLIENT_ID, token_endpoint=TOKEN_URL)
    decoded = jwt.decode(assertion, key, ["ES384"])
    assert decoded.header["alg"] == "ES384"
    claims = decoded.claims
    assert claims["iss"] == claims["sub"] == CLIENT_ID
    assert claims["aud"] == TOKEN_URL
    assert 0 < claims["exp"] - time.time() <= 300
    assert claims["jti"]
