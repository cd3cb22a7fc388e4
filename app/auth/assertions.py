"""Client authentication with `private_key_jwt` (RFC 7523 section 3, SMART Backend Services and
client-confidential-asymmetric: https://hl7.org/fhir/smart-app-launch/backend-services.html).

A confidential client proves who it is with a JWT it signs (RS384 or ES384) and posts as
`client_assertion`. Checked, in order, every failure an `invalid_client`:

- `client_assertion_type` is `urn:ietf:params:oauth:client-assertion-type:jwt-bearer`;
- the assertion is at most 8 KB, a compact JWS with `alg` RS384 or ES384 and a `kid`;
- `iss` names a registered, enabled, confidential client (and equals `client_id` if sent);
- the key is the one registered key with that `kid` (see app.auth.jwks), and the signature holds;
- `iss` = `sub` = client id, `aud` is the token endpoint, `exp` is present, not past and at most
  five minutes ahead, `jti` is present;
- the `jti` was never used by this client before: each is stored until its `exp` (replays fail).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from joserfc import jws, jwt
from joserfc.errors import JoseError
from sqlalchemy import delete, insert
from sqlalchemy.exc import IntegrityError

from app.auth.jwks import ALGORITHM_KEY_TYPES, JwksCache
from app.auth.oauth_errors import OAuthError
from app.auth.registry import Client, ClientRegistry
from app.db import Database
from app.store.tables import oauth_assertion_jti

__all__ = ["ASSERTION_TYPE", "AssertionVerifier", "MAX_ASSERTION_LIFETIME"]

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
MAX_ASSERTION_LIFETIME = 300
_MAX_ASSERTION_BYTES = 8192
_PURGE_EVERY = 60.0


def _fail(description: str) -> OAuthError:
    return OAuthError("invalid_client", description)


class AssertionVerifier:
    def __init__(
        self,
        *,
        db: Database,
        clients: ClientRegistry,
        jwks: JwksCache,
        token_endpoint: str,
        leeway_seconds: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._db = db
        self._clients = clients
        self._jwks = jwks
        self._audience = token_endpoint
        self._leeway = leeway_seconds
        self._clock = clock
        self._last_purge = 0.0

    async def verify(self, form: dict[str, str]) -> Client:
        """The authenticated confidential client, or OAuthError(invalid_client)."""
        if form.get("client_assertion_type") != ASSERTION_TYPE:
            raise _fail(f"client_assertion_type must be {ASSERTION_TYPE}")
        assertion = form.get("client_assertion", "")
        if not assertion or len(assertion) > _MAX_ASSERTION_BYTES:
            raise _fail("client_assertion is missing or too large")
        try:
            compact = jws.extract_compact(assertion.encode("ascii"))
            header = compact.headers()
            claims_peek = orjson.loads(compact.payload)  # unverified: only to find the client
        except (JoseError, ValueError, UnicodeError, orjson.JSONDecodeError):
            raise _fail("client_assertion is not a compact JWS") from None
        alg, kid, jku = header.get("alg"), header.get("kid"), header.get("jku")
        if alg not in ALGORITHM_KEY_TYPES:
            raise _fail("client_assertion must be signed with RS384 or ES384")
        if not isinstance(kid, str) or not kid:
            raise _fail("client_assertion needs a kid header")
        if jku is not None and not isinstance(jku, str):
            raise _fail("client_assertion jku must be a string")
        if not isinstance(claims_peek, dict) or not isinstance(claims_peek.get("iss"), str):
            raise _fail("client_assertion needs an iss claim")
        client_id = claims_peek["iss"]
        if form.get("client_id") not in (None, client_id):
            raise _fail("client_id does not match the assertion's iss")
        client = await self._clients.get(client_id)
        if client is None or client.disabled or client.public:
            raise _fail("unknown, disabled or public client")
        key = await self._jwks.key_for(client, kid=kid, alg=alg, jku=jku)
        now = int(self._clock())
        claims = self._check(assertion, key, alg, client_id, now)
        await self._remember(client_id, str(claims["jti"]), int(claims["exp"]))
        return client

    def _check(
        self, assertion: str, key: Any, alg: str, client_id: str, now: int
    ) -> dict[str, Any]:
        try:
            decoded = jwt.decode(assertion, key, algorithms=[alg])
            jwt.JWTClaimsRegistry(
                now=now,
                leeway=self._leeway,
                iss={"essential": True, "value": client_id},
                sub={"essential": True, "value": client_id},
                aud={"essential": True, "value": self._audience},
                exp={"essential": True},
                jti={"essential": True},
            ).validate(decoded.claims)
        except (JoseError, ValueError, UnicodeError) as exc:
            reason = exc.error if isinstance(exc, JoseError) and exc.error else "invalid"
            raise _fail(f"client_assertion rejected ({reason})") from None
        claims = decoded.claims
        exp = claims["exp"]
        if not isinstance(exp, int) or exp > now + MAX_ASSERTION_LIFETIME + self._leeway:
            raise _fail("client_assertion exp is more than five minutes ahead")
        if not isinstance(claims["jti"], str) or not 0 < len(claims["jti"]) <= 256:
            raise _fail("client_assertion jti must be a string of at most 256 characters")
        return claims

    async def _remember(self, client_id: str, jti: str, exp: int) -> None:
        expires = datetime.fromtimestamp(exp + self._leeway, UTC)
        now = self._clock()
        try:
            async with self._db.write() as conn:
                if now - self._last_purge >= _PURGE_EVERY:
                    self._last_purge = now
                    cutoff = datetime.fromtimestamp(now, UTC)
                    await conn.execute(
                        delete(oauth_assertion_jti).where(oauth_assertion_jti.c.expires_at < cutoff)
                    )
                await conn.execute(
                    insert(oauth_assertion_jti).values(
                        client_id=client_id, jti=jti, expires_at=expires
                    )
                )
        except IntegrityError:
            raise _fail("client_assertion jti has been used before (replay)") from None
