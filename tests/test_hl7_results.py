"""ORU^R01 -> DiagnosticReport, Observation (value per OBX-2), Specimen, notes; RDE^O11 ->
MedicationRequest; VXU^V04 -> Immunization; searches on the results."""

from __future__ import annotations

import base64

import httpx
import orjson
import pytest

from app.db import Database
from app.fhir.search.criteria import parse_criteria
from app.hl7.service import Hl7Service
from app.settings import Settings
from tests.hl7_messages import er7, msh, oru, pid

UCUM = "http://unitsofmeasure.org"


@pytest.fixture
def hl7(db: Database, settings: Settings) -> Hl7Service:
    return Hl7Service(db, settings)


async def observations(hl7: Hl7Service, query: str = "") -> list[dict]:
    page = await hl7.repo.search(parse_criteria("Observation", query), count=100)
    return [orjson.loads(r.content) for r in page.resources]


async def one_value(hl7: Hl7Service, obx: str) -> dict:
    result = await hl7.handle(oru("V1", obx), "test")
    assert result.code == "AA", result.ack
    (obs,) = await observations(hl7)
    return {
        k: v for k, v in obs.items() if k.startswith("value") or k in ("component", "extension")
    }


@pytest.mark.parametrize(
    ("obx", "expected"),
    [
        (
            "OBX|1|NM|2345-7^Glucose^LN||95|mg/dL^milligram per deciliter^UCUM|70-99|N|||F",
            {
                "valueQuantity": {
                    "value": 95,
                    "unit": "milligram per deciliter",
                    "system": UCUM,
                    "code": "mg/dL",
                }
            },
        ),
        (
            "OBX|1|NM|2345-7^Glucose^LN||5.45|mmol/L|||||F",
            {"valueQuantity": {"value": 5.45, "unit": "mmol/L", "system": UCUM, "code": "mmol/L"}},
        ),
        (
            "OBX|1|NM|2345-7^Glucose^LN||<15|mg/dL|||||F",
            {
                "valueQuantity": {
                    "value": 15,
                    "comparator": "<",
                    "unit": "mg/dL",
                    "system": UCUM,
                    "code": "mg/dL",
                }
            },
        ),
        (
            "OBX|1|SN|2345-7^Glucose^LN||>=^200|mg/dL|||||F",
            {
                "valueQuantity": {
                    "value": 200,
                    "comparator": ">=",
                    "unit": "mg/dL",
                    "system": UCUM,
                    "code": "mg/dL",
                }
            },
        ),
        (
            "OBX|1|SN|5048-4^Titer^LN||^1^:^128||||||F",
            {"valueRatio": {"numerator": {"value": 1}, "denominator": {"value": 128}}},
        ),
        (
            "OBX|1|SN|2345-7^Glucose^LN||^10^-^20|mg/dL|||||F",
            {
                "valueRange": {
                    "low": {"value": 10, "unit": "mg/dL", "system": UCUM, "code": "mg/dL"},
                    "high": {"value": 20, "unit": "mg/dL", "system": UCUM, "code": "mg/dL"},
                }
            },
        ),
        (
            "OBX|1|ST|8251-1^Comment^LN||Hemolyzed\\T\\icteric||||||F",
            {"valueString": "Hemolyzed&icteric"},
        ),
        (
            "OBX|1|TX|8251-1^Comment^LN||line one~line two||||||F",
            {"valueString": "line one\nline two"},
        ),
        ("OBX|1|FT|8251-1^Comment^LN||a\\.br\\b||||||F", {"valueString": "a\nb"}),
        (
            "OBX|1|CWE|600-7^Culture^LN||3092008^Staphylococcus aureus^SCT||||||F",
            {
                "valueCodeableConcept": {
                    "coding": [
                        {
                            "system": "http://snomed.info/sct",
                            "code": "3092008",
                            "display": "Staphylococcus aureus",
                        }
                    ],
                    "text": "Staphylococcus aureus",
                }
            },
        ),
        (
            "OBX|1|CE|600-7^Culture^LN||N^Negative^HL70078||||||F",
            {
                "valueCodeableConcept": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/v2-0078",
                            "code": "N",
                            "display": "Negative",
                        }
                    ],
                    "text": "Negative",
                }
            },
        ),
        ("OBX|1|DT|11778-8^Delivery date^LN||20260401||||||F", {"valueDateTime": "2026-04-01"}),
        (
            "OBX|1|TS|11778-8^Delivery date^LN||202604011230-0700||||||F",
            {"valueDateTime": "2026-04-01T12:30:00-07:00"},
        ),
        ("OBX|1|TM|11778-8^Time^LN||0730||||||F", {"valueTime": "07:30:00"}),
        (
            "OBX|1|NR|2345-7^Glucose^LN||70^99||||||F",
            {"valueRange": {"low": {"value": 70}, "high": {"value": 99}}},
        ),
        (
            "OBX|1|ED|11502-2^Report^LN||LAB^TEXT^PLAIN^Base64^aGVsbG8=||||||F",
            {
                "extension": [
                    {
                        "url": "http://hl7.org/fhir/5.0/StructureDefinition/extension-Observation.value",
                        "valueAttachment": {"contentType": "text/plain", "data": "aGVsbG8="},
                    }
                ]
            },
        ),
    ],
)
async def test_obx_value_types(hl7: Hl7Service, obx: str, expected: dict):
    assert await one_value(hl7, obx) == expected


async def test_report_observations_specimen_and_notes(hl7: Hl7Service):
    message = oru(
        "L1",
        "OBX|1|NM|2345-7^Glucose^LN||182|mg/dL^^UCUM|70-99|H|||F|||20260302083000-0800",
        "NTE|1|L|Fasting not confirmed",
        "OBX|2|NM|2951-2^Sodium^LN||140|mmol/L^^UCUM|135-145|N|||P",
    )
    result = await hl7.handle(message, "test")
    assert result.code == "AA"
    page = await hl7.repo.search(parse_criteria("DiagnosticReport", ""), count=5)
    (report,) = [orjson.loads(r.content) for r in page.resources]
    assert report["status"] == "final"
    assert report["code"]["coding"][0] == {
        "system": "http://loinc.org",
        "code": "24323-8",
        "display": "Comprehensive metabolic panel",
    }
    assert report["category"][0]["coding"][0]["code"] == "LAB"
    assert report["effectiveDateTime"] == "2026-03-02T08:30:00-08:00"
    assert report["issued"] == "2026-03-02T09:30:00-08:00"
    assert {i["type"]["coding"][0]["code"]: i["value"] for i in report["identifier"]} == {
        "PLAC": "PLC100",
        "FILL": "FIL200",
    }
    assert len(report["result"]) == 2 and len(report["specimen"]) == 1
    glucose, sodium = sorted(await observations(hl7), key=lambda o: o["code"]["coding"][0]["code"])
    assert glucose["referenceRange"][0]["low"]["value"] == 70
    assert glucose["referenceRange"][0]["text"] == "70-99"
    assert glucose["interpretation"][0]["coding"][0]["code"] == "H"
    assert glucose["note"] == [{"text": "Fasting not confirmed"}]
    assert glucose["status"] == "final" and sodium["status"] == "preliminary"
    assert glucose["category"][0]["coding"][0]["code"] == "laboratory"
    specimen = orjson.loads(
        (await hl7.repo.read("Specimen", report["specimen"][0]["reference"].split("/")[1])).content
    )
    assert specimen["type"]["coding"][0]["code"] == "119297000"
    assert specimen["collection"]["collectedDateTime"] == "2026-03-02T08:15:00-08:00"
    # the same report again, corrected: same resources, new values
    corrected = message.replace(b"||182|", b"||180|").replace(b"|L1|", b"|L2|")
    assert (await hl7.handle(corrected, "test")).code == "AA"
    values = sorted(o["valueQuantity"]["value"] for o in await observations(hl7))
    assert values == [140, 180]


async def test_uncoded_text_lines_become_the_report_text(hl7: Hl7Service):
    message = oru(
        "N1", "OBX|1|TX|||Impression: normal study||||||F", "OBX|2|TX|||No acute findings||||||F"
    )
    assert (await hl7.handle(message, "test")).code == "AA"
    page = await hl7.repo.search(parse_criteria("DiagnosticReport", ""), count=5)
    report = orjson.loads(page.resources[0].content)
    text = base64.b64decode(report["presentedForm"][0]["data"]).decode()
    assert text == "Impression: normal study\nNo acute findings"
    assert await observations(hl7) == []


@pytest.mark.parametrize(
    ("obx", "code"),
    [
        ("OBX|1|NM|2345-7^Glucose^LN||high|mg/dL|||||F", "102"),
        ("OBX|1|SN|2345-7^Glucose^LN||^test|mg/dL|||||F", "102"),
        ("OBX|1|DT|2345-7^Glucose^LN||20261340||||||F", "102"),
        ("OBX|1|NM|2345-8^Glucose^LN||5|mg/dL|||||F", "103"),  # bad LOINC check digit
        ("OBX|1|NM|^Glucose^LN||5|mg/dL|||||F", "101"),
    ],
)
async def test_bad_results_are_refused_whole(hl7: Hl7Service, obx: str, code: str):
    result = await hl7.handle(oru("B1", obx), "test")
    assert result.code == "AE"
    assert f"|{code}^" in result.ack and "|OBX^" in result.ack
    assert await observations(hl7) == []


async def test_results_are_searchable_by_patient_code_and_category(
    hl7: Hl7Service, client: httpx.AsyncClient, auth: dict[str, str]
):
    await hl7.handle(oru("S1", "OBX|1|NM|2345-7^Glucose^LN||95|mg/dL|||||F"), "test")
    (obs,) = await observations(hl7)
    patient = obs["subject"]["reference"].split("/")[1]
    params = {
        "patient": patient,
        "code": "http://loinc.org|2345-7",
        "category": "http://terminology.hl7.org/CodeSystem/observation-category|laboratory",
    }
    found = await client.get("/Observation", params=params, headers=auth)
    assert [e["resource"]["id"] for e in found.json()["entry"]] == [obs["id"]]
    found = await client.get(
        "/Observation", params={**params, "code": "http://loinc.org|2951-2"}, headers=auth
    )
    assert found.json().get("entry", []) == []


RDE = (
    msh("RDE^O11^RDE_O11", "RX1", sender="PHARM", facility="GOODHOSP"),
    pid(),
    "ORC|NW|ORD77^EHR|FIL77^PHARM||||||20260301110000-0800|||1234^WELBY^MARCUS^^^DR",
    "RXE|^Q6H^^20260301120000-0800^20260308120000-0800|197361^Amlodipine 5 MG Oral Tablet^RXNORM"
    "|5||mg^milligram^UCUM||Take with water|||30|TAB^tablet^HL70292|2",
    "RXR|PO^Oral^HL70162",
)


async def test_rde_maps_a_medication_request(hl7: Hl7Service):
    assert (await hl7.handle(er7(*RDE), "test")).code == "AA"
    page = await hl7.repo.search(parse_criteria("MedicationRequest", ""), count=5)
    (request,) = [orjson.loads(r.content) for r in page.resources]
    assert request["status"] == "active" and request["intent"] == "order"
    assert request["medicationCodeableConcept"]["coding"][0] == {
        "system": "http://www.nlm.nih.gov/research/umls/rxnorm",
        "code": "197361",
        "display": "Amlodipine 5 MG Oral Tablet",
    }
    assert request["authoredOn"] == "2026-03-01T11:00:00-08:00"
    assert request["requester"]["identifier"]["value"] == "1234"
    dosage = request["dosageInstruction"][0]
    assert dosage["doseAndRate"][0]["doseQuantity"] == {
        "value": 5,
        "unit": "milligram",
        "system": UCUM,
        "code": "mg",
    }
    assert dosage["timing"]["repeat"]["frequency"] == 1
    assert (
        dosage["timing"]["repeat"]["period"] == 6
        and dosage["timing"]["repeat"]["periodUnit"] == "h"
    )
    assert dosage["timing"]["repeat"]["boundsPeriod"]["end"] == "2026-03-08T12:00:00-08:00"
    assert dosage["route"]["coding"][0]["code"] == "PO"
    assert dosage["text"] == "Take with water"
    assert request["dispenseRequest"]["quantity"]["value"] == 30
    assert request["dispenseRequest"]["numberOfRepeatsAllowed"] == 2
    # a discontinue for the same order updates it
    stop = list(RDE)
    stop[0] = msh("RDE^O11^RDE_O11", "RX2", sender="PHARM", facility="GOODHOSP")
    stop[2] = stop[2].replace("ORC|NW|", "ORC|DC|")
    assert (await hl7.handle(er7(*stop), "test")).code == "AA"
    page = await hl7.repo.search(parse_criteria("MedicationRequest", ""), count=5)
    assert [orjson.loads(r.content)["status"] for r in page.resources] == ["stopped"]


async def test_vxu_maps_an_immunization(hl7: Hl7Service):
    message = er7(
        msh("VXU^V04^VXU_V04", "VX1", sender="CAIR", facility="CLINIC"),
        pid(),
        "ORC|RE||IZ-9^CLINIC",
        "RXA|0|1|20260215||208^COVID-19 mRNA^CVX|0.3|mL^^UCUM||||||||LOT123|20261231"
        "|PFR^Pfizer^MVX|||CP",
        "RXR|IM^Intramuscular^HL70162|LA^Left arm^HL70163",
    )
    assert (await hl7.handle(message, "test")).code == "AA"
    page = await hl7.repo.search(parse_criteria("Immunization", ""), count=5)
    (imm,) = [orjson.loads(r.content) for r in page.resources]
    assert imm["vaccineCode"]["coding"][0]["system"] == "http://hl7.org/fhir/sid/cvx"
    assert imm["occurrenceDateTime"] == "2026-02-15" and imm["status"] == "completed"
    assert imm["lotNumber"] == "LOT123" and imm["doseQuantity"]["value"] == 0.3
    assert imm["route"]["coding"][0]["code"] == "IM"


async def test_rde_with_components_references_a_medication(hl7: Hl7Service):
    mixture = list(RDE)
    mixture[3] = mixture[3].replace(
        "|mg^milligram^UCUM||", "|mg^milligram^UCUM|IVSOLN^IV solution^HL70292|"
    )
    mixture.insert(5, "RXC|B|313002^Sodium chloride 0.9%^RXNORM|250|mL^^UCUM")
    mixture.insert(6, "RXC|A|1807627^Potassium chloride^RXNORM|20|meq^^UCUM")
    assert (await hl7.handle(er7(*mixture), "test")).code == "AA"
    (request,) = [
        orjson.loads(r.content)
        for r in (await hl7.repo.search(parse_criteria("MedicationRequest", ""), count=5)).resources
    ]
    assert "medicationCodeableConcept" not in request
    medication_id = request["medicationReference"]["reference"].split("/")[1]
    medication = orjson.loads((await hl7.repo.read("Medication", medication_id)).content)
    assert medication["code"]["coding"][0]["code"] == "197361"
    assert medication["form"]["coding"][0]["code"] == "IVSOLN"
    assert [i["itemCodeableConcept"]["coding"][0]["code"] for i in medication["ingredient"]] == [
        "313002",
        "1807627",
    ]
    assert medication["ingredient"][0]["strength"]["numerator"]["value"] == 250


async def test_results_do_not_overwrite_what_adt_registered(hl7: Hl7Service):
    """ADT is the authority on Patient and Encounter: a lab result naming the patient (with its
    own, older copy of the demographics) neither changes them nor blocks a later discharge."""
    from tests.hl7_messages import adt, pv1

    assert (await hl7.handle(adt("A01", "C1", "20260301100000-0800"), "test")).code == "AA"
    lab = er7(
        msh("ORU^R01", "LAB9", when="20260301120000-0800", sender="LABSYS", facility="LAB"),
        pid(family="OLDNAME"),
        pv1(location="LAB^1^1^GOODHOSP"),
        "OBR|1||F9^LAB|2345-7^Glucose^LN|||20260301113000-0800",
        "OBX|1|NM|2345-7^Glucose^LN||95|mg/dL|||||F",
    )
    assert (await hl7.handle(lab, "test")).code == "AA"
    # the discharge happened at 11:00, before the result, and arrives after it
    assert (
        await hl7.handle(
            adt("A03", "C2", "20260301110000-0800", discharge="20260301110000"), "test"
        )
    ).code == "AA"
    patients = [
        orjson.loads(r.content)
        for r in (await hl7.repo.search(parse_criteria("Patient", ""), count=5)).resources
    ]
    assert [p["name"][0]["family"] for p in patients] == ["NGUYEN"]
    (encounter,) = [
        orjson.loads(r.content)
        for r in (await hl7.repo.search(parse_criteria("Encounter", ""), count=5)).resources
    ]
    assert encounter["status"] == "finished"
    assert [x["location"]["display"] for x in encounter["location"]] == ["GOODHOSP 4W 401 A"]
    (obs,) = await observations(hl7)
    assert obs["encounter"] == {"reference": f"Encounter/{encounter['id']}"}
