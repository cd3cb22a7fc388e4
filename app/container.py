"""Long-lived components, built once from Settings and closed on shutdown."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import httpx

from app.audit.recorder import AuditRecorder
from app.auth.assertions import AssertionVerifier
from app.auth.external import ExternalTokenValidator
from app.auth.grants import TokenService
from app.auth.jwks import JwksCache
from app.auth.keys import SigningKeys, load_or_create_signing_keys
from app.auth.policy import AccessPolicy, Principal
from app.auth.registry import ClientRegistry, UserRegistry
from app.auth.resource_server import Authenticator
from app.auth.revocation import RevocationList
from app.auth.throttle import LoginThrottle
from app.auth.tokens import TokenValidator
from app.db import Database
from app.federation.directory import LazyDirectory, NoIntermediaries
from app.federation.federator import Federator
from app.settings import Settings
from app.store.repository import FhirRepository

if TYPE_CHECKING:
    from app.adapters.base import AdapterDirectory
    from app.adapters.service import Intermediaries
    from app.events.dispatcher import Dispatcher
    from app.hl7.service import Hl7Service

__all__ = ["Container", "build_container"]


@dataclass(slots=True)
class Container:
    settings: Settings
    db: Database
    keys: SigningKeys
    validator: TokenValidator
    http: httpx.AsyncClient = field(repr=False)
    clients: ClientRegistry = field(repr=False)
    users: UserRegistry = field(repr=False)
    revocations: RevocationList = field(repr=False)
    authenticator: Authenticator = field(repr=False)
    tokens: TokenService = field(repr=False)
    audit: AuditRecorder = field(repr=False)
    federator: Federator = field(repr=False, default_factory=lambda: Federator(NoIntermediaries()))
    login_throttle: LoginThrottle = field(repr=False, default_factory=LoginThrottle)
    keys_created: bool = False
    # where event delivery finds the registered intermediaries' adapters (None: none yet)
    adapter_directory: AdapterDirectory | None = field(default=None, repr=False)
    _hl7: Hl7Service | None = field(default=None, repr=False)
    _intermediaries: Intermediaries | None = field(default=None, repr=False)
    _events: Dispatcher | None = field(default=None, repr=False)

    def hl7(self) -> Hl7Service:
        """The HL7v2 ingestion service (journal, mapping, ACKs), built on first use."""
        if self._hl7 is None or self._hl7.db is not self.db:
            from app.hl7.service import Hl7Service

            self._hl7 = Hl7Service(self.db, self.settings)
        return self._hl7

    def intermediaries(self) -> Intermediaries:
        """The intermediary registry, its adapters and checks (app/adapters), built on first
        use."""
        if self._intermediaries is None:
            from app.adapters.service import Intermediaries

            self._intermediaries = Intermediaries.build(self.db, self.settings)
        return self._intermediaries

    def events(self) -> Dispatcher:
        """The event dispatcher (outbox -> subscriptions, receivers, intermediaries), woken by
        the HL7 service when it commits an event. Built on first use; not started."""
        if self._events is None or self._events.db is not self.db:
            from app.events.dispatcher import Dispatcher

            self._events = Dispatcher(self.db, self.settings, directory=self.adapter_directory)
            recorder = self.hl7().events
            if recorder is not None:
                recorder.listeners.append(self._events.wake)
        return self._events

    async def authenticate(self, authorization: str | None) -> Principal:
        """The FHIR API's caller, from the Authorization header (401 when not valid)."""
        return await self.authenticator.authenticate(authorization)

    def repository(self, policy: AccessPolicy) -> FhirRepository:
        return FhirRepository(self.db, policy=policy, base_url=self.settings.fhir_base_url)

    async def close(self) -> None:
        await self.federator.aclose()
        if self._intermediaries is not None:
            await self._intermediaries.aclose()
        await self.http.aclose()
        await self.db.dispose()


def build_container(settings: Settings, *, db: Database | None = None) -> Container:
    """Everything long-lived, from settings; `db` lets tests share one Database."""
    keys, created = load_or_create_signing_keys(settings.signing_key_file)
    if db is None:
        db = Database.from_settings(settings)
    validator = TokenValidator(
        keys,
        issuer=settings.issuer,
        audience=settings.fhir_base_url,
        leeway_seconds=settings.token_leeway_seconds,
    )
    return _wire(settings, db=db, keys=keys, validator=validator, keys_created=created)


def _wire(
    settings: Settings,
    *,
    db: Database,
    keys: SigningKeys,
    validator: TokenValidator,
    keys_created: bool = False,
) -> Container:
    """Build the authorization server, audit and federation parts over a database and keys."""
    http = httpx.AsyncClient(timeout=httpx.Timeout(5.0), follow_redirects=False)
    clients = ClientRegistry(db)
    revocations = RevocationList(db, poll_seconds=settings.revocation_poll_seconds)
    jwks = JwksCache(
        http,
        cache_seconds=settings.jwks_cache_seconds,
        refetch_interval_seconds=settings.jwks_refetch_interval_seconds,
    )
    verifier = AssertionVerifier(
        db=db,
        clients=clients,
        jwks=jwks,
        token_endpoint=settings.endpoint("token"),
        leeway_seconds=settings.token_leeway_seconds,
    )
    external = None
    if settings.external_issuer and settings.external_jwks_url:
        external = ExternalTokenValidator(
            jwks,
            issuer=settings.external_issuer,
            jwks_url=settings.external_jwks_url,
            audience=settings.fhir_base_url,
            leeway_seconds=settings.token_leeway_seconds,
        )
    tokens = TokenService(
        settings=settings,
        keys=keys,
        db=db,
        clients=clients,
        verifier=verifier,
        validator=validator,
        revocations=revocations,
    )
    container = Container(
        settings=settings,
        db=db,
        keys=keys,
        validator=validator,
        http=http,
        clients=clients,
        users=UserRegistry(db),
        revocations=revocations,
        authenticator=Authenticator(validator, revocations, external),
        tokens=tokens,
        audit=AuditRecorder(
            db, base_url=settings.fhir_base_url, wait_for_flush=settings.audit_wait_for_flush
        ),
        keys_created=keys_created,
    )
    # federated reads ask the registry's active intermediaries (app/adapters/registry.py)
    directory = LazyDirectory(lambda: container.intermediaries().directory)
    container.federator = Federator.from_settings(directory, settings)
    container.adapter_directory = directory  # event delivery to the intermediaries that take it
    return container
