"""The resource-server half: who is calling the FHIR API (SMART App Launch, "Access token
validation": https://hl7.org/fhir/smart-app-launch/app-launch.html#step-5-access-token).

`Authenticator.authenticate` validates the Bearer token (app.auth.tokens: signature, algorithm,
kid, iss, aud, exp, nbf) and then refuses revoked tokens. The revocation check is an in-memory
lookup; the list is refreshed from the database at most every `DXF_REVOCATION_POLL_SECONDS`.
"""

from __future__ import annotations

from app.auth.policy import Principal
from app.auth.revocation import RevocationList
from app.auth.tokens import TokenValidator
from app.errors import Unauthenticated

__all__ = ["Authenticator"]


class Authenticator:
    def __init__(self, validator: TokenValidator, revocations: RevocationList) -> None:
        self.validator = validator
        self.revocations = revocations

    async def authenticate(self, authorization: str | None) -> Principal:
        principal = self.validator.authenticate(authorization)
        await self.revocations.refresh()
        if self.revocations.revoked(principal.claims):
            raise Unauthenticated("the access token has been revoked")
        return principal
