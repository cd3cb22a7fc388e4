"""Minimal valid resource bodies per type, in pairs that differ in their searchable values.

For each type the kit can build, `SAMPLES` gives two bodies (A and B) and, per search parameter,
the value that A has and the value B has. A search for A's value must return A and not B (and
the other way round); this is how the kit tells a served parameter from an ignored one
(https://hl7.org/fhir/R4/search.html). "{PA}" and "{PB}" stand for the ids of the two Patients
the kit creates first; A's resources point at the first, B's at the second. Types not listed are
skipped with that reason: the kit does not guess the required elements of a type. The bodies
carry the US Core 6.1 mandatory elements of their type where one profile covers the whole type
(Encounter.type, CareTeam.participant, Device.type, Coverage.relationship), so a server claiming
US Core does not fail the `us-core` group on the kit's own data.

Values of date and quantity parameters are ordered (A's below B's) so prefixes can be checked.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

__all__ = ["PATIENT_COMPARTMENT", "SAMPLES", "Sample", "fill"]

# The sample types in the R4 Patient compartment
# (https://hl7.org/fhir/R4/compartmentdefinition-patient.html): Patient/$everything must return
# their A resources. Device, Practitioner, Organization, Location, Medication are not in it.
PATIENT_COMPARTMENT = frozenset(
    {
        "AllergyIntolerance",
        "CarePlan",
        "CareTeam",
        "Condition",
        "Coverage",
        "DiagnosticReport",
        "DocumentReference",
        "Encounter",
        "Goal",
        "Immunization",
        "MedicationRequest",
        "Observation",
        "Procedure",
        "RelatedPerson",
        "ServiceRequest",
        "Specimen",
    }
)

_SYS = "urn:dxf-bridge:conformance"
_LOINC = "http://loinc.org"
_SNOMED = "http://snomed.info/sct"
_UCUM = "http://unitsofmeasure.org"
_RELATIONSHIP = "http://terminology.hl7.org/CodeSystem/subscriber-relationship"


@dataclass(frozen=True)
class Sample:
    a: dict[str, Any]
    b: dict[str, Any]
    values: dict[str, tuple[str, str]]  # search parameter -> (A's value, B's value)


def fill(body: Any, pa: str, pb: str) -> Any:
    """A deep copy of `body` with {PA}/{PB} replaced by the two Patients' ids."""
    if isinstance(body, dict):
        return {k: fill(v, pa, pb) for k, v in body.items()}
    if isinstance(body, list):
        return [fill(v, pa, pb) for v in body]
    if isinstance(body, str):
        return body.replace("{PA}", pa).replace("{PB}", pb)
    return copy.deepcopy(body)


def _cc(system: str, code: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code}]}


def _ident(value: str) -> list[dict[str, str]]:
    return [{"system": _SYS, "value": value}]


def _pair(rtype: str, a: dict[str, Any], b: dict[str, Any], **values: tuple[str, str]) -> Sample:
    return Sample(
        {"resourceType": rtype, **a},
        {"resourceType": rtype, **b},
        {k.replace("_", "-") if not k.startswith("_") else k: v for k, v in values.items()},
    )


_IDS = ("identifier", (f"{_SYS}|ident-a", f"{_SYS}|ident-b"))

SAMPLES: dict[str, Sample] = {
    "Patient": _pair(
        "Patient",
        {
            "identifier": _ident("ident-a"),
            "active": True,
            "name": [{"family": "Conformanza", "given": ["Alda"]}],
            "gender": "female",
            "birthDate": "1961-03-04",
            "address": [{"city": "Arcata", "postalCode": "95521", "state": "CA"}],
            "telecom": [{"system": "phone", "value": "555-0101"}],
        },
        {
            "identifier": _ident("ident-b"),
            "active": False,
            "name": [{"family": "Bellwether", "given": ["Bruno"]}],
            "gender": "male",
            "birthDate": "1994-11-20",
            "address": [{"city": "Bishop", "postalCode": "93514", "state": "NV"}],
            "telecom": [{"system": "phone", "value": "555-0202"}],
        },
        identifier=_IDS[1],
        active=("true", "false"),
        name=("Conformanza", "Bellwether"),
        family=("Conformanza", "Bellwether"),
        given=("Alda", "Bruno"),
        gender=("female", "male"),
        birthdate=("1961-03-04", "1994-11-20"),
        address_city=("Arcata", "Bishop"),
        address_postalcode=("95521", "93514"),
        address_state=("CA", "NV"),
        phone=("555-0101", "555-0202"),
        telecom=("555-0101", "555-0202"),
    ),
    "Practitioner": _pair(
        "Practitioner",
        {"identifier": _ident("ident-a"), "name": [{"family": "Abernathy"}], "active": True},
        {"identifier": _ident("ident-b"), "name": [{"family": "Borromeo"}], "active": False},
        identifier=_IDS[1],
        name=("Abernathy", "Borromeo"),
        family=("Abernathy", "Borromeo"),
        active=("true", "false"),
    ),
    "Organization": _pair(
        "Organization",
        {"identifier": _ident("ident-a"), "name": "Alderwood Clinic", "active": True},
        {"identifier": _ident("ident-b"), "name": "Birchmont Hospital", "active": False},
        identifier=_IDS[1],
        name=("Alderwood Clinic", "Birchmont Hospital"),
        active=("true", "false"),
    ),
    "Location": _pair(
        "Location",
        {"identifier": _ident("ident-a"), "name": "Annex Ward", "status": "active"},
        {"identifier": _ident("ident-b"), "name": "Bayside Wing", "status": "inactive"},
        identifier=_IDS[1],
        name=("Annex Ward", "Bayside Wing"),
        status=("active", "inactive"),
    ),
    "Observation": _pair(
        "Observation",
        {
            "identifier": _ident("ident-a"),
            "status": "final",
            "category": [
                _cc("http://terminology.hl7.org/CodeSystem/observation-category", "vital-signs")
            ],
            "code": _cc(_LOINC, "8867-4"),
            "subject": {"reference": "Patient/{PA}"},
            "effectiveDateTime": "2021-02-03",
            "valueQuantity": {"value": 61, "unit": "/min", "system": _UCUM, "code": "/min"},
        },
        {
            "identifier": _ident("ident-b"),
            "status": "preliminary",
            "category": [
                _cc("http://terminology.hl7.org/CodeSystem/observation-category", "laboratory")
            ],
            "code": _cc(_LOINC, "2339-0"),
            "subject": {"reference": "Patient/{PB}"},
            "effectiveDateTime": "2023-08-09",
            "valueQuantity": {"value": 180, "unit": "mg/dL", "system": _UCUM, "code": "mg/dL"},
        },
        identifier=_IDS[1],
        status=("final", "preliminary"),
        category=("vital-signs", "laboratory"),
        code=(f"{_LOINC}|8867-4", f"{_LOINC}|2339-0"),
        subject=("Patient/{PA}", "Patient/{PB}"),
        patient=("Patient/{PA}", "Patient/{PB}"),
        date=("2021-02-03", "2023-08-09"),
        value_quantity=("61", "180"),
    ),
    "Condition": _pair(
        "Condition",
        {
            "identifier": _ident("ident-a"),
            "clinicalStatus": _cc(
                "http://terminology.hl7.org/CodeSystem/condition-clinical", "active"
            ),
            "code": _cc(_SNOMED, "44054006"),
            "subject": {"reference": "Patient/{PA}"},
            "onsetDateTime": "2010-05-06",
        },
        {
            "identifier": _ident("ident-b"),
            "clinicalStatus": _cc(
                "http://terminology.hl7.org/CodeSystem/condition-clinical", "resolved"
            ),
            "code": _cc(_SNOMED, "195967001"),
            "subject": {"reference": "Patient/{PB}"},
            "onsetDateTime": "2019-10-11",
        },
        identifier=_IDS[1],
        clinical_status=("active", "resolved"),
        code=(f"{_SNOMED}|44054006", f"{_SNOMED}|195967001"),
        subject=("Patient/{PA}", "Patient/{PB}"),
        patient=("Patient/{PA}", "Patient/{PB}"),
        onset_date=("2010-05-06", "2019-10-11"),
    ),
    "Encounter": _pair(
        "Encounter",
        {
            "identifier": _ident("ident-a"),
            "status": "finished",
            "class": {
                "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                "code": "AMB",
            },
            "type": [_cc(_SNOMED, "185349003")],
            "subject": {"reference": "Patient/{PA}"},
            "period": {"start": "2020-01-02", "end": "2020-01-02"},
        },
        {
            "identifier": _ident("ident-b"),
            "status": "in-progress",
            "class": {
                "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                "code": "IMP",
            },
            "type": [_cc(_SNOMED, "32485007")],
            "subject": {"reference": "Patient/{PB}"},
            "period": {"start": "2022-07-08", "end": "2022-07-08"},
        },
        identifier=_IDS[1],
        status=("finished", "in-progress"),
        subject=("Patient/{PA}", "Patient/{PB}"),
        patient=("Patient/{PA}", "Patient/{PB}"),
        date=("2020-01-02", "2022-07-08"),
    ),
    "Procedure": _pair(
        "Procedure",
        {
            "identifier": _ident("ident-a"),
            "status": "completed",
            "code": _cc(_SNOMED, "80146002"),
            "subject": {"reference": "Patient/{PA}"},
            "performedDateTime": "2015-04-05",
        },
        {
            "identifier": _ident("ident-b"),
            "status": "in-progress",
            "code": _cc(_SNOMED, "73761001"),
            "subject": {"reference": "Patient/{PB}"},
            "performedDateTime": "2021-09-10",
        },
        identifier=_IDS[1],
        status=("completed", "in-progress"),
        code=(f"{_SNOMED}|80146002", f"{_SNOMED}|73761001"),
        subject=("Patient/{PA}", "Patient/{PB}"),
        patient=("Patient/{PA}", "Patient/{PB}"),
        date=("2015-04-05", "2021-09-10"),
    ),
    "AllergyIntolerance": _pair(
        "AllergyIntolerance",
        {
            "identifier": _ident("ident-a"),
            "code": _cc(_SNOMED, "91936005"),
            "patient": {"reference": "Patient/{PA}"},
            "criticality": "high",
        },
        {
            "identifier": _ident("ident-b"),
            "code": _cc(_SNOMED, "300913006"),
            "patient": {"reference": "Patient/{PB}"},
            "criticality": "low",
        },
        identifier=_IDS[1],
        code=(f"{_SNOMED}|91936005", f"{_SNOMED}|300913006"),
        patient=("Patient/{PA}", "Patient/{PB}"),
        criticality=("high", "low"),
    ),
    "Immunization": _pair(
        "Immunization",
        {
            "identifier": _ident("ident-a"),
            "status": "completed",
            "vaccineCode": _cc("http://hl7.org/fhir/sid/cvx", "140"),
            "patient": {"reference": "Patient/{PA}"},
            "occurrenceDateTime": "2018-10-01",
        },
        {
            "identifier": _ident("ident-b"),
            "status": "not-done",
            "vaccineCode": _cc("http://hl7.org/fhir/sid/cvx", "207"),
            "patient": {"reference": "Patient/{PB}"},
            "occurrenceDateTime": "2021-03-15",
        },
        identifier=_IDS[1],
        status=("completed", "not-done"),
        vaccine_code=("http://hl7.org/fhir/sid/cvx|140", "http://hl7.org/fhir/sid/cvx|207"),
        patient=("Patient/{PA}", "Patient/{PB}"),
        date=("2018-10-01", "2021-03-15"),
    ),
    "MedicationRequest": _pair(
        "MedicationRequest",
        {
            "identifier": _ident("ident-a"),
            "status": "active",
            "intent": "order",
            "medicationCodeableConcept": _cc(
                "http://www.nlm.nih.gov/research/umls/rxnorm", "197361"
            ),
            "subject": {"reference": "Patient/{PA}"},
            "authoredOn": "2019-06-07",
        },
        {
            "identifier": _ident("ident-b"),
            "status": "stopped",
            "intent": "plan",
            "medicationCodeableConcept": _cc(
                "http://www.nlm.nih.gov/research/umls/rxnorm", "311036"
            ),
            "subject": {"reference": "Patient/{PB}"},
            "authoredOn": "2022-12-13",
        },
        identifier=_IDS[1],
        status=("active", "stopped"),
        intent=("order", "plan"),
        code=(
            "http://www.nlm.nih.gov/research/umls/rxnorm|197361",
            "http://www.nlm.nih.gov/research/umls/rxnorm|311036",
        ),
        subject=("Patient/{PA}", "Patient/{PB}"),
        patient=("Patient/{PA}", "Patient/{PB}"),
        authoredon=("2019-06-07", "2022-12-13"),
    ),
    "DiagnosticReport": _pair(
        "DiagnosticReport",
        {
            "identifier": _ident("ident-a"),
            "status": "final",
            "code": _cc(_LOINC, "58410-2"),
            "subject": {"reference": "Patient/{PA}"},
            "effectiveDateTime": "2017-02-03",
        },
        {
            "identifier": _ident("ident-b"),
            "status": "partial",
            "code": _cc(_LOINC, "24323-8"),
            "subject": {"reference": "Patient/{PB}"},
            "effectiveDateTime": "2022-04-05",
        },
        identifier=_IDS[1],
        status=("final", "partial"),
        code=(f"{_LOINC}|58410-2", f"{_LOINC}|24323-8"),
        subject=("Patient/{PA}", "Patient/{PB}"),
        patient=("Patient/{PA}", "Patient/{PB}"),
        date=("2017-02-03", "2022-04-05"),
    ),
    "ServiceRequest": _pair(
        "ServiceRequest",
        {
            "identifier": _ident("ident-a"),
            "status": "active",
            "intent": "order",
            "code": _cc(_SNOMED, "73761001"),
            "subject": {"reference": "Patient/{PA}"},
            "authoredOn": "2016-01-01",
        },
        {
            "identifier": _ident("ident-b"),
            "status": "completed",
            "intent": "plan",
            "code": _cc(_SNOMED, "80146002"),
            "subject": {"reference": "Patient/{PB}"},
            "authoredOn": "2023-01-01",
        },
        identifier=_IDS[1],
        status=("active", "completed"),
        intent=("order", "plan"),
        code=(f"{_SNOMED}|73761001", f"{_SNOMED}|80146002"),
        subject=("Patient/{PA}", "Patient/{PB}"),
        patient=("Patient/{PA}", "Patient/{PB}"),
        authored=("2016-01-01", "2023-01-01"),
    ),
    "Goal": _pair(
        "Goal",
        {
            "identifier": _ident("ident-a"),
            "lifecycleStatus": "active",
            "description": {"text": "walk daily"},
            "subject": {"reference": "Patient/{PA}"},
        },
        {
            "identifier": _ident("ident-b"),
            "lifecycleStatus": "completed",
            "description": {"text": "sleep more"},
            "subject": {"reference": "Patient/{PB}"},
        },
        identifier=_IDS[1],
        lifecycle_status=("active", "completed"),
        subject=("Patient/{PA}", "Patient/{PB}"),
        patient=("Patient/{PA}", "Patient/{PB}"),
    ),
    "Medication": _pair(
        "Medication",
        {"identifier": _ident("ident-a"), "code": _cc(_SNOMED, "387207008"), "status": "active"},
        {"identifier": _ident("ident-b"), "code": _cc(_SNOMED, "372687004"), "status": "inactive"},
        identifier=_IDS[1],
        code=(f"{_SNOMED}|387207008", f"{_SNOMED}|372687004"),
        status=("active", "inactive"),
    ),
    "ValueSet": _pair(
        "ValueSet",
        {"url": f"{_SYS}/ValueSet/a", "status": "active", "name": "AlphaSet"},
        {"url": f"{_SYS}/ValueSet/b", "status": "retired", "name": "BetaSet"},
        url=(f"{_SYS}/ValueSet/a", f"{_SYS}/ValueSet/b"),
        status=("active", "retired"),
        name=("AlphaSet", "BetaSet"),
    ),
    "RelatedPerson": _pair(
        "RelatedPerson",
        {
            "identifier": _ident("ident-a"),
            "active": True,
            "patient": {"reference": "Patient/{PA}"},
            "name": [{"family": "Ashcombe"}],
            "gender": "female",
        },
        {
            "identifier": _ident("ident-b"),
            "active": False,
            "patient": {"reference": "Patient/{PB}"},
            "name": [{"family": "Blackwood"}],
            "gender": "male",
        },
        identifier=_IDS[1],
        active=("true", "false"),
        patient=("Patient/{PA}", "Patient/{PB}"),
        name=("Ashcombe", "Blackwood"),
        gender=("female", "male"),
    ),
    "CarePlan": _pair(
        "CarePlan",
        {
            "identifier": _ident("ident-a"),
            "status": "active",
            "intent": "plan",
            "subject": {"reference": "Patient/{PA}"},
            "period": {"start": "2018-01-15", "end": "2018-01-15"},
        },
        {
            "identifier": _ident("ident-b"),
            "status": "completed",
            "intent": "order",
            "subject": {"reference": "Patient/{PB}"},
            "period": {"start": "2022-01-15", "end": "2022-01-15"},
        },
        identifier=_IDS[1],
        status=("active", "completed"),
        intent=("plan", "order"),
        subject=("Patient/{PA}", "Patient/{PB}"),
        patient=("Patient/{PA}", "Patient/{PB}"),
        date=("2018-01-15", "2022-01-15"),
    ),
    "CareTeam": _pair(
        "CareTeam",
        {
            "identifier": _ident("ident-a"),
            "status": "active",
            "subject": {"reference": "Patient/{PA}"},
            "participant": [{"role": [_cc(_SNOMED, "17561000")], "member": {"display": "A"}}],
        },
        {
            "identifier": _ident("ident-b"),
            "status": "inactive",
            "subject": {"reference": "Patient/{PB}"},
            "participant": [{"role": [_cc(_SNOMED, "17561000")], "member": {"display": "B"}}],
        },
        identifier=_IDS[1],
        status=("active", "inactive"),
        subject=("Patient/{PA}", "Patient/{PB}"),
        patient=("Patient/{PA}", "Patient/{PB}"),
    ),
    "Specimen": _pair(
        "Specimen",
        {
            "identifier": _ident("ident-a"),
            "status": "available",
            "type": _cc(_SNOMED, "119297000"),
            "subject": {"reference": "Patient/{PA}"},
            "collection": {"collectedDateTime": "2019-02-03"},
        },
        {
            "identifier": _ident("ident-b"),
            "status": "unavailable",
            "type": _cc(_SNOMED, "122575003"),
            "subject": {"reference": "Patient/{PB}"},
            "collection": {"collectedDateTime": "2023-02-03"},
        },
        identifier=_IDS[1],
        status=("available", "unavailable"),
        type=(f"{_SNOMED}|119297000", f"{_SNOMED}|122575003"),
        subject=("Patient/{PA}", "Patient/{PB}"),
        patient=("Patient/{PA}", "Patient/{PB}"),
        collected=("2019-02-03", "2023-02-03"),
    ),
    "Device": _pair(
        "Device",
        {
            "identifier": _ident("ident-a"),
            "status": "active",
            "type": _cc(_SNOMED, "468063009"),
            "patient": {"reference": "Patient/{PA}"},
            "manufacturer": "Acme Devices",
        },
        {
            "identifier": _ident("ident-b"),
            "status": "inactive",
            "type": _cc(_SNOMED, "468063009"),
            "patient": {"reference": "Patient/{PB}"},
            "manufacturer": "Brightline Medical",
        },
        identifier=_IDS[1],
        status=("active", "inactive"),
        patient=("Patient/{PA}", "Patient/{PB}"),
        manufacturer=("Acme Devices", "Brightline Medical"),
    ),
    "DocumentReference": _pair(
        "DocumentReference",
        {
            "identifier": _ident("ident-a"),
            "status": "current",
            "type": _cc(_LOINC, "34133-9"),
            "subject": {"reference": "Patient/{PA}"},
            "date": "2020-06-07T10:00:00Z",
            "content": [{"attachment": {"contentType": "text/plain", "url": "urn:kit:a"}}],
        },
        {
            "identifier": _ident("ident-b"),
            "status": "superseded",
            "type": _cc(_LOINC, "18842-5"),
            "subject": {"reference": "Patient/{PB}"},
            "date": "2023-06-07T10:00:00Z",
            "content": [{"attachment": {"contentType": "text/plain", "url": "urn:kit:b"}}],
        },
        identifier=_IDS[1],
        status=("current", "superseded"),
        type=(f"{_LOINC}|34133-9", f"{_LOINC}|18842-5"),
        subject=("Patient/{PA}", "Patient/{PB}"),
        patient=("Patient/{PA}", "Patient/{PB}"),
        date=("2020-06-07", "2023-06-07"),
    ),
    "Coverage": _pair(
        "Coverage",
        {
            "identifier": _ident("ident-a"),
            "status": "active",
            "beneficiary": {"reference": "Patient/{PA}"},
            "relationship": _cc(_RELATIONSHIP, "self"),
            "payor": [{"reference": "Patient/{PA}"}],
        },
        {
            "identifier": _ident("ident-b"),
            "status": "cancelled",
            "beneficiary": {"reference": "Patient/{PB}"},
            "relationship": _cc(_RELATIONSHIP, "self"),
            "payor": [{"reference": "Patient/{PB}"}],
        },
        identifier=_IDS[1],
        status=("active", "cancelled"),
        beneficiary=("Patient/{PA}", "Patient/{PB}"),
        patient=("Patient/{PA}", "Patient/{PB}"),
        payor=("Patient/{PA}", "Patient/{PB}"),
    ),
}
