"""Helpers for the federated-read tests: an in-process adapter with canned answers, a clock to
move by hand, and remote resources (synthetic data only)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from app.adapters.base import (
    AdapterCapabilities,
    AdapterError,
    AdtEvent,
    DeliveryReceipt,
    FailureKind,
    PersonQuery,
    RemotePatient,
    RemoteRecord,
)

MRN = "urn:oid:2.16.840.1.113883.3.dxf.mrn"


class FakeAdapter:
    """An IntermediaryAdapter answering from memory. `hang` makes locate wait until cancelled;
    `error` makes it raise; every call is recorded."""

    def __init__(
        self,
        name: str,
        endpoint: str,
        *,
        patients: Sequence[RemotePatient] = (),
        resources: Sequence[dict[str, Any]] = (),
        error: AdapterError | None = None,
        hang: bool = False,
    ) -> None:
        self._name = name
        self._endpoint = endpoint
        self.patients = list(patients)
        self.resources = list(resources)
        self.error = error
        self.hang = hang
        self.located: list[PersonQuery] = []
        self.fetched: list[tuple[str, tuple[str, ...], datetime | None]] = []
        self.cancelled = asyncio.Event()

    @property
    def name(self) -> str:
        return self._name

    @property
    def endpoint(self) -> str:
        return self._endpoint

    def capabilities(self) -> AdapterCapabilities:
        return AdapterCapabilities()

    async def locate(self, person: PersonQuery) -> list[RemotePatient]:
        self.located.append(person)
        if self.hang:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancelled.set()
                raise
        if self.error is not None:
            raise self.error
        return list(self.patients)

    async def fetch_record(
        self,
        patient: RemotePatient,
        *,
        types: Sequence[str] = (),
        since: datetime | None = None,
    ) -> RemoteRecord:
        self.fetched.append((patient.id, tuple(types), since))
        return RemoteRecord(
            self._endpoint, [dict(r) if isinstance(r, dict) else r for r in self.resources]
        )

    async def deliver(self, event: AdtEvent) -> DeliveryReceipt:
        raise AdapterError(FailureKind.UNSUPPORTED, "no delivery")

    async def aclose(self) -> None:
        return None


class Clock:
    """Monotonic seconds that move only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def remote_patient(pid: str, mrn: str = "M1", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Patient",
        "id": pid,
        "identifier": [{"system": MRN, "value": mrn}],
        "name": [{"family": "Testperson", "given": ["Alex"]}],
        "gender": "unknown",
        "birthDate": "1980-02-29",
    }
    body.update(extra)
    return body


def remote_observation(oid: str, patient_ref: str, code: str = "8867-4", **extra: Any) -> dict:
    body: dict[str, Any] = {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": patient_ref},
        "valueQuantity": {"value": 72.0, "unit": "/min"},
    }
    body.update(extra)
    return body


def located(pid: str, score: float = 1.0, **extra: Any) -> RemotePatient:
    return RemotePatient(pid, remote_patient(pid, **extra), score=score)
