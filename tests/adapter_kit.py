"""Helpers for the adapter contract tests: a registered endpoint, Bundles, and a sleep that
records instead of waiting (no test sleeps)."""

from __future__ import annotations

from typing import Any

from app.adapters.base import AdapterCapabilities
from app.adapters.config import RegisteredEndpoint

BASE = "https://qhio.example.test/fhir"
TOKEN_URL = "https://auth.qhio.example.test/token"
MRN = "urn:oid:2.16.840.1.113883.3.dxf.mrn"


def endpoint(**overrides: Any) -> RegisteredEndpoint:
    values: dict[str, Any] = {"name": "test-qhio", "address": BASE, "kind": "fhir"}
    values.update(overrides)
    return RegisteredEndpoint(**values)


def caps(**kw: Any) -> AdapterCapabilities:
    return AdapterCapabilities(**kw)


def patient(pid: str, mrn: str | None = "M1", family: str = "Testperson") -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Patient",
        "id": pid,
        "name": [{"family": family, "given": ["Alex"]}],
        "birthDate": "1980-02-29",
        "gender": "unknown",
    }
    if mrn is not None:
        body["identifier"] = [{"system": MRN, "value": mrn}]
    return body


def observation(oid: str, patient_ref: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": patient_ref},
    }


def bundle(*resources: dict[str, Any], next_url: str | None = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": r, "search": {"mode": "match"}} for r in resources],
        **extra,
    }
    if next_url:
        body["link"] = [{"relation": "next", "url": next_url}]
    return body


class Sleeps:
    """Stands in for asyncio.sleep: records the delays and returns at once."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
