"""One Observation per US Core 6.1.0 Observation profile, every mandatory and must-support
element filled (see uscore_samples.py for how the `us-core` group uses them).

Each sample carries its profile's identifying category and LOINC code
(https://hl7.org/fhir/us/core/STU6.1/StructureDefinition-<slug>.html), UCUM units where the
profile fixes them, and an effectiveDateTime of a whole day.
"""

from __future__ import annotations

from typing import Any

__all__ = ["OBSERVATION_SAMPLES"]

_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
_US_CORE_CATEGORY = "http://hl7.org/fhir/us/core/CodeSystem/us-core-category"
_LOINC = "http://loinc.org"
_SNOMED = "http://snomed.info/sct"
_UCUM = "http://unitsofmeasure.org"
_DAY = "2021-02-03"
_PAT = {"reference": "Patient/{us-core-patient}"}
_PRACT = {"reference": "Practitioner/{us-core-practitioner}"}


def _cc(system: str, code: str, display: str | None = None) -> dict[str, Any]:
    coding = {"system": system, "code": code, **({"display": display} if display else {})}
    return {"coding": [coding]}


def _qty(value: float, code: str, unit: str | None = None) -> dict[str, Any]:
    return {"value": value, "unit": unit or code, "system": _UCUM, "code": code}


def _obs(categories: list[dict[str, Any]], code: dict[str, Any], **rest: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Observation",
        "status": "final",
        "category": categories,
        "code": code,
        "subject": _PAT,
    }
    if "effectivePeriod" not in rest:
        body["effectiveDateTime"] = _DAY
    body.update(rest)
    return body


_VITAL = _cc(_CATEGORY, "vital-signs", "Vital Signs")
_SOCIAL = _cc(_CATEGORY, "social-history", "Social History")


def _vital(code: str, value: float, unit: str) -> dict[str, Any]:
    return _obs([_VITAL], _cc(_LOINC, code), valueQuantity=_qty(value, unit))


OBSERVATION_SAMPLES: dict[str, dict[str, Any]] = {
    "us-core-observation-lab": _obs(
        [_cc(_CATEGORY, "laboratory", "Laboratory")],
        _cc(_LOINC, "2339-0", "Glucose [Mass/volume] in Blood"),
        valueQuantity=_qty(95, "mg/dL"),
        specimen={"reference": "Specimen/{us-core-specimen}"},
    ),
    "us-core-observation-clinical-result": _obs(
        [_cc(_CATEGORY, "procedure", "Procedure")],
        _cc(_LOINC, "8601-7", "EKG impression"),
        valueString="Normal sinus rhythm",
    ),
    "us-core-simple-observation": _obs(
        [_cc(_US_CORE_CATEGORY, "sdoh", "SDOH")],
        _cc(_LOINC, "93035-4", "Food insecurity risk"),
        performer=[_PRACT],
        valueCodeableConcept=_cc(_LOINC, "LA19952-3", "At risk"),
        derivedFrom=[{"reference": "QuestionnaireResponse/{us-core-questionnaireresponse}"}],
    ),
    "us-core-observation-screening-assessment": _obs(
        [_cc(_CATEGORY, "survey", "Survey"), _cc(_US_CORE_CATEGORY, "sdoh", "SDOH")],
        _cc(_LOINC, "88124-3", "Food insecurity risk [HVS]"),
        performer=[_PRACT],
        valueCodeableConcept=_cc(_LOINC, "LA19952-3", "At risk"),
        hasMember=[{"reference": "Observation/{us-core-simple-observation}"}],
        derivedFrom=[{"reference": "QuestionnaireResponse/{us-core-questionnaireresponse}"}],
    ),
    "us-core-vital-signs": _vital("8478-0", 93, "mm[Hg]"),
    "us-core-heart-rate": _vital("8867-4", 72, "/min"),
    "us-core-respiratory-rate": _vital("9279-1", 16, "/min"),
    "us-core-body-temperature": _vital("8310-5", 36.8, "Cel"),
    "us-core-body-height": _vital("8302-2", 170, "cm"),
    "us-core-body-weight": _vital("29463-7", 70, "kg"),
    "us-core-bmi": _vital("39156-5", 24.2, "kg/m2"),
    "us-core-head-circumference": _vital("9843-4", 35, "cm"),
    "pediatric-weight-for-height": _vital("77606-2", 50, "%"),
    "pediatric-bmi-for-age": _vital("59576-9", 50, "%"),
    "head-occipital-frontal-circumference-percentile": _vital("8289-1", 50, "%"),
    "us-core-blood-pressure": _obs(
        [_VITAL],
        _cc(_LOINC, "85354-9", "Blood pressure panel"),
        component=[
            {"code": _cc(_LOINC, "8480-6"), "valueQuantity": _qty(120, "mm[Hg]")},
            {"code": _cc(_LOINC, "8462-4"), "valueQuantity": _qty(80, "mm[Hg]")},
        ],
    ),
    "us-core-pulse-oximetry": _obs(
        [_VITAL],
        {
            "coding": [
                {"system": _LOINC, "code": "59408-5"},
                {"system": _LOINC, "code": "2708-6"},
            ]
        },
        valueQuantity=_qty(98, "%"),
        component=[
            {"code": _cc(_LOINC, "3151-8"), "valueQuantity": _qty(2, "L/min")},
            {"code": _cc(_LOINC, "3150-0"), "valueQuantity": _qty(28, "%")},
        ],
    ),
    "us-core-smokingstatus": _obs(
        [_SOCIAL],
        _cc(_LOINC, "72166-2", "Tobacco smoking status"),
        valueCodeableConcept=_cc(_SNOMED, "266919005", "Never smoked tobacco"),
    ),
    "us-core-observation-pregnancystatus": _obs(
        [_SOCIAL],
        _cc(_LOINC, "82810-3", "Pregnancy status"),
        valueCodeableConcept=_cc(_SNOMED, "60001007", "Not pregnant"),
    ),
    "us-core-observation-pregnancyintent": _obs(
        [_SOCIAL],
        _cc(_LOINC, "86645-9", "Pregnancy intention"),
        valueCodeableConcept=_cc(_SNOMED, "454381000124105", "No desire to become pregnant"),
    ),
    "us-core-observation-occupation": _obs(
        [_SOCIAL],
        _cc(_LOINC, "11341-5", "History of Occupation"),
        effectivePeriod={"start": _DAY, "end": _DAY},
        valueCodeableConcept=_cc("urn:oid:2.16.840.1.114222.4.5.314", "15-1252.00"),
        component=[
            {
                "code": _cc(_LOINC, "86188-0", "History of Occupation industry"),
                "valueCodeableConcept": _cc("urn:oid:2.16.840.1.114222.4.5.315", "5415"),
            }
        ],
    ),
    "us-core-observation-sexual-orientation": _obs(
        [_SOCIAL],
        _cc(_LOINC, "76690-7", "Sexual orientation"),
        valueCodeableConcept=_cc(_SNOMED, "20430005", "Heterosexual"),
    ),
}
