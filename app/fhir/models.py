"""The one place that imports fhir.resources.

fhir.resources 8 ships no R4 (4.0.1) package; its R4B (4.3.0) models validate R4 content for the
resource types both versions share, so the server validates with them and declares
fhirVersion 4.0.1. Types that exist only in R4 (the MedicinalProduct* family, the *Synthesis and
Substance* specialisations replaced in R4B) cannot be validated and are not served.
Spec: https://hl7.org/fhir/R4/resourcelist.html
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Callable
from functools import cache
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin

from fhir.resources.R4B import get_fhir_model_class
from fhir_core import types as fhir_types
from pydantic import ValidationError

from app.errors import Issue, Unprocessable

__all__ = [
    "RESOURCE_TYPES",
    "check_resource",
    "plainly_valid",
    "summary_elements",
    "validate_resource",
]

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
    if not isinstance(resource_type, str) or resource_type not in RESOURCE_TYPES:
        raise Unprocessable(
            f"resourceType {resource_type!r} is not a FHIR R4 resource type this server stores",
            code="not-supported",
        )
    try:
        _model(resource_type).model_validate(resource)
    except RecursionError:
        raise Unprocessable(f"{resource_type} is nested too deeply to validate") from None
    except (AttributeError, KeyError, TypeError):
        # fhir.resources fails this way on a string `_x` primitive extension that is JSON but
        # not an object ({"_gender": "1"}) and on a contained resource of an unknown type
        raise Unprocessable(
            f"{resource_type} failed validation: a primitive extension (_element) that is not "
            "an object, or a contained resource of an unknown type"
        ) from None
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


def check_resource(resource: dict[str, Any]) -> None:
    """validate_resource, with a fast path for plain JSON (what our mappers build, and most
    of what clients send).

    `plainly_valid` answers in a single walk, without building models, when every element of
    the resource is of a kind it checks at least as strictly as the models do; whatever it
    cannot vouch for (and every invalid resource) goes through validate_resource, so the
    verdict and the diagnostics are the models'. Every write path validates through here."""
    if not plainly_valid(resource):
        validate_resource(resource)


def plainly_valid(resource: dict[str, Any]) -> bool:
    """True only if `resource` certainly passes validate_resource; False means "not known"
    (use validate_resource for the answer).

    It walks the JSON beside a plan of each model (app.fhir.models' own fhir.resources
    classes, read once per class): every key must be an element of the model (its JSON name;
    no `_x` primitive extensions, no nulls, no empty arrays, arrays exactly where the model
    has them), the model's required elements present, at most one type of a choice element
    (exactly one where it is required), and every primitive value of its FHIR type by a check
    no looser than the model's (boolean, integer ranges, decimal, date, dateTime as a full
    date or a timestamp with a time zone, instant, code, id, uri, canonical, string and
    markdown: printable text). Other primitive types (time, url, base64Binary, ...) and other
    forms (partial dates, leap seconds) are left to the models, and so is a resource whose
    elements nest more than _MAX_DEPTH levels deep (the models may run out of stack on it, and
    then reject it). tests/test_fast_validation.py compares the two on mapped and mutated
    resources."""
    try:
        return _fits_resource(resource, 0)
    except RecursionError:
        return False


def _fits_resource(resource: dict[str, Any], depth: int) -> bool:
    resource_type = resource.get("resourceType")
    if not isinstance(resource_type, str) or resource_type not in RESOURCE_TYPES:
        return False
    return _plan(_model(resource_type)).fits(resource, depth)


_ID_CHARS = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_DATE_10 = re.compile(r"\d{4}-\d{2}-\d{2}")
_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})")
_MISSING = object()
# complex elements within complex elements that the fast path follows; deeper is for the models
# (which handle well over a hundred levels from a shallow stack, fewer from a deep one)
_MAX_DEPTH = 24


def _text(value: Any) -> bool:
    # FHIR string (pattern `[ \r\n\t\S]+`): printable text has no whitespace but spaces
    return type(value) is str and value != "" and value.isprintable()


def _code(value: Any) -> bool:
    # `^[^\s]+(\s[^\s]+)*$`: no leading, trailing or doubled spaces
    return _text(value) and value[0] != " " and value[-1] != " " and "  " not in value


def _uri(value: Any) -> bool:
    return type(value) is str and value.isprintable() and " " not in value


def _id(value: Any) -> bool:
    return type(value) is str and _ID_CHARS.fullmatch(value) is not None


def _date(value: Any) -> bool:
    """A full date (YYYY-MM-DD) that the Date pattern and the calendar both accept."""
    if type(value) is not str or _DATE_10.fullmatch(value) is None or value[:4] == "0000":
        return False
    try:
        _dt.date.fromisoformat(value)
    except ValueError:
        return False
    return True


def _instant(value: Any) -> bool:
    """A date and time to the second (or to the microsecond) with a time zone, the form an
    instant takes, that the model's pattern and a calendar both accept. A leap second, more
    than six decimals or any other form is left to the models."""
    if type(value) is not str or _TIMESTAMP.fullmatch(value) is None:
        return False
    if fhir_types.Instant.pattern.fullmatch(value) is None:
        return False
    try:
        _dt.datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def _date_time(value: Any) -> bool:
    """A dateTime given as a full date or as a full timestamp with a time zone."""
    return _date(value) or _instant(value)


def _decimal(value: Any) -> bool:
    kind = type(value)
    if kind is int:
        return True
    return kind is float and _DECIMAL.fullmatch(str(value)) is not None


def _boolean(value: Any) -> bool:
    return type(value) is bool


def _integer(low: int, high: int) -> Callable[[Any], bool]:
    def check(value: Any) -> bool:
        return type(value) is int and low <= value <= high

    return check


def _primitive(annotation: Any) -> Callable[[Any], bool] | None:
    """The check for a primitive field's annotation; None for kinds left to the models."""
    if annotation is bool:
        return _boolean
    if get_origin(annotation) is not Annotated:
        return None
    marks = [
        m
        for m in get_args(annotation)[1:]
        if type(m) in _PRIMITIVE_CHECKS or isinstance(m, fhir_types.Integer)
    ]
    if len(marks) != 1:
        return None
    mark = marks[0]
    if isinstance(mark, fhir_types.Integer):
        return _integer(mark.min_length, mark.max_length)
    return _PRIMITIVE_CHECKS[type(mark)]


class _Plan:
    """What `plainly_valid` needs to know of one model class."""

    __slots__ = ("choices", "fields", "model", "required", "resource_type")

    def __init__(self, model: Any) -> None:
        self.model = model
        # JSON name -> (repeats, check, nested); check None: an element left to the models;
        # nested: a complex element, whose check takes the depth too
        self.fields: dict[str, tuple[bool, Callable[..., bool] | None, bool]] = {}
        self.required: frozenset[str] = frozenset()
        self.choices: tuple[tuple[frozenset[str], bool], ...] = ()
        self.resource_type = model.__resource_type__ if model.has_resource_base() else None

    def build(self) -> None:
        model = self.model
        aliases = {}
        required = []
        for name, info in model.model_fields.items():
            extra = info.json_schema_extra
            if not (isinstance(extra, dict) and extra.get("element_property")):
                continue  # fhir_comments, the `_x` primitive extensions
            alias = info.alias or name
            aliases[name] = alias
            repeats, inner = _unwrap(info.annotation)
            check = _element_check(inner, self, alias)
            nested = isinstance(check, _LazyCheck) or check is _contained
            self.fields[alias] = (repeats, check, nested)
            if info.is_required():
                required.append(alias)
        sample = model.model_construct()
        # primitive elements with a minimum cardinality of 1 (their `_x` form is not accepted)
        required += [aliases[name] for name, _ext in sample.get_required_fields()]
        self.required = frozenset(required)
        self.choices = tuple(
            (
                frozenset(aliases[f] for f in names),
                model.model_fields[names[0]].json_schema_extra.get("one_of_many_required") is True,
            )
            for names in sample.get_one_of_many_fields().values()
        )

    def fits(self, data: Any, depth: int = 0) -> bool:
        if type(data) is not dict or depth > _MAX_DEPTH:
            return False
        fields = self.fields
        for key, value in data.items():
            spec = fields.get(key)
            if spec is None:
                if key == "resourceType" and value == self.resource_type:
                    continue
                return False
            repeats, check, nested = spec
            if check is None:
                return False
            if repeats:
                if type(value) is not list or not value:
                    return False
                for item in value:
                    if not (check(item, depth + 1) if nested else check(item)):
                        return False
            elif not (check(value, depth + 1) if nested else check(value)):
                return False
        if not data.keys() >= self.required:
            return False
        for names, needed in self.choices:
            present = len(data.keys() & names)
            if present > 1 or (needed and present == 0):
                return False
        return True


@cache
def _plan(model: Any) -> _Plan:
    plan = _Plan(model)
    plan.build()  # element plans are looked up on first use (_LazyCheck), so cycles are fine
    return plan


def _unwrap(annotation: Any) -> tuple[bool, Any]:
    """(repeats, the element type) of a field annotation such as `List[X] | None`."""
    if get_origin(annotation) in (Union, UnionType):
        inner = [a for a in get_args(annotation) if a is not type(None)]
        if len(inner) != 1:
            return False, None
        annotation = inner[0]
    if get_origin(annotation) is list:
        item = get_args(annotation)[0]
        if get_origin(item) in (Union, UnionType):  # primitive arrays allow null placeholders
            inner = [a for a in get_args(item) if a is not type(None)]
            item = inner[0] if len(inner) == 1 else None
        return True, item
    return False, annotation


def _element_check(inner: Any, owner: _Plan, alias: str) -> Callable[..., bool] | None:
    if isinstance(inner, type) and issubclass(inner, fhir_types.FhirBase):
        if issubclass(inner, fhir_types.FhirElementOrResourceBase):
            return _contained if inner._model_klass.endswith(".Resource") else None
        return _LazyCheck(inner, owner, alias)
    return _primitive(inner)


class _LazyCheck:
    """A complex element's check until first use, when it looks the class's plan up and puts
    that plan's `fits` in its place in the owner's fields."""

    __slots__ = ("_alias", "_fhir_type", "_owner")

    def __init__(self, fhir_type: Any, owner: _Plan, alias: str) -> None:
        self._fhir_type = fhir_type
        self._owner = owner
        self._alias = alias

    def __call__(self, value: Any, depth: int) -> bool:
        fits = _plan(self._fhir_type.get_model_klass()).fits
        repeats, _self, nested = self._owner.fields[self._alias]
        self._owner.fields[self._alias] = (repeats, fits, nested)
        return fits(value, depth)


def _contained(value: Any, depth: int) -> bool:
    """A contained resource."""
    return type(value) is dict and _fits_resource(value, depth)


_PRIMITIVE_CHECKS: dict[type, Callable[[Any], bool]] = {
    fhir_types.String: _text,
    fhir_types.Markdown: _text,
    fhir_types.Code: _code,
    fhir_types.Id: _id,
    fhir_types.Uri: _uri,
    fhir_types.Canonical: _uri,
    fhir_types.Date: _date,
    fhir_types.DateTime: _date_time,
    fhir_types.Instant: _instant,
    fhir_types.Decimal: _decimal,
}
_DECIMAL = fhir_types.Decimal.pattern


def _path(resource_type: str, loc: tuple[Any, ...]) -> str:
    out = resource_type
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part != "__root__":
            out += f".{part}"
    return out
