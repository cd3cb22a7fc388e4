"""ADT events -> Patient, Encounter (status by event, location history, cancellations, event
order), AllergyIntolerance, Condition, Coverage, RelatedPerson, and A40 merges; searchable."""

from __future__ import annotations

import httpx
import orjson
import pytest

from app.db import Database
from app.hl7.mapping.common import resource_id
from app.hl7.service import Hl7Service
from app.settings import Settings
from app.store.repository import FhirRepository
from tests.hl7_messages import adt, er7, evn, msh, pid

_in1 = ["IN1", "1", "PLAN7", "PAYER1^^^NAIC", "Blue Shield of California"] + [""] * 32
_in1[8], _in1[12], _in1[13], _in1[36] = "GRP1", "20260101", "20261231", "POL-9"
IN1 = "|".join(_in1)
SYSTEM = "urn:dxf-bridge:v2:assigning-authority:GOODHOSP"
PATIENT = resource_id("Patient", SYSTEM, "MRN1001")
ENCOUNTER = resource_id("Encounter", SYSTEM, "V5001")


@pytest.fixture
def hl7(db: Database, settings: Settings) -> Hl7Service:
    return Hl7Service(db, settings)


async def read(hl7: Hl7Service, rtype: str, rid: str) -> dict:
    stored = await hl7.repo.read(rtype, rid)
    return orjson.loads(stored.content)


async def send(hl7: Hl7Service, message: bytes) -> None:
    result = await hl7.handle(message, "test")
    assert result.code == "AA", result.ack


async def test_a01_maps_patient_encounter_and_related_segments(hl7: Hl7Service):
    await send(
        hl7,
        adt(
            "A01",
            "C1",
            "20260301101500-0800",
            extra=(
                "AL1|1|DA|70618^Penicillin^RXNORM|SV|Hives",
                "DG1|1||I21.9^Acute myocardial infarction^I10C|||A",
                IN1,
                "NK1|1|NGUYEN^MINH|SPO^Spouse^HL70063|12 MAIN ST^^SACRAMENTO^CA^95814"
                "|^PRN^PH^^1^916^5550102",
            ),
        ),
    )
    patient = await read(hl7, "Patient", PATIENT)
    assert patient["identifier"][0]["value"] == "MRN1001"
    assert patient["identifier"][0]["system"] == SYSTEM
    assert patient["name"][0] == {"family": "NGUYEN", "given": ["LAN", "T"]}
    assert (patient["birthDate"], patient["gender"]) == ("1975-09-30", "female")
    assert patient["address"][0]["city"] == "SACRAMENTO"
    assert patient["telecom"][0] == {"system": "phone", "value": "+1 916 5550101", "use": "home"}
    assert patient["maritalStatus"]["coding"][0]["code"] == "M"
    assert patient["contact"][0]["name"]["family"] == "NGUYEN"
    encounter = await read(hl7, "Encounter", ENCOUNTER)
    assert encounter["status"] == "in-progress"
    assert encounter["class"]["code"] == "IMP"
    assert encounter["period"] == {"start": "2026-03-01T10:00:00-08:00"}
    assert encounter["identifier"][0]["value"] == "V5001"
    assert encounter["location"][0]["status"] == "active"
    assert encounter["participant"][0]["individual"]["display"] == "DR MARCUS WELBY"
    assert encounter["subject"] == {"reference": f"Patient/{PATIENT}"}
    allergy = await read(
        hl7, "AllergyIntolerance", resource_id("AllergyIntolerance", PATIENT, "70618")
    )
    assert allergy["criticality"] == "high" and allergy["category"] == ["medication"]
    condition = await read(hl7, "Condition", resource_id("Condition", ENCOUNTER, "I21.9"))
    assert condition["code"]["coding"][0]["system"] == "http://hl7.org/fhir/sid/icd-10-cm"
    related = (
        await hl7.repo.search(_criteria("RelatedPerson", f"patient=Patient/{PATIENT}"), count=5)
    ).resources
    assert len(related) == 1
    coverage = (
        await hl7.repo.search(_criteria("Coverage", f"beneficiary=Patient/{PATIENT}"), count=5)
    ).resources
    body = orjson.loads(coverage[0].content)
    assert body["payor"][0]["display"] == "Blue Shield of California"
    assert body["subscriberId"] == "POL-9"
    assert body["period"] == {"start": "2026-01-01", "end": "2026-12-31"}


def _criteria(rtype: str, query: str):
    from app.fhir.search.criteria import parse_criteria

    return parse_criteria(rtype, query)


async def test_replay_and_repeat_update_instead_of_duplicating(hl7: Hl7Service):
    await send(hl7, adt("A01", "C1", "20260301101500-0800"))
    await send(hl7, adt("A01", "C2", "20260301101500-0800"))  # same content, new control id
    patients = await hl7.repo.search(_criteria("Patient", f"identifier={SYSTEM}|MRN1001"), count=5)
    assert [p.id for p in patients.resources] == [PATIENT]
    assert patients.resources[0].version == 1  # nothing changed, so no new version
    encounters = await hl7.repo.search(
        _criteria("Encounter", f"subject=Patient/{PATIENT}"), count=5
    )
    assert len(encounters.resources) == 1


async def test_transfer_discharge_and_their_cancellations(hl7: Hl7Service):
    await send(hl7, adt("A01", "C1", "20260301101500-0800"))
    await send(hl7, adt("A02", "C2", "20260302090000-0800", location="ICU^7^B^GOODHOSP"))
    enc = await read(hl7, "Encounter", ENCOUNTER)
    assert [(x["location"]["display"], x["status"]) for x in enc["location"]] == [
        ("GOODHOSP 4W 401 A", "completed"),
        ("GOODHOSP ICU 7 B", "active"),
    ]
    assert enc["location"][0]["period"]["end"] == "2026-03-02T09:00:00-08:00"
    await send(hl7, adt("A12", "C3", "20260302093000-0800", location="4W^401^A^GOODHOSP"))
    enc = await read(hl7, "Encounter", ENCOUNTER)
    assert [(x["location"]["display"], x["status"]) for x in enc["location"]] == [
        ("GOODHOSP 4W 401 A", "active")
    ]
    await send(hl7, adt("A03", "C4", "20260305120000-0800", discharge="20260305115500"))
    enc = await read(hl7, "Encounter", ENCOUNTER)
    assert enc["status"] == "finished"
    assert enc["period"]["end"] == "2026-03-05T11:55:00-08:00"
    await send(hl7, adt("A13", "C5", "20260305130000-0800"))
    enc = await read(hl7, "Encounter", ENCOUNTER)
    assert enc["status"] == "in-progress" and "end" not in enc["period"]
    await send(hl7, adt("A11", "C6", "20260305140000-0800"))
    assert (await read(hl7, "Encounter", ENCOUNTER))["status"] == "cancelled"


async def test_a08_updates_only_what_it_carries_and_keeps_the_status(hl7: Hl7Service):
    await send(hl7, adt("A01", "C1", "20260301101500-0800"))
    sparse = "PID|1||MRN1001^^^GOODHOSP^MR||NGUYEN^LAN^T||||||||^PRN^PH^^1^916^5559999"
    await send(
        hl7,
        er7(
            msh("ADT^A08", "C2", when="20260301120000-0800"),
            evn("A08", "20260301120000-0800"),
            sparse,
            "PV1|1|I",
        ),
    )
    patient = await read(hl7, "Patient", PATIENT)
    assert patient["telecom"][0]["value"] == "+1 916 5559999"
    assert patient["birthDate"] == "1975-09-30"  # not in the A08: kept
    assert patient["address"][0]["city"] == "SACRAMENTO"


async def test_explicit_null_removes_a_value(hl7: Hl7Service):
    await send(hl7, adt("A01", "C1", "20260301101500-0800"))
    cleared = 'PID|1||MRN1001^^^GOODHOSP^MR||NGUYEN^LAN^T||""'
    await send(hl7, er7(msh("ADT^A31", "C2", when="20260301120000-0800"), cleared, "PV1|1|N"))
    assert "birthDate" not in await read(hl7, "Patient", PATIENT)


async def test_events_out_of_order_end_in_the_latest_state(hl7: Hl7Service):
    await send(hl7, adt("A01", "C1", "20260301101500-0800"))
    await send(hl7, adt("A03", "C3", "20260305120000-0800", discharge="20260305115500"))
    late = adt("A08", "C2", "20260302080000-0800", patient=pid(family="EARLIER"))
    await send(hl7, late)  # older than the discharge: acknowledged, but does not win
    enc = await read(hl7, "Encounter", ENCOUNTER)
    assert enc["status"] == "finished"
    assert (await read(hl7, "Patient", PATIENT))["name"][0]["family"] == "NGUYEN"


async def test_a28_and_a31_write_the_person_only(hl7: Hl7Service):
    await send(hl7, er7(msh("ADT^A28^ADT_A05", "P1"), pid(), "PV1|1|N"))
    await read(hl7, "Patient", PATIENT)
    found = await hl7.repo.search(_criteria("Encounter", f"subject=Patient/{PATIENT}"), count=5)
    assert found.resources == []


async def test_a40_merge_retires_the_old_patient_and_moves_its_references(hl7: Hl7Service):
    old = resource_id("Patient", SYSTEM, "MRN-OLD")
    await send(hl7, adt("A01", "C1", "20260301101500-0800", patient=pid(mrn="MRN-OLD")))
    await send(
        hl7,
        er7(
            msh("ADT^A40^ADT_A39", "M1", when="20260303101500-0800"),
            evn("A40", "20260303101500-0800"),
            pid(),
            "MRG|MRN-OLD^^^GOODHOSP^MR",
        ),
    )
    retired = await read(hl7, "Patient", old)
    assert retired["active"] is False
    assert retired["link"] == [
        {"other": {"reference": f"Patient/{PATIENT}"}, "type": "replaced-by"}
    ]
    survivor = await read(hl7, "Patient", PATIENT)
    assert {"other": {"reference": f"Patient/{old}"}, "type": "replaces"} in survivor["link"]
    assert any(i.get("use") == "old" and i["value"] == "MRN-OLD" for i in survivor["identifier"])
    encounter = await read(hl7, "Encounter", ENCOUNTER)
    assert encounter["subject"] == {"reference": f"Patient/{PATIENT}"}
    moved = await hl7.repo.search(_criteria("Encounter", f"subject=Patient/{PATIENT}"), count=5)
    assert [e.id for e in moved.resources] == [ENCOUNTER]
    # a resent merge changes nothing and is still acknowledged
    versions = (await hl7.repo.read("Patient", old)).version
    await send(
        hl7,
        er7(
            msh("ADT^A40^ADT_A39", "M2", when="20260303101500-0800"),
            evn("A40", "20260303101500-0800"),
            pid(),
            "MRG|MRN-OLD^^^GOODHOSP^MR",
        ),
    )
    assert (await hl7.repo.read("Patient", old)).version == versions


async def test_a40_refuses_a_self_merge(hl7: Hl7Service):
    result = await hl7.handle(er7(msh("ADT^A40", "M1"), pid(), "MRG|MRN1001^^^GOODHOSP^MR"), "test")
    assert result.code == "AE" and "MRG^3^1" in result.ack


async def test_mapped_resources_are_searchable_over_rest(
    hl7: Hl7Service, client: httpx.AsyncClient, auth: dict[str, str]
):
    await send(hl7, adt("A01", "C1", "20260301101500-0800"))
    found = await client.get("/Patient", params={"identifier": f"{SYSTEM}|MRN1001"}, headers=auth)
    assert [e["resource"]["id"] for e in found.json()["entry"]] == [PATIENT]
    found = await client.get(
        "/Encounter", params={"patient": PATIENT, "date": "ge2026-03-01"}, headers=auth
    )
    assert [e["resource"]["id"] for e in found.json()["entry"]] == [ENCOUNTER]
    found = await client.get(
        "/Encounter", params={"patient": PATIENT, "date": "lt2026-03-01"}, headers=auth
    )
    assert found.json().get("entry", []) == []


def test_identity_table_maps_assigning_authorities(settings: Settings):
    from app.hl7.mapping.datatypes import IdentitySettings, identifier
    from app.hl7.parse import DEFAULT_DELIMITERS, Rep

    ident = IdentitySettings(systems={"GOODHOSP": "https://goodhosp.example/mrn"})
    rep = Rep("M1^^^GOODHOSP^MR", DEFAULT_DELIMITERS)
    assert identifier(rep, ident)["system"] == "https://goodhosp.example/mrn"
    iso = Rep("M1^^^&2.16.840.1.113883.19.3.2.1&ISO^MR", DEFAULT_DELIMITERS)
    assert identifier(iso, ident)["system"] == "urn:oid:2.16.840.1.113883.19.3.2.1"


async def test_configured_identifier_system_is_used(db: Database, settings: Settings):
    tuned = settings.model_copy(
        update={"hl7_identifier_systems": {"GOODHOSP": "https://goodhosp.example/mrn"}}
    )
    service = Hl7Service(db, tuned)
    await send(service, adt("A01", "C1", "20260301101500-0800"))
    repo: FhirRepository = service.repo
    found = await repo.search(
        _criteria("Patient", "identifier=https://goodhosp.example/mrn|MRN1001"), count=5
    )
    assert len(found.resources) == 1


async def test_times_without_offset_use_the_facility_zone(db: Database, settings: Settings):
    eastern = Hl7Service(
        db, settings.model_copy(update={"hl7_default_timezone": "America/New_York"})
    )
    await send(eastern, adt("A01", "C1", "20260301101500-0800"))
    enc = await read(eastern, "Encounter", ENCOUNTER)
    assert enc["period"]["start"] == "2026-03-01T10:00:00-05:00"
