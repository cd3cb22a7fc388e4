"""The resource-server half: who is calling the FHIR API (SMART App Launch, "Access token
validation": https://hl7.org/fhir/smart-app-launch/app-launch.html#step-5-access-token).

`Authenticator.authenticate` validates the Bearer token and then refuses revoked tokens:

- tokens from this server: app.auth.tokens (signature with our keys, RS256 only, kid, iss, aud,
  exp, nbf, iat);
- tokens from a trusted external authorization server, when one is configured: app.auth.external
  (its published keys, the same claim checks). The unverified `iss` only chooses which of the
  two verifies the token; both verify everything.

The revocation check is an in-memory lookup; the list is refreshed from the database at most
every `DXF_REVOCATION_POLL_SECONDS`.
"""

from __future__ import annotations

import orjson
from joserfc import jws
from joserfc.errors import JoseError

from app.auth.external import ExternalTokenValidator
from app.auth.policy import Principal
from app.auth.revocation import RevocationList
from app.auth.tokens import TokenValidator, bearer_token
from app.errors import Unauthenticated

__all__ = ["Authenticator"]


class Authenticator:
    def __init__(
        self,
        validator: TokenValidator,
        revocations: RevocationList,
        external: ExternalTokenValidator | None = None,
    ) -> None:
        self.validator = validator
        self.revocations = revocations
        self.external = external

    async def authenticate(self, authorization: str | None) -> Principal:
        principal = None
        if self.external is not None:
            token = bearer_token(authorization)
            issuer, kid = _peek(token)
            if issuer == self.external.issuer:
                principal = await self.external.authenticate(token, kid)
        if principal is None:
            principal = self.validator.authenticate(authorization)
        await self.revocations.refresh()
        if self.revocations.revoked(principal.claims):
            raise Unauthenticated("the access token has been revoked")
        return principal


def _peek(token: str) -> tuple[str | None, str]:
    """The unverified `iss` and `kid`, only to choose the validator."""
    try:
        compact = jws.extract_compact(token.encode("ascii"))
        claims = orjson.loads(compact.payload)
        kid = compact.headers().get("kid")
    except (JoseError, ValueError, UnicodeError, orjson.JSONDecodeError):
        return None, ""
    issuer = claims.get("iss") if isinstance(claims, dict) else None
    return (issuer.rstrip("/") if isinstance(issuer, str) else None), (
        kid if isinstance(kid, str) else ""
    )
