"""The intermediary registry: who we exchange with, how to call them, and whether they work.

An intermediary (a QHIO, or a participant's own server) is a FHIR Organization and an Endpoint
in the FHIR store (requirements DXF-13, X-05), readable like any resource, plus one row of
`intermediary` holding what is not a FHIR resource: the adapter kind (a profile of
app/adapters/qhios.toml), per-registration settings, whether it is enabled, the status the
checks gave it, and the credentials for calling it (auth method, client id, token URL, key
file, scopes, mutual-TLS files). Credentials are never part of `Registration`, so nothing that
renders or logs a registration can show them; `credentials()` is for the adapter factory and
the checker only.

Status (the registry's, mirrored into Endpoint.status, https://hl7.org/fhir/R4/valueset-endpoint-status.html):

    unchecked  registered, not yet checked      Endpoint.status = suspended
    active     the last check passed            active
    error      the last check failed            error
    off        disabled by the operator         off

RegistryDirectory (AdapterDirectory) hands out adapters for registrations that are enabled and
active, built once and rebuilt when the registration or its Endpoint changes.
"""

from __future__ import annotations

import json
import logging
import re
import ssl
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from app.adapters.base import IntermediaryAdapter
from app.adapters.config import EndpointCredentials, RegisteredEndpoint
from app.adapters.manifest_medex import parse_mllp_address
from app.adapters.profiles import Profile, endpoint_config, load_profiles
from app.adapters.smart_client import load_private_key
from app.auth.policy import AccessPolicy, ScopeGrant
from app.db import Database
from app.errors import FhirError
from app.store.repository import FhirRepository
from app.store.tables import intermediary, intermediary_check

__all__ = [
    "ADMIN_POLICY",
    "INTERMEDIARY_SYSTEM",
    "CheckRun",
    "DuplicateRegistration",
    "IntermediaryRegistry",
    "Registration",
    "RegistryDirectory",
    "check_credential_files",
    "client_ssl_context",
]

log = logging.getLogger("dxf.intermediaries")

INTERMEDIARY_SYSTEM = "urn:dxf-bridge:intermediary"  # identifier system of our registrations
CONNECTION_TYPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/endpoint-connection-type"
_CONNECTION_TYPE = {"fhir-rest": "hl7-fhir-rest", "hl7v2-mllp": "hl7v2-mllp"}
ENDPOINT_STATUS = {"unchecked": "suspended", "active": "active", "error": "error", "off": "off"}
ADMIN_POLICY = AccessPolicy(
    grants=tuple(
        ScopeGrant("system", rtype, frozenset("cruds")) for rtype in ("Endpoint", "Organization")
    ),
    admin=True,
)
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_KEEP_CHECKS = 50  # check runs kept per registration
_MAX_REASON = 300


class DuplicateRegistration(ValueError):
    """The name, or the Endpoint, is registered already."""


@dataclass(frozen=True, slots=True)
class CheckRun:
    checked_at: datetime
    status: str  # active | error
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    failures: tuple[tuple[str, str], ...] = ()  # (check id, reason)

    def as_json(self) -> dict[str, Any]:
        return {
            "checkedAt": self.checked_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "status": self.status,
            "passed": self.passed,
            "failed": self.failed,
            "skipped": self.skipped,
            "failures": [{"id": i, "reason": r} for i, r in self.failures],
        }


@dataclass(frozen=True, slots=True)
class Registration:
    """A registration as it may be shown: no credential in it (only the auth method's name)."""

    name: str
    kind: str
    endpoint_id: str
    organization_id: str | None
    enabled: bool
    status: str
    settings: dict[str, Any] = field(default_factory=dict)
    auth_method: str = "none"
    created: datetime | None = None
    updated: datetime | None = None
    address: str | None = None  # from the Endpoint resource, when read
    last_check: CheckRun | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "endpoint": f"Endpoint/{self.endpoint_id}",
            "organization": f"Organization/{self.organization_id}"
            if self.organization_id
            else None,
            "address": self.address,
            "enabled": self.enabled,
            "status": self.status,
            "endpointStatus": ENDPOINT_STATUS[self.status],
            "auth": self.auth_method,
            "settings": self.settings,
            "lastCheck": self.last_check.as_json() if self.last_check else None,
        }


def _registration(row: Any) -> Registration:
    return Registration(
        name=row.name,
        kind=row.kind,
        endpoint_id=row.endpoint_id,
        organization_id=row.organization_id,
        enabled=bool(row.enabled),
        status=row.status,
        settings=json.loads(row.settings),
        auth_method=row.auth_method,
        created=row.created,
        updated=row.updated,
    )


def _check_run(row: Any) -> CheckRun:
    return CheckRun(
        checked_at=row.checked_at if row.checked_at.tzinfo else row.checked_at.replace(tzinfo=UTC),
        status=row.status,
        passed=row.passed,
        failed=row.failed,
        skipped=row.skipped,
        failures=tuple((f["id"], f["reason"]) for f in json.loads(row.failures)),
    )


def _now() -> datetime:
    return datetime.now(UTC)


def check_address(profile: Profile, address: str) -> str:
    """The address a profile's transport accepts; ValueError otherwise."""
    if profile.transport == "hl7v2-mllp":
        parse_mllp_address(address)
        return address
    if not re.match(r"^https?://[^/\s?#]+(/[^\s?#]*)?$", address):
        raise ValueError("the base URL must be an absolute http(s) URL without query or fragment")
    return address.rstrip("/")


class IntermediaryRegistry:
    def __init__(self, db: Database, *, fhir_base_url: str) -> None:
        self._db = db
        self._base = fhir_base_url
        self.repo = FhirRepository(db, policy=ADMIN_POLICY, base_url=fhir_base_url)

    # ---- registration ----------------------------------------------------------------------

    async def add(
        self,
        name: str,
        *,
        kind: str,
        credentials: EndpointCredentials,
        address: str | None = None,
        endpoint_id: str | None = None,
        organization_name: str | None = None,
        settings: dict[str, Any] | None = None,
    ) -> Registration:
        """Register an intermediary. With `address`, create its Organization and Endpoint; with
        `endpoint_id`, attach to an Endpoint already in the store (registered over FHIR REST).
        ValueError for a bad or duplicate registration; messages never quote credentials."""
        if not _NAME.match(name):
            raise ValueError(
                "names are 1-64 characters of [a-z0-9-], starting with a letter or digit"
            )
        profiles = load_profiles()
        if kind not in profiles:
            raise ValueError(f"unknown kind {kind!r}; known: {', '.join(profiles)}")
        profile = profiles[kind]
        problems = credentials.problems()
        if problems:
            raise ValueError("; ".join(problems))
        check_credential_files(credentials)
        if (address is None) == (endpoint_id is None):
            raise ValueError("give exactly one of a base URL (address) or an existing Endpoint id")
        now = _now()
        attached = endpoint_id is not None
        async with self.repo.transaction() as tx:
            if endpoint_id is not None:
                if not _ID.match(endpoint_id):
                    raise ValueError("not an Endpoint id")
                try:
                    stored = await tx.read("Endpoint", endpoint_id)
                except FhirError:
                    raise ValueError(f"there is no Endpoint/{endpoint_id}") from None
                body = orjson.loads(stored.content or b"{}")
                check_address(profile, str(body.get("address", "")))
                org_ref = (body.get("managingOrganization") or {}).get("reference", "")
                organization_id = (
                    org_ref.split("/", 1)[1] if org_ref.startswith("Organization/") else None
                )
            else:
                assert address is not None
                address = check_address(profile, address)
                org = await tx.create(
                    "Organization",
                    {
                        "resourceType": "Organization",
                        "identifier": [{"system": INTERMEDIARY_SYSTEM, "value": name}],
                        "active": True,
                        "name": organization_name or (profile.title if profile.qhio else name),
                    },
                )
                organization_id = org.resource.id
                endpoint = await tx.create(
                    "Endpoint",
                    {
                        "resourceType": "Endpoint",
                        "identifier": [{"system": INTERMEDIARY_SYSTEM, "value": name}],
                        "status": ENDPOINT_STATUS["unchecked"],
                        "connectionType": {
                            "system": CONNECTION_TYPE_SYSTEM,
                            "code": _CONNECTION_TYPE[profile.transport],
                        },
                        "name": name,
                        "managingOrganization": {"reference": f"Organization/{organization_id}"},
                        "payloadType": [{"text": "any"}],
                        "address": address,
                    },
                )
                endpoint_id = endpoint.resource.id
            try:
                await tx.conn.execute(
                    insert(intermediary).values(
                        name=name,
                        kind=kind,
                        endpoint_id=endpoint_id,
                        organization_id=organization_id,
                        enabled=True,
                        status="unchecked",
                        settings=json.dumps(settings or {}, sort_keys=True),
                        auth_method=credentials.auth_method,
                        client_id=credentials.client_id,
                        token_url=credentials.token_url,
                        key_file=credentials.key_file,
                        scope=credentials.scope,
                        cert_file=credentials.cert_file,
                        cert_key_file=credentials.cert_key_file,
                        ca_file=credentials.ca_file,
                        created=now,
                        updated=now,
                    )
                )
            except IntegrityError:
                raise DuplicateRegistration(
                    f"{name!r} is already registered, or its Endpoint belongs to another"
                ) from None
        if attached:  # an Endpoint written over FHIR: its status is ours from now on
            await self._sync_endpoint(endpoint_id, "unchecked")
        registered = await self.get(name)
        assert registered is not None
        return registered

    async def get(self, name: str, *, with_address: bool = True) -> Registration | None:
        if not _NAME.match(name):
            return None
        async with self._db.read() as conn:
            row = (
                await conn.execute(select(intermediary).where(intermediary.c.name == name))
            ).first()
        if row is None:
            return None
        reg = _registration(row)
        last = await self.checks(name, limit=1)
        address = await self._address(reg.endpoint_id) if with_address else None
        return _with(reg, address=address, last_check=last[0] if last else None)

    async def list(self) -> list[Registration]:
        async with self._db.read() as conn:
            rows = (await conn.execute(select(intermediary).order_by(intermediary.c.name))).all()
        out = []
        for row in rows:
            reg = _registration(row)
            last = await self.checks(reg.name, limit=1)
            address = await self._address(reg.endpoint_id)
            out.append(_with(reg, address=address, last_check=last[0] if last else None))
        return out

    async def credentials(self, name: str) -> EndpointCredentials:
        async with self._db.read() as conn:
            row = (
                await conn.execute(select(intermediary).where(intermediary.c.name == name))
            ).first()
        if row is None:
            raise KeyError(name)
        return EndpointCredentials(
            auth_method=row.auth_method,
            client_id=row.client_id,
            token_url=row.token_url,
            key_file=row.key_file,
            scope=row.scope,
            cert_file=row.cert_file,
            cert_key_file=row.cert_key_file,
            ca_file=row.ca_file,
        )

    async def endpoint_config(self, reg: Registration) -> RegisteredEndpoint | None:
        """What the adapter is built from; None when the Endpoint resource is gone."""
        address = reg.address or await self._address(reg.endpoint_id)
        if address is None:
            return None
        return endpoint_config(reg.name, address, load_profiles()[reg.kind], reg.settings)

    async def set_enabled(self, name: str, enabled: bool) -> Registration | None:
        """Disable (status off at once) or enable (unchecked until the next check)."""
        reg = await self.get(name, with_address=False)
        if reg is None:
            return None
        status = "unchecked" if enabled else "off"
        async with self._db.write() as conn:
            await conn.execute(
                update(intermediary)
                .where(intermediary.c.name == name)
                .values(enabled=enabled, status=status, updated=_now())
            )
        await self._sync_endpoint(reg.endpoint_id, status)
        return await self.get(name)

    # ---- checks ----------------------------------------------------------------------------

    async def record_check(self, name: str, run: CheckRun) -> Registration | None:
        """Store a check's outcome; an enabled registration takes its status."""
        reg = await self.get(name, with_address=False)
        if reg is None:
            return None
        failures = [{"id": i[:200], "reason": r[:_MAX_REASON]} for i, r in run.failures]
        async with self._db.write() as conn:
            await conn.execute(
                insert(intermediary_check).values(
                    name=name,
                    checked_at=run.checked_at,
                    status=run.status,
                    passed=run.passed,
                    failed=run.failed,
                    skipped=run.skipped,
                    failures=json.dumps(failures),
                )
            )
            keep = (
                select(intermediary_check.c.seq)
                .where(intermediary_check.c.name == name)
                .order_by(intermediary_check.c.seq.desc())
                .limit(_KEEP_CHECKS)
            )
            await conn.execute(
                delete(intermediary_check).where(
                    intermediary_check.c.name == name,
                    intermediary_check.c.seq.not_in(keep.scalar_subquery()),
                )
            )
            if reg.enabled:
                await conn.execute(
                    update(intermediary)
                    .where(intermediary.c.name == name)
                    .values(status=run.status, updated=_now())
                )
        if reg.enabled:  # also repairs an Endpoint.status someone wrote by hand
            await self._sync_endpoint(reg.endpoint_id, run.status)
        return await self.get(name)

    async def checks(self, name: str, *, limit: int = 10) -> list[CheckRun]:
        async with self._db.read() as conn:
            rows = (
                await conn.execute(
                    select(intermediary_check)
                    .where(intermediary_check.c.name == name)
                    .order_by(intermediary_check.c.seq.desc())
                    .limit(limit)
                )
            ).all()
        return [_check_run(r) for r in rows]

    # ---- the Endpoint resource -------------------------------------------------------------

    async def endpoint_version(self, endpoint_id: str) -> tuple[int, str] | None:
        try:
            stored = await self.repo.read("Endpoint", endpoint_id)
        except FhirError:
            return None
        body = orjson.loads(stored.content or b"{}")
        address = body.get("address")
        return (stored.version, address) if isinstance(address, str) else None

    async def _address(self, endpoint_id: str) -> str | None:
        found = await self.endpoint_version(endpoint_id)
        return found[1] if found else None

    async def _sync_endpoint(self, endpoint_id: str, status: str) -> None:
        """Mirror the registry's status into Endpoint.status (a new version only on change)."""
        wanted = ENDPOINT_STATUS[status]
        try:
            stored = await self.repo.read("Endpoint", endpoint_id)
        except FhirError:
            log.warning("registered Endpoint is missing", extra={"error": "endpoint-missing"})
            return
        body = orjson.loads(stored.content or b"{}")
        if body.get("status") == wanted:
            return
        body["status"] = wanted
        try:
            await self.repo.update("Endpoint", endpoint_id, body, if_match=stored.version)
        except FhirError as exc:  # changed meanwhile: the next check writes it again
            log.warning("Endpoint status not written", extra={"error": type(exc).__name__})


def _with(reg: Registration, **changes: Any) -> Registration:
    return replace(reg, **changes)


def check_credential_files(credentials: EndpointCredentials) -> None:
    """The key and certificate files load; ValueError naming the option, never the path."""
    if credentials.uses_smart and credentials.key_file:
        try:
            load_private_key(credentials.key_file)
        except (OSError, ValueError):
            raise ValueError(
                "key-file: not a readable private key (RSA, or EC on P-384; JWK, JWKS or PEM)"
            ) from None
    if credentials.cert_file or credentials.ca_file:
        try:
            client_ssl_context(credentials)
        except (OSError, ssl.SSLError, ValueError):
            raise ValueError(
                "cert / cert-key / ca-file: the files do not load as TLS material"
            ) from None


def client_ssl_context(credentials: EndpointCredentials) -> ssl.SSLContext | None:
    """TLS for calling the endpoint: its CA file (else the system's), and the client
    certificate for mutual TLS. None when neither is registered."""
    if not (credentials.cert_file or credentials.ca_file):
        return None
    context = ssl.create_default_context(cafile=credentials.ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if credentials.cert_file:
        context.load_cert_chain(credentials.cert_file, credentials.cert_key_file)
    return context


class RegistryDirectory:
    """AdapterDirectory over the registry: adapters of enabled, active registrations."""

    def __init__(self, registry: IntermediaryRegistry, factory: Any) -> None:
        self._registry = registry
        self._factory = factory  # app.adapters.factory.AdapterFactory
        self._cache: dict[str, tuple[tuple[Any, ...], IntermediaryAdapter]] = {}

    async def active(self) -> list[IntermediaryAdapter]:
        async with self._registry._db.read() as conn:
            rows = (
                await conn.execute(
                    select(intermediary)
                    .where(intermediary.c.enabled.is_(True), intermediary.c.status == "active")
                    .order_by(intermediary.c.name)
                )
            ).all()
        out: list[IntermediaryAdapter] = []
        live = set()
        for row in rows:
            reg = _registration(row)
            found = await self._registry.endpoint_version(reg.endpoint_id)
            if found is None:
                continue
            version, address = found
            stamp = (row.updated, version)
            live.add(reg.name)
            cached = self._cache.get(reg.name)
            if cached is not None and cached[0] == stamp:
                out.append(cached[1])
                continue
            if cached is not None:
                await cached[1].aclose()
            try:
                config = endpoint_config(reg.name, address, load_profiles()[reg.kind], reg.settings)
                adapter = self._factory.build(config, await self._registry.credentials(reg.name))
            except (ValueError, OSError, KeyError) as exc:
                log.warning(
                    "intermediary adapter not built",
                    extra={"route": reg.name, "error": type(exc).__name__},
                )
                self._cache.pop(reg.name, None)
                continue
            self._cache[reg.name] = (stamp, adapter)
            out.append(adapter)
        for name in set(self._cache) - live:
            await self._cache.pop(name)[1].aclose()
        return out

    async def aclose(self) -> None:
        for _, adapter in self._cache.values():
            await adapter.aclose()
        self._cache.clear()
