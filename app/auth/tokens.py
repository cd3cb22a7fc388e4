"""Bearer access tokens: issue (signed with the server key) and validate (the resource-server half).

Validation follows RFC 9068 and SMART: a JWS with an algorithm from a fixed list and a `kid`
naming one of the server's keys, then explicit checks of `iss`, `aud` (the FHIR base URL),
`exp` (required), `nbf` and `iat`, with a small leeway for clock skew. Validated tokens are
cached until they expire so the signature is checked once per token, not once per request.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from app.auth.keys import SIGNING_ALGORITHMS, SigningKeys
from app.auth.policy import Principal
from app.auth.scopes import policy_from_scopes
from app.errors import Unauthenticated

__all__ = [
    "MAX_TOKEN_BYTES",
    "TokenValidator",
    "bearer_token",
    "decode_access_token",
    "issue_token",
]

MAX_TOKEN_BYTES = 8192
_CACHE_SIZE = 4096


def issue_token(
    keys: SigningKeys,
    *,
    issuer: str,
    audience: str,
    scope: str,
    subject: str = "dxf-bridge-cli",
    client_id: str = "dxf-bridge-cli",
    patient: str | None = None,
    ttl_seconds: int = 3600,
    now: int | None = None,
    extra_claims: dict[str, Any] | None = None,
) -> str:
    issued = int(time.time()) if now is None else now
    claims: dict[str, Any] = {
        "iss": issuer,
        "sub": subject,
        "aud": audience,
        "iat": issued,
        "nbf": issued,
        "exp": issued + ttl_seconds,
        "jti": secrets.token_urlsafe(16),
        "client_id": client_id,
        "scope": scope,
    }
    if patient:
        claims["patient"] = patient
    claims.update(extra_claims or {})
    header = {"alg": SIGNING_ALGORITHMS[0], "kid": keys.kid, "typ": "at+jwt"}
    return jwt.encode(header, claims, keys.current, algorithms=list(SIGNING_ALGORITHMS))


class TokenValidator:
    def __init__(
        self,
        keys: SigningKeys,
        *,
        issuer: str,
        audience: str,
        leeway_seconds: int = 30,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._clock = clock
        self._keys = keys
        self._issuer = issuer
        self._audience = audience
        self._leeway = leeway_seconds
        self._kids = {str(k.kid) for k in keys.keyset.keys}
        self._cache: OrderedDict[str, Principal] = OrderedDict()

    def authenticate(self, authorization: str | None) -> Principal:
        """`Authorization` header value -> Principal, or Unauthenticated (401)."""
        token = bearer_token(authorization)
        now = int(self._clock())
        cached = self._cache.get(token)
        if cached is not None:
            if cached.expires_at + self._leeway >= now:
                self._cache.move_to_end(token)
                return cached
            del self._cache[token]
        principal = decode_access_token(
            token,
            self._keys.keyset,
            algorithms=SIGNING_ALGORITHMS,
            kids=self._kids,
            issuer=self._issuer,
            audience=self._audience,
            leeway=self._leeway,
            now=now,
        )
        self._cache[token] = principal
        if len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)
        return principal


def bearer_token(authorization: str | None) -> str:
    """The token of an `Authorization: Bearer` header, refused (401) when absent or too large."""
    if not authorization:
        raise Unauthenticated("an access token is required (Authorization: Bearer ...)", error="")
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthenticated("the Authorization header must carry a Bearer token")
    if len(token) > MAX_TOKEN_BYTES:
        raise Unauthenticated("the access token is too large")
    return token


def decode_access_token(
    token: str,
    keyset: KeySet,
    *,
    algorithms: tuple[str, ...],
    kids: set[str] | frozenset[str],
    issuer: str,
    audience: str,
    leeway: int,
    now: int,
) -> Principal:
    """Verify a JWT access token against `keyset` with a fixed algorithm list, then check
    `iss`, `aud`, `exp` (required), `nbf`, `iat` and `sub` explicitly."""
    try:
        header = jws.extract_compact(token.encode("ascii")).headers()
        kid = header.get("kid")
        if not isinstance(kid, str) or kid not in kids:
            raise Unauthenticated("the access token is not signed by a key this server knows")
        decoded = jwt.decode(token, keyset, algorithms=list(algorithms))
        registry = jwt.JWTClaimsRegistry(
            now=now,
            leeway=leeway,
            iss={"essential": True, "value": issuer},
            aud={"essential": True, "value": audience},
            exp={"essential": True},
            sub={"essential": True},
        )
        registry.validate(decoded.claims)
    except Unauthenticated:
        raise
    except (JoseError, ValueError, UnicodeError) as exc:
        raise Unauthenticated(f"the access token is not valid ({_reason(exc)})") from None
    claims = decoded.claims
    scope = claims.get("scope", "")
    if not isinstance(scope, str):
        raise Unauthenticated("the access token's scope claim must be a string")
    patient = claims.get("patient")
    if patient is not None and not isinstance(patient, str):
        raise Unauthenticated("the access token's patient claim must be a string")
    scopes = tuple(scope.split())
    return Principal(
        subject=str(claims["sub"]),
        client_id=str(claims.get("client_id", claims["sub"])),
        scopes=scopes,
        policy=policy_from_scopes(scopes, patient),
        expires_at=int(claims["exp"]),
        claims=dict(claims),
    )


def _reason(exc: Exception) -> str:
    if isinstance(exc, JoseError):
        return exc.error or type(exc).__name__
    return "malformed token"
