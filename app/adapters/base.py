"""The contract between dxf-bridge and an intermediary: one adapter per registered endpoint.

An intermediary is a QHIO or a participant's own FHIR server, registered as a FHIR
Organization + Endpoint (requirements X-05, DXF-13, DXF-15). An adapter does four things for it:

- locate: find the intermediary's own Patient for a person we know, by shared identifiers
  first and by the intermediary's `Patient/$match` where it has one;
- fetch: the located patient's record (FHIR resources), for federated `$everything`;
- deliver: hand an ADT event to the intermediary (HL7v2 over MLLP, or a FHIR message Bundle
  per the Da Vinci unsolicited-notifications guide, DXF-23);
- capabilities: which of the above it supports, so callers never ask for what it lacks.

Adapters raise AdapterError, never httpx's or the socket's exceptions, so a federated read can
turn any failure into one OperationOutcome issue. Nothing here may log or put PHI into an
error's text: diagnostics name the endpoint, the interaction and the status, not the patient.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "AdapterCapabilities",
    "AdapterDirectory",
    "AdapterError",
    "AdtEvent",
    "DeliveryReceipt",
    "FEDERATED_HOP_HEADER",
    "FailureKind",
    "IntermediaryAdapter",
    "PersonQuery",
    "RemotePatient",
    "RemoteRecord",
]


class FailureKind(StrEnum):
    UNREACHABLE = "unreachable"  # connection refused, DNS, TLS handshake
    TIMEOUT = "timeout"  # the endpoint's deadline passed
    AUTH = "auth"  # token request refused, or 401/403 from the endpoint
    HTTP = "http"  # another non-2xx status
    OUTCOME = "operation-outcome"  # the endpoint answered with an error OperationOutcome
    OVERSIZED = "oversized"  # the response exceeded the size cap
    MALFORMED = "malformed"  # not JSON, not FHIR, or not the shape asked for
    UNSUPPORTED = "unsupported"  # the adapter does not offer this interaction
    CIRCUIT_OPEN = "circuit-open"  # not called: too many recent failures


# Sent on every request an adapter makes. A dxf-bridge answering such a request never asks its
# own intermediaries (app/fhir/rest/router.py): two servers registered with each other would
# otherwise federate back and forth until their deadlines ran out. Other servers ignore it.
FEDERATED_HOP_HEADER = "X-DxF-Federated-Hop"

RETRYABLE = frozenset({FailureKind.UNREACHABLE, FailureKind.TIMEOUT, FailureKind.HTTP})


class AdapterError(Exception):
    """An intermediary could not do what was asked; `detail` is safe to show and to log."""

    def __init__(
        self,
        kind: FailureKind,
        detail: str,
        *,
        endpoint: str = "",
        status: int | None = None,
        retryable: bool | None = None,
    ) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail
        self.endpoint = endpoint
        self.status = status
        self.retryable = kind in RETRYABLE if retryable is None else retryable

    def __str__(self) -> str:
        where = f"{self.endpoint}: " if self.endpoint else ""
        status = f" (HTTP {self.status})" if self.status is not None else ""
        return f"{where}{self.kind.value}{status}: {self.detail}"


@dataclass(frozen=True, slots=True)
class PersonQuery:
    """What we know of a person, taken from our own Patient, to find them elsewhere."""

    identifiers: tuple[tuple[str, str], ...] = ()  # (system, value); system may be ""
    family: str | None = None
    given: tuple[str, ...] = ()
    birth_date: str | None = None  # YYYY-MM-DD
    gender: str | None = None
    postal_code: str | None = None
    telecom: tuple[str, ...] = ()  # phone numbers and emails, as written
    patient: dict[str, Any] | None = field(default=None, compare=False)  # the whole resource

    @classmethod
    def from_patient(cls, patient: dict[str, Any]) -> PersonQuery:
        identifiers = tuple(
            (str(i.get("system") or ""), str(i["value"]))
            for i in patient.get("identifier") or ()
            if i.get("value")
        )
        names = patient.get("name") or [{}]
        official = next((n for n in names if n.get("use") == "official"), names[0])
        addresses = patient.get("address") or [{}]
        return cls(
            identifiers=identifiers,
            family=official.get("family"),
            given=tuple(official.get("given") or ()),
            birth_date=patient.get("birthDate"),
            gender=patient.get("gender"),
            postal_code=addresses[0].get("postalCode"),
            telecom=tuple(t["value"] for t in patient.get("telecom") or () if t.get("value")),
            patient=patient,
        )


@dataclass(frozen=True, slots=True)
class RemotePatient:
    """The intermediary's own Patient for the person: its id there, and how sure the match is."""

    id: str
    resource: dict[str, Any]
    score: float = 1.0  # 1.0 for an identifier match; $match's search.score otherwise
    how: str = "identifier"  # "identifier" or "match"


@dataclass(slots=True)
class RemoteRecord:
    """A patient's record as one intermediary returned it (resources not yet filtered)."""

    endpoint: str  # the Endpoint's address, for meta.source and Provenance
    resources: list[dict[str, Any]]
    complete: bool = True  # False when paging stopped early (size cap, page limit)
    notes: list[str] = field(default_factory=list)  # non-fatal remarks, shown as issues


@dataclass(frozen=True, slots=True)
class AdtEvent:
    """An ADT event from the HL7v2 feed, as it is handed to intermediaries and subscribers."""

    id: str  # idempotency key: the same event delivered twice carries the same id
    trigger: str  # HL7 trigger event: A01, A02, A03, A04, A08, A40, ...
    kind: str  # admit, discharge, transfer, registration, update, merge
    occurred_at: datetime
    patient: dict[str, Any]
    encounter: dict[str, Any] | None = None
    message: bytes | None = None  # the original ER7 message, for HL7v2 forwarding
    sender: str = ""  # MSH-3/MSH-4 of the original message


@dataclass(frozen=True, slots=True)
class DeliveryReceipt:
    accepted: bool
    detail: str = ""  # e.g. the ACK code (AA) or the HTTP status
    remote_id: str | None = None


@dataclass(frozen=True, slots=True)
class AdapterCapabilities:
    identifier_search: bool = True  # GET Patient?identifier=system|value
    patient_match: bool = False  # POST Patient/$match
    everything: bool = True  # GET Patient/{id}/$everything
    document_reference: bool = False  # record is DocumentReference (+ Binary), not $everything
    event_channels: frozenset[str] = frozenset()  # "hl7v2-mllp", "fhir-message"
    types: frozenset[str] = frozenset()  # resource types it serves; empty: unknown


@runtime_checkable
class IntermediaryAdapter(Protocol):
    """One registered endpoint. Implementations live in app/adapters/ (one module per QHIO)."""

    @property
    def name(self) -> str: ...  # the registered name, safe to show

    @property
    def endpoint(self) -> str: ...  # the Endpoint's address (FHIR base URL or mllp://host:port)

    def capabilities(self) -> AdapterCapabilities: ...

    async def locate(self, person: PersonQuery) -> list[RemotePatient]: ...

    async def fetch_record(
        self,
        patient: RemotePatient,
        *,
        types: Sequence[str] = (),
        since: datetime | None = None,
    ) -> RemoteRecord: ...

    async def deliver(self, event: AdtEvent) -> DeliveryReceipt: ...

    async def aclose(self) -> None: ...


class AdapterDirectory(Protocol):
    """Where federated reads and event delivery find the adapters of active registrations."""

    async def active(self) -> list[IntermediaryAdapter]: ...
