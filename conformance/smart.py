"""SMART Backend Services token request: client_credentials with a private_key_jwt assertion.

https://hl7.org/fhir/smart-app-launch/backend-services.html#obtain-access-token and
https://hl7.org/fhir/smart-app-launch/client-confidential-asymmetric.html: the client signs a
short-lived JWT (iss = sub = client_id, aud = the token endpoint, exp at most five minutes
ahead, a fresh jti) with RS384 or ES384 and posts it as `client_assertion`.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, RSAKey

from conformance.model import Evidence

__all__ = ["client_assertion", "load_private_key", "request_token"]

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def load_private_key(path: Path) -> RSAKey | ECKey:
    """A private key from a JWK (JSON) or PEM file."""
    raw = path.read_bytes()
    if raw.lstrip().startswith(b"{"):
        import json

        data = json.loads(raw)
        if "keys" in data:
            data = next(k for k in data["keys"] if "d" in k)
        return ECKey.import_key(data) if data.get("kty") == "EC" else RSAKey.import_key(data)
    try:
        return RSAKey.import_key(raw)
    except (JoseError, ValueError, TypeError):  # not an RSA key: try EC, which raises its own
        return ECKey.import_key(raw)


def client_assertion(key: RSAKey | ECKey, *, client_id: str, token_endpoint: str) -> str:
    now = int(time.time())
    alg = "ES384" if isinstance(key, ECKey) else "RS384"
    header: dict[str, Any] = {"alg": alg, "typ": "JWT"}
    if key.kid:
        header["kid"] = key.kid
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": token_endpoint,
        "exp": now + 300,
        "iat": now,
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(header, claims, key, algorithms=[alg])


async def request_token(
    http: httpx.AsyncClient,
    *,
    token_endpoint: str,
    client_id: str,
    key: RSAKey | ECKey,
    scope: str,
) -> tuple[dict[str, Any] | None, Evidence]:
    form = {
        "grant_type": "client_credentials",
        "scope": scope,
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": client_assertion(
            key, client_id=client_id, token_endpoint=token_endpoint
        ),
    }
    response = await http.post(token_endpoint, data=form, headers={"Accept": "application/json"})
    shown = {**form, "client_assertion": "<signed JWT>"}
    evidence = Evidence(
        method="POST",
        url=token_endpoint,
        status=response.status_code,
        request_headers={"Content-Type": "application/x-www-form-urlencoded"},
        request_body="&".join(f"{k}={v}" for k, v in shown.items()),
        response_headers={"content-type": response.headers.get("content-type", "")},
        response_excerpt=Evidence.excerpt(
            response.text.replace(_token_value(response), "***") if response.content else ""
        ),
    )
    try:
        body = response.json()
    except ValueError:
        body = None
    return (body if isinstance(body, dict) else None), evidence


def _token_value(response: httpx.Response) -> str:
    try:
        value = response.json().get("access_token")
    except (ValueError, AttributeError):
        return "\0"
    return value if isinstance(value, str) and value else "\0"
