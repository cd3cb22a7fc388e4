"""The one place that imports fhir.resources.

fhir.resources 8 ships no R4 (4.0.1) package; its R4B (4.3.0) models validate R4 content for the
resource types both versions share, so the server validates with them and declares
fhirVersion 4.0.1. Types that exist only in R4 (the MedicinalProduct* family, the *Synthesis and
Substance* specialisations replaced in R4B) cannot be validated and are not served.
Spec: https://hl7.org/fhir/R4/resourcelist.html
"""

from __future__ import annotations

from functools import cache
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from app.errors import Issue, Unprocessable

__all__ = ["RESOURCE_TYPES", "summary_elements", "validate_resource"]

# FHIR R4 resource types (https://hl7.org/fhir/R4/resourcelist.html) that also exist in R4B.
# Parameters and OperationOutcome are exchanged, never stored, so they have no REST endpoint.
_R4_TYPES = """
Account ActivityDefinition AdverseEvent AllergyIntolerance Appointment AppointmentResponse
AuditEvent Basic Binary BiologicallyDerivedProduct BodyStructure Bundle CapabilityStatement
CarePlan CareTeam CatalogEntry ChargeItem ChargeItemDefinition Claim ClaimResponse
ClinicalImpression CodeSystem Communication CommunicationRequest CompartmentDefinition
Composition ConceptMap Condition Consent Contract Coverage CoverageEligibilityRequest
CoverageEligibilityResponse DetectedIssue Device DeviceDefinition DeviceMetric DeviceRequest
DeviceUseStatement DiagnosticReport DocumentManifest DocumentReference Encounter Endpoint
EnrollmentRequest EnrollmentResponse EpisodeOfCare EventDefinition Evidence EvidenceVariable
ExampleScenario ExplanationOfBenefit FamilyMemberHistory Flag Goal GraphDefinition Group
GuidanceResponse HealthcareService ImagingStudy Immunization ImmunizationEvaluation
ImmunizationRecommendation ImplementationGuide InsurancePlan Invoice Library Linkage List
Location Measure MeasureReport Media Medication MedicationAdministration MedicationDispense
MedicationKnowledge MedicationRequest MedicationStatement MessageDefinition MessageHeader
MolecularSequence NamingSystem NutritionOrder Observation ObservationDefinition
OperationDefinition Organization OrganizationAffiliation PaymentNotice PaymentReconciliation
Patient Person PlanDefinition Practitioner PractitionerRole Procedure Provenance Questionnaire
QuestionnaireResponse RelatedPerson RequestGroup ResearchDefinition ResearchElementDefinition
ResearchStudy ResearchSubject RiskAssessment Schedule SearchParameter ServiceRequest Slot
Specimen SpecimenDefinition StructureDefinition StructureMap Subscription Substance
SupplyDelivery SupplyRequest Task TerminologyCapabilities TestReport TestScript ValueSet
VerificationResult VisionPrescription
""".split()  # noqa: SIM905 - one word per type reads better as text

RESOURCE_TYPES: frozenset[str] = frozenset(_R4_TYPES)


@cache
def _model(resource_type: str) -> Any:
    return get_fhir_model_class(resource_type)


@cache
def summary_elements(resource_type: str) -> frozenset[str]:
    """The JSON names of the type's summary elements (isSummary in its StructureDefinition),
    each with its `_name` sibling for primitive extensions; used by `_summary=true`."""
    names: set[str] = {"resourceType"}
    for name, info in _model(resource_type).model_fields.items():
        extra = info.json_schema_extra
        if isinstance(extra, dict) and extra.get("summary_element_property"):
            json_name = info.alias or name
            names.update((json_name, f"_{json_name}"))
    return frozenset(names)


def validate_resource(resource: dict[str, Any]) -> None:
    """Validate one resource against its model; raise Unprocessable (422) naming each problem."""
    resource_type = resource.get("resourceType")
    if resource_type not in RESOURCE_TYPES:
        raise Unprocessable(
            f"resourceType {resource_type!r} is not a FHIR R4 resource type this server stores",
            code="not-supported",
        )
    try:
        _model(resource_type).model_validate(resource)
    except RecursionError:
        raise Unprocessable(f"{resource_type} is nested too deeply to validate") from None
    except ValidationError as exc:
        issues = [
            Issue(
                code="structure" if err["type"] == "extra_forbidden" else "value",
                diagnostics=f"{_path(resource_type, err['loc'])}: {err['msg']}",
                expression=(_path(resource_type, err["loc"]),),
            )
            for err in exc.errors(include_url=False, include_input=False)[:50]
        ]
        raise Unprocessable(
            f"{resource_type} failed validation ({len(issues)} problem(s))", issues=issues
        ) from None


def _path(resource_type: str, loc: tuple[Any, ...]) -> str:
    out = resource_type
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part != "__root__":
            out += f".{part}"
    return out
