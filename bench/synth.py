"""Seeded synthetic clinical data, Synthea-like in shape, as FHIR R4 transaction Bundles.

Each patient is one transaction Bundle: the Patient, 6 to 12 Encounters (ambulatory and
inpatient, at shared Organizations and Locations, with shared Practitioners), per Encounter
five vital-sign Observations and two to six laboratory Observations (LOINC, UCUM), now and then
a Condition (ICD-10-CM), a Procedure (CPT) and a MedicationRequest (RxNorm). That is about 100
resources per patient, so 10,000 patients make a million resources.

Everything is random but reproducible from the seed; names, identifiers and dates are made up.
Nothing here is real patient data.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
MRN_SYSTEM = "urn:oid:2.16.840.1.113883.3.dxf.bench.mrn"

# (code, display, unit, mean, spread)
VITALS = [
    ("8867-4", "Heart rate", "/min", 75, 12),
    ("8480-6", "Systolic blood pressure", "mm[Hg]", 124, 15),
    ("8462-4", "Diastolic blood pressure", "mm[Hg]", 79, 9),
    ("29463-7", "Body weight", "kg", 78, 16),
    ("8310-5", "Body temperature", "Cel", 36.8, 0.4),
]
LABS = [
    ("718-7", "Hemoglobin", "g/dL", 14, 1.5),
    ("2345-7", "Glucose", "mg/dL", 100, 20),
    ("2160-0", "Creatinine", "mg/dL", 1.0, 0.25),
    ("6690-2", "Leukocytes", "10*3/uL", 7, 2),
    ("777-3", "Platelets", "10*3/uL", 250, 50),
    ("2951-2", "Sodium", "mmol/L", 140, 3),
    ("2823-3", "Potassium", "mmol/L", 4.2, 0.4),
    ("4548-4", "Hemoglobin A1c", "%", 5.8, 0.8),
    ("2093-3", "Cholesterol", "mg/dL", 190, 35),
    ("1751-7", "Albumin", "g/dL", 4.2, 0.4),
]
CONDITIONS = [
    ("E11.9", "Type 2 diabetes mellitus without complications"),
    ("I10", "Essential (primary) hypertension"),
    ("J45.909", "Unspecified asthma, uncomplicated"),
    ("E78.5", "Hyperlipidemia, unspecified"),
    ("M54.5", "Low back pain"),
    ("F41.1", "Generalized anxiety disorder"),
]
PROCEDURES = [("99213", "Office visit"), ("93000", "Electrocardiogram"), ("36415", "Venipuncture")]
MEDICATIONS = [
    ("860975", "metformin 500 MG Oral Tablet"),
    ("314076", "lisinopril 10 MG Oral Tablet"),
    ("617312", "atorvastatin 20 MG Oral Tablet"),
    ("745679", "albuterol 0.09 MG/ACTUAT inhaler"),
]
_SYLLABLES = ("ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "ba", "do", "fe", "gi", "ha")


@dataclass(frozen=True)
class Shared:
    """Resources many patients reference, loaded once with fixed ids."""

    organizations: int = 20
    locations: int = 50
    practitioners: int = 300

    def bundle(self) -> dict[str, Any]:
        entries = []
        for i in range(self.organizations):
            entries.append(_put("Organization", f"bench-org-{i}", {"name": f"Clinic {i}"}))
        for i in range(self.locations):
            body = {
                "name": f"Room {i}",
                "managingOrganization": _ref(f"Organization/bench-org-{i % self.organizations}"),
            }
            entries.append(_put("Location", f"bench-loc-{i}", body))
        for i in range(self.practitioners):
            body = {"name": [{"family": f"Doctor{i}", "given": ["Pat"]}]}
            entries.append(_put("Practitioner", f"bench-prac-{i}", body))
        return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def _put(rtype: str, rid: str, body: dict[str, Any]) -> dict[str, Any]:
    return {
        "resource": {"resourceType": rtype, "id": rid, **body},
        "request": {"method": "PUT", "url": f"{rtype}/{rid}"},
    }


def _ref(target: str) -> dict[str, str]:
    return {"reference": target}


def _word(rng: random.Random, lo: int = 2, hi: int = 4) -> str:
    return "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(lo, hi))).capitalize()


def _instant(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class Generator:
    def __init__(self, seed: int = 2026, shared: Shared | None = None) -> None:
        self.rng = random.Random(seed)
        self.shared = shared or Shared()
        self.families = [_word(self.rng) for _ in range(2000)]
        self.count = 0

    def patient_bundle(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """(transaction Bundle, facts for queries: mrn, family, birthDate, codes)."""
        rng = self.rng
        self.count += 1
        entries: list[dict[str, Any]] = []
        pid = f"urn:uuid:{uuid.UUID(int=rng.getrandbits(128))}"
        family = rng.choice(self.families)
        birth = datetime(1930, 1, 1, tzinfo=UTC) + timedelta(days=rng.randrange(0, 32000))
        mrn = f"B{self.count:08d}"
        patient = {
            "resourceType": "Patient",
            "identifier": [{"system": MRN_SYSTEM, "value": mrn}],
            "name": [{"family": family, "given": [_word(rng, 2, 3)]}],
            "gender": rng.choice(["female", "male"]),
            "birthDate": birth.date().isoformat(),
            "address": [
                {"city": _word(rng), "state": "CA", "postalCode": f"9{rng.randrange(10000):04d}"}
            ],
            "managingOrganization": _ref(
                f"Organization/bench-org-{rng.randrange(self.shared.organizations)}"
            ),
        }
        entries.append(_post(pid, patient))
        codes: set[str] = set()
        start = datetime(2015, 1, 1, tzinfo=UTC)
        for _ in range(rng.randint(6, 12)):
            when = start + timedelta(minutes=rng.randrange(0, 60 * 24 * 365 * 10))
            eid = f"urn:uuid:{uuid.UUID(int=rng.getrandbits(128))}"
            prac = f"Practitioner/bench-prac-{rng.randrange(self.shared.practitioners)}"
            inpatient = rng.random() < 0.15
            encounter = {
                "resourceType": "Encounter",
                "status": "finished",
                "class": {
                    "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                    "code": "IMP" if inpatient else "AMB",
                },
                "subject": _ref(pid),
                "participant": [{"individual": _ref(prac)}],
                "period": {
                    "start": _instant(when),
                    "end": _instant(
                        when + timedelta(hours=rng.randint(48, 120) if inpatient else 1)
                    ),
                },
                "location": [
                    {"location": _ref(f"Location/bench-loc-{rng.randrange(self.shared.locations)}")}
                ],
                "serviceProvider": _ref(
                    f"Organization/bench-org-{rng.randrange(self.shared.organizations)}"
                ),
            }
            entries.append(_post(eid, encounter))
            for code, display, unit, mean, spread in VITALS:
                entries.append(
                    _post(
                        None,
                        self._observation(
                            pid, eid, prac, when, "vital-signs", code, display, unit, mean, spread
                        ),
                    )
                )
            for code, display, unit, mean, spread in rng.sample(LABS, rng.randint(2, 6)):
                codes.add(code)
                entries.append(
                    _post(
                        None,
                        self._observation(
                            pid, eid, prac, when, "laboratory", code, display, unit, mean, spread
                        ),
                    )
                )
            if rng.random() < 0.5:
                code, display = rng.choice(CONDITIONS)
                entries.append(
                    _post(
                        None,
                        {
                            "resourceType": "Condition",
                            "clinicalStatus": {
                                "coding": [
                                    {
                                        "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                        "code": "active",
                                    }
                                ]
                            },
                            "code": {
                                "coding": [
                                    {
                                        "system": "http://hl7.org/fhir/sid/icd-10-cm",
                                        "code": code,
                                        "display": display,
                                    }
                                ]
                            },
                            "subject": _ref(pid),
                            "encounter": _ref(eid),
                            "recordedDate": _instant(when),
                        },
                    )
                )
            if rng.random() < 0.3:
                code, display = rng.choice(PROCEDURES)
                entries.append(
                    _post(
                        None,
                        {
                            "resourceType": "Procedure",
                            "status": "completed",
                            "code": {
                                "coding": [
                                    {
                                        "system": "http://www.ama-assn.org/go/cpt",
                                        "code": code,
                                        "display": display,
                                    }
                                ]
                            },
                            "subject": _ref(pid),
                            "encounter": _ref(eid),
                            "performedDateTime": _instant(when),
                        },
                    )
                )
            if rng.random() < 0.5:
                code, display = rng.choice(MEDICATIONS)
                entries.append(
                    _post(
                        None,
                        {
                            "resourceType": "MedicationRequest",
                            "status": "active",
                            "intent": "order",
                            "medicationCodeableConcept": {
                                "coding": [
                                    {
                                        "system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                                        "code": code,
                                        "display": display,
                                    }
                                ]
                            },
                            "subject": _ref(pid),
                            "encounter": _ref(eid),
                            "authoredOn": _instant(when),
                            "requester": _ref(prac),
                        },
                    )
                )
        facts = {
            "mrn": mrn,
            "family": family,
            "birthDate": patient["birthDate"],
            "lab_codes": sorted(codes),
            "resources": len(entries),
        }
        return {"resourceType": "Bundle", "type": "transaction", "entry": entries}, facts

    def _observation(
        self,
        pid: str,
        eid: str,
        prac: str,
        when: datetime,
        category: str,
        code: str,
        display: str,
        unit: str,
        mean: float,
        spread: float,
    ) -> dict[str, Any]:
        value = round(self.rng.gauss(mean, spread), 1)
        return {
            "resourceType": "Observation",
            "status": "final",
            "category": [{"coding": [{"system": CATEGORY, "code": category}]}],
            "code": {"coding": [{"system": LOINC, "code": code, "display": display}]},
            "subject": _ref(pid),
            "encounter": _ref(eid),
            "performer": [_ref(prac)],
            "effectiveDateTime": _instant(when),
            "valueQuantity": {"value": value, "unit": unit, "system": UCUM, "code": unit},
        }


def _post(full_url: str | None, resource: dict[str, Any]) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "resource": resource,
        "request": {"method": "POST", "url": resource["resourceType"]},
    }
    if full_url is not None:
        entry["fullUrl"] = full_url
    return entry
