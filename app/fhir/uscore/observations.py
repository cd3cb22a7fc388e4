"""US Core 6.1.0 Observation profiles: what a server claiming each one must do.

Same sources as profiles.py: the US Core Server CapabilityStatement section "Observation"
(https://hl7.org/fhir/us/core/STU6.1/CapabilityStatement-us-core-server.html#observation) and
each profile's StructureDefinition (https://hl7.org/fhir/us/core/STU6.1/StructureDefinition-<slug>.html),
as listed per profile in inferno-framework/us-core-test-kit generated/v6.1.0/metadata.yml. The
base `us-core-vital-signs` profile (not a separate test-kit group) takes its mandatory elements
from the FHIR R4 vital signs profile it constrains (https://hl7.org/fhir/R4/vitalsigns.html):
status, the vital-signs category, code, subject and effective[x].

Every Observation profile has the same SHALL searches: patient+category, patient+code and
patient+category+date, with the gt, ge, lt, le comparators SHALL on date. Profiles differ in
their identity: the category slice and, for vital signs and social history, the fixed LOINC code.
"""

from __future__ import annotations

from app.fhir.uscore.model import Coded, Profile

__all__ = ["OBSERVATION_PROFILES", "VITAL_SIGN_CODES"]

_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
_US_CORE_CATEGORY = "http://hl7.org/fhir/us/core/CodeSystem/us-core-category"
_LOINC = "http://loinc.org"
_SEARCHES = (("patient", "category"), ("patient", "category", "date"), ("patient", "code"))
_SUBJECT = ("us-core-patient",)


def _category(*codes: str, system: str = _CATEGORY) -> tuple[str, tuple[Coded, ...]]:
    return ("category", tuple(Coded(system, c) for c in codes))


def _code(*codes: str) -> tuple[str, tuple[Coded, ...]]:
    return ("code", tuple(Coded(_LOINC, c) for c in codes))


def _profile(slug: str, title: str, **kw: object) -> Profile:
    return Profile(slug, "Observation", title, searches=_SEARCHES, comparators=("date",), **kw)  # type: ignore[arg-type]


_RESULT_MS = ("status", "category", "code", "subject", "effectiveDateTime", "value[x]")
_QUANTITY_MANDATORY = (
    "status",
    "category",
    "code",
    "subject",
    "effective[x]",
    "valueQuantity.value",
    "valueQuantity.unit",
    "valueQuantity.system",
    "valueQuantity.code",
    "component.code",
)
_QUANTITY_MS = (
    "status",
    "category",
    "category.coding",
    "category.coding.system",
    "category.coding.code",
    "code",
    "subject",
    "effectiveDateTime",
    "valueQuantity|dataAbsentReason",
    "valueQuantity.value",
    "valueQuantity.unit",
    "valueQuantity.system",
    "valueQuantity.code",
)
_VITAL = _category("vital-signs")
_SOCIAL = _category("social-history")

# (slug, title, LOINC code(s), UCUM units) of the single-quantity vital signs
_QUANTITY_VITALS: tuple[tuple[str, str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("us-core-heart-rate", "US Core Heart Rate Profile", ("8867-4",), ("/min",)),
    ("us-core-respiratory-rate", "US Core Respiratory Rate Profile", ("9279-1",), ("/min",)),
    (
        "us-core-body-temperature",
        "US Core Body Temperature Profile",
        ("8310-5",),
        ("Cel", "[degF]"),
    ),
    ("us-core-body-height", "US Core Body Height Profile", ("8302-2",), ("cm", "[in_i]")),
    ("us-core-body-weight", "US Core Body Weight Profile", ("29463-7",), ("kg", "g", "[lb_av]")),
    ("us-core-bmi", "US Core BMI Profile", ("39156-5",), ("kg/m2",)),
    (
        "us-core-head-circumference",
        "US Core Head Circumference Profile",
        ("9843-4",),
        ("cm", "[in_i]"),
    ),
    (
        "pediatric-weight-for-height",
        "US Core Pediatric Weight for Height Observation Profile",
        ("77606-2",),
        ("%",),
    ),
    (
        "pediatric-bmi-for-age",
        "US Core Pediatric BMI for Age Observation Profile",
        ("59576-9",),
        ("%",),
    ),
    (
        "head-occipital-frontal-circumference-percentile",
        "US Core Pediatric Head Occipital Frontal Circumference Percentile Profile",
        ("8289-1",),
        ("%",),
    ),
)

VITAL_SIGN_CODES: frozenset[str] = frozenset(
    {c for _, _, codes, _ in _QUANTITY_VITALS for c in codes}
    | {"85354-9", "8480-6", "8462-4", "59408-5", "2708-6"}
)

_COMPONENT_QUANTITY = (
    "component.valueQuantity.value",
    "component.valueQuantity.unit",
    "component.valueQuantity.system",
    "component.valueQuantity.code",
)

OBSERVATION_PROFILES: tuple[Profile, ...] = (
    _profile(
        "us-core-observation-lab",
        "US Core Laboratory Result Observation Profile",
        mandatory=("status", "category", "code", "subject", "component.code"),
        must_support=(*_RESULT_MS, "specimen"),
        identity=(_category("laboratory"),),
        references=(*_SUBJECT, "us-core-specimen"),
    ),
    _profile(
        "us-core-vital-signs",
        "US Core Vital Signs Profile",
        mandatory=("status", "category", "code", "subject", "effective[x]", "component.code"),
        must_support=(
            "status",
            "category",
            "code",
            "subject",
            "effective[x]",
            "value[x]|dataAbsentReason|component",
        ),
        identity=(_VITAL,),
        references=_SUBJECT,
        generic=True,
    ),
    _profile(
        "us-core-observation-screening-assessment",
        "US Core Observation Screening Assessment Profile",
        mandatory=("status", "category", "code", "subject", "component.code"),
        must_support=(*_RESULT_MS, "performer", "hasMember", "derivedFrom"),
        identity=(_category("survey"),),
        references=(
            *_SUBJECT,
            "us-core-observation-screening-assessment",
            "us-core-questionnaireresponse",
        ),
        generic=True,
    ),
    _profile(
        "us-core-observation-clinical-result",
        "US Core Observation Clinical Result Profile",
        mandatory=("status", "category", "code", "subject", "component.code"),
        must_support=_RESULT_MS,
        identity=(
            _category(
                "laboratory", "exam", "therapy", "imaging", "procedure", "vital-signs", "activity"
            ),
        ),
        references=_SUBJECT,
        generic=True,
    ),
    _profile(
        "us-core-simple-observation",
        "US Core Simple Observation Profile",
        mandatory=("status", "category", "code", "subject", "component.code"),
        must_support=(*_RESULT_MS, "performer", "derivedFrom"),
        identity=(
            (
                "category",
                (
                    *(
                        Coded(_US_CORE_CATEGORY, c)
                        for c in ("sdoh", "functional-status", "disability-status")
                    ),
                    Coded(_US_CORE_CATEGORY, "cognitive-status"),
                    *(
                        Coded(_CATEGORY, c)
                        for c in (
                            "social-history",
                            "vital-signs",
                            "imaging",
                            "laboratory",
                            "procedure",
                            "survey",
                            "exam",
                            "therapy",
                            "activity",
                        )
                    ),
                ),
            ),
        ),
        references=_SUBJECT,
        generic=True,
    ),
    *(
        _profile(
            slug,
            title,
            mandatory=_QUANTITY_MANDATORY,
            must_support=_QUANTITY_MS,
            identity=(_VITAL, _code(*codes)),
            units=units,
            references=_SUBJECT,
        )
        for slug, title, codes, units in _QUANTITY_VITALS
    ),
    _profile(
        "us-core-blood-pressure",
        "US Core Blood Pressure Profile",
        mandatory=(
            "status",
            "category",
            "code",
            "subject",
            "effective[x]",
            "component",
            "component.code",
            *_COMPONENT_QUANTITY,
        ),
        must_support=(
            "status",
            "category",
            "code",
            "subject",
            "effectiveDateTime",
            "component",
            "component.code",
            "component.valueQuantity|component.dataAbsentReason",
            *_COMPONENT_QUANTITY,
        ),
        identity=(_VITAL, _code("85354-9")),
        references=_SUBJECT,
    ),
    _profile(
        "us-core-pulse-oximetry",
        "US Core Pulse Oximetry Profile",
        mandatory=(*_QUANTITY_MANDATORY, "code.coding", *_COMPONENT_QUANTITY),
        must_support=(
            *_QUANTITY_MS,
            "code.coding",
            "component",
            "component.code",
            "component.valueQuantity",
            *_COMPONENT_QUANTITY,
        ),
        identity=(_VITAL, _code("59408-5", "2708-6")),
        units=("%",),
        references=_SUBJECT,
    ),
    _profile(
        "us-core-smokingstatus",
        "US Core Smoking Status Observation Profile",
        mandatory=(
            "status",
            "category",
            "code",
            "subject",
            "effective[x]",
            "value[x]",
            "component.code",
        ),
        must_support=("status", "category", "code", "subject", "valueCodeableConcept"),
        identity=(_SOCIAL, _code("72166-2")),
        references=_SUBJECT,
    ),
    *(
        _profile(
            slug,
            title,
            mandatory=("status", "code", "subject", "effective[x]", "value[x]", "component.code"),
            must_support=(
                "status",
                "category",
                "code",
                "subject",
                "effectiveDateTime",
                "valueCodeableConcept",
            ),
            identity=(_SOCIAL, _code(code)),
            references=_SUBJECT,
        )
        for slug, title, code in (
            (
                "us-core-observation-pregnancystatus",
                "US Core Observation Pregnancy Status Profile",
                "82810-3",
            ),
            (
                "us-core-observation-pregnancyintent",
                "US Core Observation Pregnancy Intent Profile",
                "86645-9",
            ),
        )
    ),
    _profile(
        "us-core-observation-occupation",
        "US Core Observation Occupation Profile",
        mandatory=(
            "status",
            "code",
            "subject",
            "value[x]",
            "component.code",
            "component.value[x]",
        ),
        must_support=(
            "status",
            "category",
            "code",
            "subject",
            "effectivePeriod",
            "valueCodeableConcept",
            "component",
            "component.code",
            "component.value[x]",
        ),
        identity=(_SOCIAL, _code("11341-5")),
        references=_SUBJECT,
    ),
    _profile(
        "us-core-observation-sexual-orientation",
        "US Core Observation Sexual Orientation Profile",
        mandatory=("status", "code", "subject", "component.code"),
        must_support=("status", "code", "subject", "effectiveDateTime", "valueCodeableConcept"),
        identity=(_code("76690-7"),),
        references=_SUBJECT,
    ),
)
