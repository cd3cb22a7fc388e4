"""One resource per US Core 6.1.0 profile, with every mandatory and must-support element filled.

The `us-core` group creates these (unless `--read-only`) so that each SHALL search has real
data to find and each must-support element has a value the server must hand back
(https://hl7.org/fhir/us/core/STU6.1/must-support.html: a responder SHALL be capable of
populating every must-support element). `{slug}` in a reference stands for the id of that
profile's sample (or an auxiliary resource in `AUXILIARY`), created first: `ORDER` is the
creation order. Dates are whole days, so searches with date comparators have a clear answer.
Observation samples are in uscore_observations.py.
"""

from __future__ import annotations

import base64
import copy
from typing import Any

from conformance.uscore_observations import OBSERVATION_SAMPLES

__all__ = ["AUXILIARY", "ORDER", "SAMPLES", "fill", "placeholders"]

_SYS = "urn:dxf-bridge:conformance:us-core"
_SNOMED = "http://snomed.info/sct"
_LOINC = "http://loinc.org"
_NPI = "http://hl7.org/fhir/sid/us-npi"
_UCUM = "http://unitsofmeasure.org"
_DAY = "2021-02-03"
_INSTANT = "2021-02-03T10:00:00Z"
PAT = {"reference": "Patient/{us-core-patient}"}
PRACT = {"reference": "Practitioner/{us-core-practitioner}"}
ORG = {"reference": "Organization/{us-core-organization}"}
ENC = {"reference": "Encounter/{us-core-encounter}"}


def _cc(system: str, code: str, display: str | None = None) -> dict[str, Any]:
    coding = {"system": system, "code": code, **({"display": display} if display else {})}
    return {"coding": [coding]}


def _ext(name: str, **value: Any) -> dict[str, Any]:
    return {"url": f"http://hl7.org/fhir/us/core/StructureDefinition/us-core-{name}", **value}


_ADDRESS = {"line": ["1 Kit Way"], "city": "Arcata", "state": "CA", "postalCode": "95521"}
_PHONE = {"system": "phone", "value": "555-0142", "use": "work"}
_DOSAGE = {
    "text": "1 tablet by mouth daily",
    "timing": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "d"}},
    "doseAndRate": [
        {"doseQuantity": {"value": 1, "unit": "tablet", "system": _UCUM, "code": "{tbl}"}}
    ],
}
_TABLETS = {"value": 30, "unit": "tablet", "system": _UCUM, "code": "{tbl}"}

# resources the samples point at that are not themselves US Core profiles
AUXILIARY: dict[str, dict[str, Any]] = {
    "media": {
        "resourceType": "Media",
        "status": "completed",
        "content": {"contentType": "image/png", "url": "urn:dxf-bridge:conformance:media"},
    },
}

_SAMPLES: dict[str, dict[str, Any]] = {
    "us-core-patient": {
        "resourceType": "Patient",
        "extension": [
            _ext(
                "race",
                extension=[
                    {
                        "url": "ombCategory",
                        "valueCoding": {
                            "system": "urn:oid:2.16.840.1.113883.6.238",
                            "code": "2106-3",
                        },
                    },
                    {"url": "text", "valueString": "White"},
                ],
            ),
            _ext(
                "ethnicity",
                extension=[
                    {
                        "url": "ombCategory",
                        "valueCoding": {
                            "system": "urn:oid:2.16.840.1.113883.6.238",
                            "code": "2186-5",
                        },
                    },
                    {"url": "text", "valueString": "Not Hispanic or Latino"},
                ],
            ),
            _ext(
                "tribal-affiliation",
                extension=[
                    {
                        "url": "tribalAffiliation",
                        "valueCodeableConcept": _cc(
                            "http://terminology.hl7.org/CodeSystem/v3-TribalEntityUS", "187"
                        ),
                    }
                ],
            ),
            _ext("sex", valueCode="248152002"),
            _ext("genderIdentity", valueCodeableConcept=_cc(_SNOMED, "446141000124107")),
        ],
        "identifier": [{"system": _SYS, "value": "us-core-patient"}],
        "name": [
            {"use": "official", "family": "Uscorekit", "given": ["Alma", "Rae"], "suffix": ["Jr"]},
            {
                "use": "old",
                "family": "Formerkit",
                "given": ["Alma"],
                "period": {"end": "2010-01-01"},
            },
        ],
        "telecom": [{"system": "phone", "value": "555-0141", "use": "home"}],
        "gender": "female",
        "birthDate": "1970-05-06",
        "deceasedDateTime": "2024-01-02",
        "address": [
            {"use": "home", **_ADDRESS},
            {
                "use": "old",
                "line": ["9 Former Rd"],
                "city": "Bishop",
                "state": "CA",
                "postalCode": "93514",
                "period": {"end": "2015-01-01"},
            },
        ],
        "communication": [{"language": _cc("urn:ietf:bcp:47", "en")}],
    },
    "us-core-organization": {
        "resourceType": "Organization",
        "identifier": [{"system": _NPI, "value": "1144221847"}],
        "active": True,
        "name": "Uscorekit Clinic",
        "telecom": [_PHONE],
        "address": [{**_ADDRESS, "country": "US"}],
    },
    "us-core-practitioner": {
        "resourceType": "Practitioner",
        "identifier": [{"system": _NPI, "value": "1234567893"}],
        "name": [{"family": "Kitpractitioner", "given": ["Ada"]}],
        "telecom": [_PHONE],
        "address": [{**_ADDRESS, "country": "US"}],
    },
    "us-core-location": {
        "resourceType": "Location",
        "status": "active",
        "name": "Uscorekit Ward",
        "telecom": [_PHONE],
        "address": _ADDRESS,
        "managingOrganization": ORG,
    },
    "us-core-practitionerrole": {
        "resourceType": "PractitionerRole",
        "contained": [
            {
                "resourceType": "Endpoint",
                "id": "ep",
                "status": "active",
                "connectionType": {
                    "system": "http://terminology.hl7.org/CodeSystem/endpoint-connection-type",
                    "code": "hl7-fhir-rest",
                },
                "payloadType": [{"text": "any"}],
                "address": "https://fhir.example.org/r4",
            }
        ],
        "practitioner": PRACT,
        "organization": ORG,
        "code": [_cc("http://nucc.org/provider-taxonomy", "207Q00000X", "Family Medicine")],
        "specialty": [_cc("http://nucc.org/provider-taxonomy", "207Q00000X", "Family Medicine")],
        "location": [{"reference": "Location/{us-core-location}"}],
        "telecom": [_PHONE],
        "endpoint": [{"reference": "#ep"}],
    },
    "us-core-medication": {
        "resourceType": "Medication",
        "code": _cc("http://www.nlm.nih.gov/research/umls/rxnorm", "197361"),
        "status": "active",
    },
    "us-core-specimen": {
        "resourceType": "Specimen",
        "type": _cc(_SNOMED, "119297000", "Blood specimen"),
        "subject": PAT,
    },
    "us-core-encounter": {
        "resourceType": "Encounter",
        "identifier": [{"system": _SYS, "value": "us-core-encounter"}],
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "type": [_cc(_SNOMED, "185349003", "Encounter for check up")],
        "subject": PAT,
        "participant": [
            {
                "type": [_cc("http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "ATND")],
                "period": {"start": _DAY, "end": _DAY},
                "individual": PRACT,
            }
        ],
        "period": {"start": _DAY, "end": _DAY},
        "reasonCode": [_cc(_SNOMED, "271737000", "Anemia")],
        "hospitalization": {
            "dischargeDisposition": _cc(
                "http://terminology.hl7.org/CodeSystem/discharge-disposition", "home"
            )
        },
        "location": [{"location": {"reference": "Location/{us-core-location}"}}],
        "serviceProvider": ORG,
    },
    "us-core-condition-encounter-diagnosis": {
        "resourceType": "Condition",
        "extension": [
            {
                "url": "http://hl7.org/fhir/StructureDefinition/condition-assertedDate",
                "valueDateTime": "2021-01-15",
            }
        ],
        "clinicalStatus": _cc("http://terminology.hl7.org/CodeSystem/condition-clinical", "active"),
        "verificationStatus": _cc(
            "http://terminology.hl7.org/CodeSystem/condition-ver-status", "confirmed"
        ),
        "category": [
            _cc("http://terminology.hl7.org/CodeSystem/condition-category", "encounter-diagnosis")
        ],
        "code": _cc(_SNOMED, "44054006", "Diabetes mellitus type 2"),
        "subject": PAT,
        "encounter": ENC,
        "onsetDateTime": "2021-01-02",
        "abatementDateTime": "2021-02-01",
        "recordedDate": _DAY,
    },
    "us-core-allergyintolerance": {
        "resourceType": "AllergyIntolerance",
        "clinicalStatus": _cc(
            "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical", "active"
        ),
        "verificationStatus": _cc(
            "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification", "confirmed"
        ),
        "code": _cc(_SNOMED, "91936005", "Allergy to penicillin"),
        "patient": PAT,
        "reaction": [{"manifestation": [_cc(_SNOMED, "271807003", "Rash")]}],
    },
    "us-core-careplan": {
        "resourceType": "CarePlan",
        "text": {
            "status": "generated",
            "div": '<div xmlns="http://www.w3.org/1999/xhtml">Conformance kit care plan</div>',
        },
        "status": "active",
        "intent": "plan",
        "category": [
            _cc("http://hl7.org/fhir/us/core/CodeSystem/careplan-category", "assess-plan")
        ],
        "subject": PAT,
    },
    "us-core-careteam": {
        "resourceType": "CareTeam",
        "status": "active",
        "subject": PAT,
        "participant": [{"role": [_cc(_SNOMED, "17561000", "Cardiologist")], "member": PRACT}],
    },
    "us-core-coverage": {
        "resourceType": "Coverage",
        "identifier": [
            {
                "type": _cc("http://terminology.hl7.org/CodeSystem/v2-0203", "MB"),
                "system": _SYS,
                "value": "us-core-member",
            }
        ],
        "status": "active",
        "type": _cc("urn:oid:2.16.840.1.113883.3.221.5", "1", "Medicare"),
        "subscriberId": "SUB-1",
        "beneficiary": PAT,
        "relationship": _cc(
            "http://terminology.hl7.org/CodeSystem/subscriber-relationship", "self"
        ),
        "period": {"start": "2021-01-01"},
        "payor": [ORG],
        "class": [
            {
                "type": _cc("http://terminology.hl7.org/CodeSystem/coverage-class", "group"),
                "value": "GRP-1",
                "name": "Kit group",
            },
            {
                "type": _cc("http://terminology.hl7.org/CodeSystem/coverage-class", "plan"),
                "value": "PLN-1",
                "name": "Kit plan",
            },
        ],
    },
    "us-core-implantable-device": {
        "resourceType": "Device",
        "udiCarrier": [
            {
                "deviceIdentifier": "09504000059118",
                "carrierHRF": "(01)09504000059118(17)141120(10)7654321D(21)10987654d321",
            }
        ],
        "distinctIdentifier": "kit-device",
        "manufactureDate": "2013-02-01",
        "expirationDate": "2030-02-01",
        "lotNumber": "7654321D",
        "serialNumber": "10987654d321",
        "type": _cc(_SNOMED, "468063009", "Coated femoral stem prosthesis"),
        "patient": PAT,
    },
    "us-core-goal": {
        "resourceType": "Goal",
        "lifecycleStatus": "active",
        "description": {"text": "Walk every day"},
        "subject": PAT,
        "startDate": _DAY,
        "target": [{"dueDate": "2022-02-03"}],
    },
    "us-core-immunization": {
        "resourceType": "Immunization",
        "status": "not-done",
        "statusReason": _cc("http://terminology.hl7.org/CodeSystem/v3-ActReason", "PATOBJ"),
        "vaccineCode": _cc("http://hl7.org/fhir/sid/cvx", "140"),
        "patient": PAT,
        "occurrenceDateTime": _DAY,
        "primarySource": True,
    },
    "us-core-medicationrequest": {
        "resourceType": "MedicationRequest",
        "status": "active",
        "intent": "order",
        "category": [
            _cc("http://terminology.hl7.org/CodeSystem/medicationrequest-category", "outpatient")
        ],
        "reportedBoolean": False,
        "medicationReference": {"reference": "Medication/{us-core-medication}"},
        "subject": PAT,
        "encounter": ENC,
        "authoredOn": _DAY,
        "requester": PRACT,
        "reasonCode": [_cc(_SNOMED, "38341003", "Hypertension")],
        "dosageInstruction": [_DOSAGE],
        "dispenseRequest": {"numberOfRepeatsAllowed": 3, "quantity": _TABLETS},
    },
    "us-core-medicationdispense": {
        "resourceType": "MedicationDispense",
        "status": "completed",
        "medicationReference": {"reference": "Medication/{us-core-medication}"},
        "subject": PAT,
        "performer": [{"actor": PRACT}],
        "authorizingPrescription": [{"reference": "MedicationRequest/{us-core-medicationrequest}"}],
        "type": _cc("http://terminology.hl7.org/CodeSystem/v3-ActCode", "FF", "First Fill"),
        "quantity": _TABLETS,
        "whenHandedOver": "2021-02-04T10:00:00Z",
        "dosageInstruction": [_DOSAGE],
    },
    "us-core-servicerequest": {
        "resourceType": "ServiceRequest",
        "status": "active",
        "intent": "order",
        "category": [_cc(_SNOMED, "108252007", "Laboratory procedure")],
        "code": _cc(_LOINC, "24323-8", "Comprehensive metabolic panel"),
        "subject": PAT,
        "occurrencePeriod": {"start": _DAY, "end": _DAY},
        "authoredOn": _DAY,
        "requester": PRACT,
        "reasonCode": [_cc(_SNOMED, "38341003", "Hypertension")],
    },
    "us-core-procedure": {
        "resourceType": "Procedure",
        "basedOn": [{"reference": "ServiceRequest/{us-core-servicerequest}"}],
        "status": "completed",
        "code": _cc(_SNOMED, "80146002", "Appendectomy"),
        "subject": PAT,
        "performedDateTime": _DAY,
    },
    "us-core-questionnaireresponse": {
        "resourceType": "QuestionnaireResponse",
        "identifier": {"system": _SYS, "value": "us-core-questionnaireresponse"},
        "questionnaire": "http://example.org/Questionnaire/conformance-kit",
        "status": "completed",
        "subject": PAT,
        "authored": _INSTANT,
        "author": PRACT,
        "item": [
            {
                "linkId": "1",
                "text": "Do you walk every day?",
                "answer": [
                    {
                        "valueString": "yes",
                        "item": [
                            {"linkId": "1.1", "text": "Miles", "answer": [{"valueDecimal": 2}]}
                        ],
                    }
                ],
            }
        ],
    },
    "us-core-diagnosticreport-note": {
        "resourceType": "DiagnosticReport",
        "status": "final",
        "category": [_cc(_LOINC, "LP29684-5", "Radiology")],
        "code": _cc(_LOINC, "18748-4", "Diagnostic imaging study"),
        "subject": PAT,
        "encounter": ENC,
        "effectiveDateTime": _DAY,
        "issued": "2021-02-03T12:00:00Z",
        "performer": [PRACT, ORG],
        "result": [{"reference": "Observation/{us-core-observation-lab}"}],
        "media": [{"link": {"reference": "Media/{media}"}}],
        "presentedForm": [
            {"contentType": "text/plain", "data": base64.b64encode(b"No findings.").decode()}
        ],
    },
    "us-core-diagnosticreport-lab": {
        "resourceType": "DiagnosticReport",
        "status": "final",
        "category": [_cc("http://terminology.hl7.org/CodeSystem/v2-0074", "LAB")],
        "code": _cc(_LOINC, "24323-8", "Comprehensive metabolic panel"),
        "subject": PAT,
        "effectiveDateTime": _DAY,
        "issued": "2021-02-03T12:00:00Z",
        "performer": [PRACT],
        "result": [{"reference": "Observation/{us-core-observation-lab}"}],
    },
    "us-core-documentreference": {
        "resourceType": "DocumentReference",
        "identifier": [{"system": _SYS, "value": "us-core-documentreference"}],
        "status": "current",
        "type": _cc(_LOINC, "34133-9", "Summary of episode note"),
        "category": [
            _cc(
                "http://hl7.org/fhir/us/core/CodeSystem/us-core-documentreference-category",
                "clinical-note",
            )
        ],
        "subject": PAT,
        "date": _INSTANT,
        "author": [PRACT],
        "content": [
            {
                "attachment": {
                    "contentType": "text/plain",
                    "data": base64.b64encode(b"Kit note.").decode(),
                },
                "format": {
                    "system": "http://ihe.net/fhir/ihe.formatcode.fhir/CodeSystem/formatcode",
                    "code": "urn:ihe:iti:xds:2017:mimeTypeSufficient",
                },
            }
        ],
        "context": {"encounter": [ENC], "period": {"start": _DAY, "end": _DAY}},
    },
    "us-core-relatedperson": {
        "resourceType": "RelatedPerson",
        "active": True,
        "patient": PAT,
        "relationship": [_cc("http://terminology.hl7.org/CodeSystem/v3-RoleCode", "MTH")],
        "name": [{"family": "Kitrelative", "given": ["Mara"]}],
        "telecom": [_PHONE],
        "address": [_ADDRESS],
    },
}

_PROBLEM = copy.deepcopy(_SAMPLES["us-core-condition-encounter-diagnosis"])
_PROBLEM.pop("encounter")
_PROBLEM["category"] = [
    _cc("http://terminology.hl7.org/CodeSystem/condition-category", "problem-list-item")
]
_SAMPLES["us-core-condition-problems-health-concerns"] = _PROBLEM

# the Provenance names every other sample as its target (filled in by the group)
_SAMPLES["us-core-provenance"] = {
    "resourceType": "Provenance",
    "target": [PAT],
    "recorded": _INSTANT,
    "agent": [
        {
            "type": _cc(
                "http://terminology.hl7.org/CodeSystem/provenance-participant-type", "author"
            ),
            "who": PRACT,
            "onBehalfOf": ORG,
        }
    ],
}

SAMPLES: dict[str, dict[str, Any]] = {**_SAMPLES, **OBSERVATION_SAMPLES}

_FIRST = (
    "media",
    "us-core-patient",
    "us-core-organization",
    "us-core-practitioner",
    "us-core-location",
    "us-core-practitionerrole",
    "us-core-medication",
    "us-core-specimen",
    "us-core-encounter",
    "us-core-servicerequest",
    "us-core-medicationrequest",
    "us-core-questionnaireresponse",
    "us-core-observation-lab",
    "us-core-simple-observation",
)
ORDER: tuple[str, ...] = (
    *_FIRST,
    *(s for s in SAMPLES if s not in _FIRST and s != "us-core-provenance"),
    "us-core-provenance",
)


def placeholders(body: Any) -> set[str]:
    """The `{slug}` placeholders a sample's references use."""
    found: set[str] = set()
    if isinstance(body, dict):
        for key, value in body.items():
            if key == "reference" and isinstance(value, str) and "{" in value:
                found.add(value[value.index("{") + 1 : value.index("}")])
            else:
                found |= placeholders(value)
    elif isinstance(body, list):
        for value in body:
            found |= placeholders(value)
    return found


def fill(body: Any, ids: dict[str, str]) -> Any:
    """A deep copy of `body` with every `{slug}` replaced by that resource's id."""
    if isinstance(body, dict):
        return {k: fill(v, ids) for k, v in body.items()}
    if isinstance(body, list):
        return [fill(v, ids) for v in body]
    if isinstance(body, str) and "{" in body:
        for slug, rid in ids.items():
            body = body.replace("{" + slug + "}", rid)
        return body
    return copy.deepcopy(body)
