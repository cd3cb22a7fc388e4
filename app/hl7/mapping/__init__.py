"""v2 message -> FHIR resources: which map handles which message (HL7 v2-to-FHIR IG message
maps; table 0354 decides the structure from MSH-9.1 and MSH-9.2, never from MSH-9.3 alone,
v2-to-fhir.md section 4.8)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from app.hl7.mapping.adt import ADT_EVENTS, map_adt
from app.hl7.mapping.common import MapContext, provenance, resource_id
from app.hl7.mapping.oru import map_oru
from app.hl7.mapping.pharmacy import map_rde, map_vxu

__all__ = ["MAPS", "MapContext", "provenance", "resource_id", "supported"]

Mapper = Callable[[MapContext], Awaitable[None]]

MAPS: dict[tuple[str, str], Mapper] = {
    **{("ADT", event): map_adt for event in ADT_EVENTS},
    ("ORU", "R01"): map_oru,
    ("RDE", "O11"): map_rde,
    ("VXU", "V04"): map_vxu,
}

# Types the maps write: POST /hl7v2 needs create and update on all of them.
WRITTEN_TYPES = (
    "AllergyIntolerance",
    "Condition",
    "Coverage",
    "DiagnosticReport",
    "Encounter",
    "Immunization",
    "Medication",
    "MedicationRequest",
    "Observation",
    "Patient",
    "Provenance",
    "RelatedPerson",
    "Specimen",
)


def supported(message_code: str, event: str) -> Mapper | None:
    return MAPS.get((message_code, event))
