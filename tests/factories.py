"""Builders for test resources (synthetic data only, no real PHI)."""

from __future__ import annotations

from typing import Any


def patient(mrn: str | None = None, family: str = "Testperson", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Patient",
        "name": [{"family": family, "given": ["Alex"]}],
        "gender": "unknown",
        "birthDate": "1980-02-29",
    }
    if mrn is not None:
        body["identifier"] = [{"system": "urn:oid:2.16.840.1.113883.3.dxf.mrn", "value": mrn}]
    body.update(extra)
    return body


def observation(patient_id: str, code: str = "8867-4", value: float = 72.0) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": f"Patient/{patient_id}"},
        "valueQuantity": {
            "value": value,
            "unit": "/min",
            "system": "http://unitsofmeasure.org",
            "code": "/min",
        },
    }


def encounter(patient_id: str) -> dict[str, Any]:
    return {
        "resourceType": "Encounter",
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": f"Patient/{patient_id}"},
    }
