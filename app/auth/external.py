"""Trusting an external authorization server (deployments where the EHR issues the tokens).

With `DXF_EXTERNAL_ISSUER` and `DXF_EXTERNAL_JWKS_URL` set, an access token whose `iss` is that
issuer is verified against that server's published keys instead of ours: same checks (fixed
algorithm list RS256/RS384/ES384, a `kid` found in the key set, `iss`, `aud` = our FHIR base,
`exp` required, `nbf`, `iat`), same scope-to-policy mapping, same revocation list. The key set is
fetched through the JwksCache, so an unknown `kid` makes it refetch at most once per interval.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from app.auth.jwks import JwksCache
from app.auth.oauth_errors import OAuthError
from app.auth.policy import Principal
from app.auth.tokens import decode_access_token
from app.errors import Unauthenticated

__all__ = ["EXTERNAL_ALGORITHMS", "ExternalTokenValidator"]

EXTERNAL_ALGORITHMS: tuple[str, ...] = ("RS256", "RS384", "ES384")
_CACHE_SIZE = 4096


class ExternalTokenValidator:
    def __init__(
        self,
        jwks: JwksCache,
        *,
        issuer: str,
        jwks_url: str,
        audience: str,
        leeway_seconds: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.issuer = issuer.rstrip("/")
        self._jwks = jwks
        self._url = jwks_url
        self._audience = audience
        self._leeway = leeway_seconds
        self._clock = clock
        self._cache: OrderedDict[str, Principal] = OrderedDict()

    async def authenticate(self, token: str, kid: str) -> Principal:
        now = int(self._clock())
        cached = self._cache.get(token)
        if cached is not None and cached.expires_at + self._leeway >= now:
            return cached
        try:
            published = await self._jwks.keyset(self._url, kid)
            keyset = KeySet.import_key_set(published)
        except (OAuthError, JoseError, ValueError):
            raise Unauthenticated("the token issuer's keys are not available") from None
        principal = decode_access_token(
            token,
            keyset,
            algorithms=EXTERNAL_ALGORITHMS,
            kids={str(k.kid) for k in keyset.keys},
            issuer=self.issuer,
            audience=self._audience,
            leeway=self._leeway,
            now=now,
        )
        self._cache[token] = principal
        if len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)
        return principal
