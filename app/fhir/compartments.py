"""Patient compartment membership, computed from a resource at write time.

Implements https://hl7.org/fhir/R4/compartmentdefinition-patient.html: for each resource type,
the search parameters that place it in a Patient's compartment, given here as the element paths
of those parameters' expressions (https://hl7.org/fhir/R4/searchparameter-registry.html).
A Patient is in its own compartment (and in those of the Patients it links to).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

__all__ = ["PATIENT_COMPARTMENT", "patient_ids_of", "reference_target"]

_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")  # https://hl7.org/fhir/R4/datatypes.html#id

# resource type -> element paths whose References can point at the Patient.
PATIENT_COMPARTMENT: dict[str, tuple[str, ...]] = {
    "Account": ("subject",),
    "AdverseEvent": ("subject",),
    "AllergyIntolerance": ("patient", "recorder", "asserter"),
    "Appointment": ("participant.actor",),
    "AppointmentResponse": ("actor",),
    "AuditEvent": ("agent.who", "entity.what"),
    "Basic": ("subject", "author"),
    "BodyStructure": ("patient",),
    "CarePlan": ("subject", "activity.detail.performer"),
    "CareTeam": ("subject", "participant.member"),
    "ChargeItem": ("subject",),
    "Claim": ("patient", "payee.party"),
    "ClaimResponse": ("patient",),
    "ClinicalImpression": ("subject",),
    "Communication": ("subject", "sender", "recipient"),
    "CommunicationRequest": ("subject", "sender", "recipient", "requester"),
    "Composition": ("subject", "author", "attester.party"),
    "Condition": ("subject", "asserter"),
    "Consent": ("patient",),
    "Coverage": ("policyHolder", "subscriber", "beneficiary", "payor"),
    "CoverageEligibilityRequest": ("patient",),
    "CoverageEligibilityResponse": ("patient",),
    "DetectedIssue": ("patient",),
    "DeviceRequest": ("subject", "performer"),
    "DeviceUseStatement": ("subject",),
    "DiagnosticReport": ("subject",),
    "DocumentManifest": ("subject", "author", "recipient"),
    "DocumentReference": ("subject", "author"),
    "Encounter": ("subject",),
    "EnrollmentRequest": ("candidate",),
    "EpisodeOfCare": ("patient",),
    "ExplanationOfBenefit": ("patient", "payee.party"),
    "FamilyMemberHistory": ("patient",),
    "Flag": ("subject",),
    "Goal": ("subject",),
    "Group": ("member.entity",),
    "ImagingStudy": ("subject",),
    "Immunization": ("patient",),
    "ImmunizationEvaluation": ("patient",),
    "ImmunizationRecommendation": ("patient",),
    "Invoice": ("subject", "recipient"),
    "List": ("subject", "source"),
    "MeasureReport": ("subject",),
    "Media": ("subject",),
    "MedicationAdministration": ("subject", "performer.actor"),
    "MedicationDispense": ("subject", "receiver"),
    "MedicationRequest": ("subject",),
    "MedicationStatement": ("subject",),
    "MolecularSequence": ("patient",),
    "NutritionOrder": ("patient",),
    "Observation": ("subject", "performer"),
    "Patient": ("link.other",),
    "Person": ("link.target",),
    "Procedure": ("subject", "performer.actor"),
    "Provenance": ("target",),
    "QuestionnaireResponse": ("subject", "author"),
    "RelatedPerson": ("patient",),
    "RequestGroup": ("subject", "action.participant"),
    "ResearchSubject": ("individual",),
    "RiskAssessment": ("subject",),
    "Schedule": ("actor",),
    "ServiceRequest": ("subject", "performer"),
    "Specimen": ("subject",),
    "SupplyDelivery": ("patient",),
    "SupplyRequest": ("deliverTo",),
    "Task": ("for", "focus"),
    "VisionPrescription": ("patient",),
}


@lru_cache(maxsize=4096)  # the same few references recur across a write's resources
def reference_target(reference: str, base_url: str) -> tuple[str, str] | None:
    """`Type/id`, `Type/id/_history/n` or `{base}/Type/id` -> (Type, id); anything else -> None."""
    if reference.startswith(base_url + "/"):
        reference = reference[len(base_url) + 1 :]
    elif "://" in reference or reference.startswith(("#", "urn:")):
        return None
    parts = reference.split("/")
    if len(parts) in (2, 4) and parts[0] and _ID.match(parts[1]) and "?" not in reference:
        return parts[0], parts[1]
    return None


def patient_ids_of(resource: dict[str, Any], base_url: str) -> set[str]:
    """The ids of the Patients whose compartment holds `resource`."""
    resource_type = resource.get("resourceType", "")
    out: set[str] = set()
    if resource_type == "Patient" and isinstance(resource.get("id"), str):
        out.add(resource["id"])
    for path in PATIENT_COMPARTMENT.get(resource_type, ()):
        for ref in _references(resource, path.split(".")):
            target = reference_target(ref, base_url)
            if target and target[0] == "Patient":
                out.add(target[1])
    return out


def _references(node: Any, steps: list[str]) -> Iterator[str]:
    if isinstance(node, list):
        for item in node:
            yield from _references(item, steps)
        return
    if not isinstance(node, dict):
        return
    if not steps:
        ref = node.get("reference")
        if isinstance(ref, str):
            yield ref
        return
    if steps[0] in node:
        yield from _references(node[steps[0]], steps[1:])
