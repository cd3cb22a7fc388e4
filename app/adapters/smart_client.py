"""Access tokens for calling an intermediary: SMART Backend Services, a static bearer, or none.

SMART Backend Services (https://hl7.org/fhir/smart-app-launch/backend-services.html, "Obtain
access token"): a `client_credentials` grant authenticated by a `private_key_jwt` client
assertion (RFC 7523; https://hl7.org/fhir/smart-app-launch/client-confidential-asymmetric.html):
a JWT with `iss` = `sub` = the client id, `aud` = the token URL, `exp` at most five minutes
ahead and a fresh `jti`, signed RS384 with an RSA key or ES384 with a P-384 EC key. The token
is cached until shortly before `expires_in` runs out, and one request is shared by concurrent
callers.

Nothing here logs, and no error text carries the key, the assertion, the token or the token
endpoint's `error_description` (only its `error` code).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import httpx
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, RSAKey

from app.adapters.base import AdapterError, FailureKind

__all__ = [
    "ASSERTION_TYPE",
    "SmartBackendTokens",
    "StaticToken",
    "TokenSource",
    "load_private_key",
    "signing_algorithm",
]

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
_ASSERTION_LIFETIME = 240  # seconds; SMART allows at most 300
_DEFAULT_EXPIRES_IN = 300  # when the answer omits expires_in (SMART: SHOULD NOT exceed 300)
_MAX_TOKEN_RESPONSE = 64 * 1024


@runtime_checkable
class TokenSource(Protocol):
    """Where an adapter gets its bearer token. `invalidate()` drops a cached token that the
    endpoint refused (401), so the next `token()` asks for a new one."""

    async def token(self, *, timeout: float | None = None) -> str: ...

    def invalidate(self) -> None: ...


class StaticToken:
    """A fixed bearer token (tests, or an endpoint that issues long-lived tokens by hand)."""

    def __init__(self, value: str) -> None:
        self._value = value

    def __repr__(self) -> str:
        return "StaticToken(***)"

    async def token(self, *, timeout: float | None = None) -> str:
        return self._value

    def invalidate(self) -> None:
        return None


def load_private_key(path: Path | str) -> RSAKey | ECKey:
    """A private key from a JWK or JWKS (its first private key) or a PEM file. ValueError when
    the file holds no usable private key; the message never quotes the file's content."""
    raw = Path(path).read_bytes()
    try:
        if raw.lstrip().startswith(b"{"):
            data = json.loads(raw)
            if isinstance(data, dict) and "keys" in data:
                data = next(k for k in data["keys"] if isinstance(k, dict) and "d" in k)
            if not isinstance(data, dict) or "d" not in data:
                raise ValueError("no private key")
            key: RSAKey | ECKey = (
                ECKey.import_key(data) if data.get("kty") == "EC" else RSAKey.import_key(data)
            )
        else:
            try:
                key = RSAKey.import_key(raw)
            except (JoseError, ValueError, TypeError):
                key = ECKey.import_key(raw)
    except (JoseError, ValueError, TypeError, StopIteration, json.JSONDecodeError):
        raise ValueError(f"{path}: not a private RSA or EC key (JWK, JWKS or PEM)") from None
    if not key.is_private:
        raise ValueError(f"{path}: the key has no private part")
    signing_algorithm(key)
    return key


def signing_algorithm(key: RSAKey | ECKey) -> str:
    """RS384 for RSA, ES384 for P-384 EC keys: the two SMART names (other curves refused)."""
    if isinstance(key, ECKey):
        if key.curve_name != "P-384":
            raise ValueError("EC keys for ES384 must be on the P-384 curve")
        return "ES384"
    return "RS384"


class SmartBackendTokens:
    """client_credentials + private_key_jwt against a registered token URL, cached."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        token_url: str,
        client_id: str,
        key: RSAKey | ECKey,
        scope: str,
        endpoint: str = "",
        clock: Callable[[], float] = time.time,
        refresh_margin: float = 30.0,
    ) -> None:
        self._http = http
        self._token_url = token_url
        self._client_id = client_id
        self._key = key
        self._alg = signing_algorithm(key)
        self._scope = scope
        self._endpoint = endpoint
        self._clock = clock
        self._margin = refresh_margin
        self._cached: tuple[str, float] | None = None  # (token, refresh after)
        self._lock = asyncio.Lock()
        self.requests = 0  # token requests made (for tests and metrics)

    def __repr__(self) -> str:
        return f"SmartBackendTokens(endpoint={self._endpoint!r})"

    def invalidate(self) -> None:
        self._cached = None

    async def token(self, *, timeout: float | None = None) -> str:
        cached = self._cached
        if cached is not None and self._clock() < cached[1]:
            return cached[0]
        async with self._lock:
            cached = self._cached
            if cached is not None and self._clock() < cached[1]:
                return cached[0]
            value, expires_in = await self._request(timeout)
            margin = min(self._margin, expires_in / 5)
            self._cached = (value, self._clock() + expires_in - margin)
            return value

    def assertion(self) -> str:
        now = int(self._clock())
        header: dict[str, Any] = {"alg": self._alg, "typ": "JWT"}
        if self._key.kid:
            header["kid"] = self._key.kid
        claims = {
            "iss": self._client_id,
            "sub": self._client_id,
            "aud": self._token_url,
            "iat": now,
            "exp": now + _ASSERTION_LIFETIME,
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(header, claims, self._key, algorithms=[self._alg])

    async def _request(self, timeout: float | None) -> tuple[str, float]:
        form = {
            "grant_type": "client_credentials",
            "scope": self._scope,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": self.assertion(),
        }
        self.requests += 1
        try:
            response = await self._http.post(
                self._token_url,
                data=form,
                headers={"Accept": "application/json"},
                timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
            )
        except httpx.TimeoutException:
            raise self._error(FailureKind.TIMEOUT, "the token request timed out") from None
        except httpx.HTTPError as exc:
            raise self._error(
                FailureKind.UNREACHABLE, f"the token endpoint is unreachable ({type(exc).__name__})"
            ) from None
        status = response.status_code
        body = _json_object(response)
        if status in (400, 401, 403):
            code = body.get("error") if body else None
            code = code if isinstance(code, str) and code.isascii() else "refused"
            raise self._error(
                FailureKind.AUTH, f"the token endpoint refused the client ({code[:40]})", status
            )
        if status != 200:
            raise self._error(
                FailureKind.HTTP, "the token endpoint answered an error", status, retryable=True
            )
        value = body.get("access_token") if body else None
        if not isinstance(value, str) or not value:
            raise self._error(FailureKind.AUTH, "the token response has no access_token", status)
        token_type = str(body.get("token_type", "")).lower() if body else ""
        if token_type != "bearer":
            raise self._error(FailureKind.AUTH, "the token response is not a bearer token", status)
        expires_in = body.get("expires_in") if body else None
        if isinstance(expires_in, bool) or not isinstance(expires_in, int | float):
            expires_in = _DEFAULT_EXPIRES_IN
        return value, float(max(1, expires_in))

    def _error(
        self, kind: FailureKind, detail: str, status: int | None = None, **kw: Any
    ) -> AdapterError:
        return AdapterError(kind, detail, endpoint=self._endpoint, status=status, **kw)


def _json_object(response: httpx.Response) -> dict[str, Any] | None:
    if len(response.content) > _MAX_TOKEN_RESPONSE:
        return None
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None
