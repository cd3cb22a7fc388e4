"""Long-lived components, built once from Settings and closed on shutdown."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from app.auth.keys import SigningKeys, load_or_create_signing_keys
from app.auth.policy import AccessPolicy
from app.auth.tokens import TokenValidator
from app.db import Database
from app.settings import Settings
from app.store.repository import FhirRepository

if TYPE_CHECKING:
    from app.hl7.service import Hl7Service

__all__ = ["Container", "build_container"]


@dataclass(slots=True)
class Container:
    settings: Settings
    db: Database
    keys: SigningKeys
    validator: TokenValidator
    keys_created: bool = False
    _hl7: Hl7Service | None = field(default=None, repr=False)

    def hl7(self) -> Hl7Service:
        """The HL7v2 ingestion service (journal, mapping, ACKs), built on first use."""
        if self._hl7 is None or self._hl7.db is not self.db:
            from app.hl7.service import Hl7Service

            self._hl7 = Hl7Service(self.db, self.settings)
        return self._hl7

    def repository(self, policy: AccessPolicy) -> FhirRepository:
        return FhirRepository(self.db, policy=policy, base_url=self.settings.fhir_base_url)

    async def close(self) -> None:
        await self.db.dispose()


def build_container(settings: Settings) -> Container:
    keys, created = load_or_create_signing_keys(settings.signing_key_file)
    db = Database(
        settings.database_url,
        pool_size=settings.db_pool_size,
        sqlite_synchronous=settings.sqlite_synchronous,
    )
    validator = TokenValidator(
        keys,
        issuer=settings.issuer,
        audience=settings.fhir_base_url,
        leeway_seconds=settings.token_leeway_seconds,
    )
    return Container(settings=settings, db=db, keys=keys, validator=validator, keys_created=created)
