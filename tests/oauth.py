"""Helpers for authorization-server tests: real client keys, signed client assertions, and
the token, authorize and consent requests an app or a backend service makes."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

from app.auth.assertions import ASSERTION_TYPE
from app.auth.registry import Client
from tests.conftest import BASE_URL, FHIR_BASE

TOKEN_URL = f"{BASE_URL}/auth/token"
AUTHORIZE_URL = f"{BASE_URL}/auth/authorize"
INTROSPECT_URL = f"{BASE_URL}/auth/introspect"
REVOKE_URL = f"{BASE_URL}/auth/revoke"
REDIRECT = "https://app.example.org/callback"


def rsa_key() -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"use": "sig"}, auto_kid=True)


def ec_key() -> ECKey:
    return ECKey.generate_key("P-384", parameters={"use": "sig"}, auto_kid=True)


def public_jwks(*keys: Any) -> dict[str, Any]:
    return {"keys": [k.as_dict(private=False) for k in keys]}


def assertion(
    key: Any,
    client_id: str,
    *,
    alg: str | None = None,
    aud: str = TOKEN_URL,
    exp_in: int = 120,
    jti: str | None = None,
    iss: str | None = None,
    sub: str | None = None,
    header: dict[str, Any] | None = None,
    drop: tuple[str, ...] = (),
) -> str:
    alg = alg or ("ES384" if isinstance(key, ECKey) else "RS384")
    now = int(time.time())
    claims = {
        "iss": iss or client_id,
        "sub": sub or client_id,
        "aud": aud,
        "iat": now,
        "exp": now + exp_in,
        "jti": jti or secrets.token_hex(12),
    }
    for name in drop:
        claims.pop(name)
    hdr = {"alg": alg, "kid": key.kid, "typ": "JWT", **(header or {})}
    return jwt.encode(hdr, claims, key, algorithms=[alg])


def _b64(data: Any) -> str:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def unsigned(header: dict[str, Any], claims: dict[str, Any]) -> str:
    """`alg: none`: no signature at all."""
    return f"{_b64({**header, 'alg': 'none'})}.{_b64(claims)}."


def hs256(header: dict[str, Any], claims: dict[str, Any], secret: bytes) -> str:
    """The key-confusion forgery: HMAC-SHA256 keyed with a public key's PEM bytes."""
    signing_input = f"{_b64({**header, 'alg': 'HS256'})}.{_b64(claims)}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(mac)}"


def flip_signature(token: str) -> str:
    head, payload, sig = token.split(".")
    raw = bytearray(base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4)))
    raw[len(raw) // 2] ^= 0x01
    return f"{head}.{payload}.{_b64(bytes(raw))}"


def backend_form(signed: str, scope: str = "system/*.rs", **extra: str) -> dict[str, str]:
    return {
        "grant_type": "client_credentials",
        "scope": scope,
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": signed,
        **extra,
    }


async def register_backend(container: Any, client_id: str, key: Any, scope: str) -> None:
    await container.clients.add(
        Client(client_id=client_id, scopes=tuple(scope.split()), jwks=public_jwks(key))
    )


async def register_app(
    container: Any, client_id: str = "app", scope: str = "", *, public: bool = True
) -> None:
    scopes = scope or (
        "launch launch/patient openid fhirUser offline_access patient/*.rs user/*.rs"
    )
    await container.clients.add(
        Client(
            client_id=client_id,
            scopes=tuple(scopes.split()),
            redirect_uris=(REDIRECT,),
            public=public,
        )
    )


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def authorize_params(challenge: str, **over: str) -> dict[str, str]:
    params = {
        "response_type": "code",
        "client_id": "app",
        "redirect_uri": REDIRECT,
        "scope": "launch/patient openid fhirUser offline_access patient/*.rs",
        "state": secrets.token_urlsafe(16),
        "aud": FHIR_BASE,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    params.update(over)
    return {k: v for k, v in params.items() if v != ""}


def flow_value(html: str) -> str:
    marker = 'name=flow value="'
    start = html.index(marker) + len(marker)
    return html[start : html.index('"', start)]


def redirect_query(response: httpx.Response) -> dict[str, str]:
    assert response.status_code == 302, response.text
    location = response.headers["location"]
    assert location.startswith(REDIRECT)
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
