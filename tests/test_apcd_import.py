"""APCD-CDL import into the FHIR store, on every backend (synthetic data only)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
import uuid
from typing import Any

import orjson
import pytest
from sqlalchemy import func, select

from app.apcd import importer as importer_module
from app.apcd.importer import ApcdImporter, ImportOptions
from app.apcd.links import parse_link_rules
from app.apcd.mapping import Mapper
from app.apcd.report import write_report
from app.auth.policy import AccessPolicy, ScopeGrant
from app.db import Database
from app.fhir.models import validate_resource
from app.store.repository import FhirRepository
from app.store.tables import apcd_claim, apcd_import, metadata, resource, resource_history
from tests.apcd_files import NPI_A, NPI_B, NPI_C, cdl_file, medical, member, pharmacy, record
from tests.conftest import FHIR_BASE

FULL = AccessPolicy((ScopeGrant("system", "*", frozenset("cruds")),))


def importer(db: Database, **options: Any) -> ApcdImporter:
    repo = FhirRepository(db, policy=FULL, base_url=FHIR_BASE)
    return ApcdImporter(repo, ImportOptions(**options))


async def stored(db: Database, rtype: str) -> list[dict[str, Any]]:
    async with db.read() as conn:
        rows = await conn.execute(
            select(resource.c.content).where(
                resource.c.res_type == rtype, resource.c.deleted.is_(False)
            )
        )
        return [orjson.loads(r.content) for r in rows]


async def count(db: Database, table: Any) -> int:
    async with db.read() as conn:
        return int(await conn.scalar(select(func.count()).select_from(table)))


async def versions(db: Database) -> dict[str, int]:
    async with db.read() as conn:
        rows = await conn.execute(
            select(resource.c.res_type, resource.c.res_id, resource.c.version)
        )
        return {f"{r.res_type}/{r.res_id}": r.version for r in rows}


async def test_members_become_one_patient_with_a_coverage_per_span(db, tmp_path, client, auth):
    path = cdl_file(
        tmp_path / "me.txt",
        "ME",
        [member("M1", "20240101", f051="20240630"), member("M1", "20240701"), member("M2")],
    )
    result = await importer(db).import_file(path)
    assert (result.status, result.loaded, result.rejected) == ("imported", 3, 0)
    patients = await stored(db, "Patient")
    assert len(patients) == 2
    coverages = await stored(db, "Coverage")
    assert len(coverages) == 3
    m1 = next(p for p in patients if p["identifier"][0]["value"] == "M1")
    assert m1["gender"] == "female" and m1["birthDate"] == "1980-02-14"
    assert m1["name"][0]["family"] == "Testperson"
    assert m1["meta"]["tag"][0]["code"] == "apcd-cdl"
    spans = sorted(
        c["period"].get("end", "")
        for c in coverages
        if c["beneficiary"]["reference"].endswith(m1["id"])
    )
    assert spans == ["", "2024-06-30"]
    system = m1["identifier"][0]["system"]
    assert system == "urn:dxf-bridge:apcd:SUB01:PAY01:member"
    found = await client.get("/Patient", params={"identifier": f"{system}|M1"}, headers=auth)
    assert [e["resource"]["id"] for e in found.json()["entry"]] == [m1["id"]]
    cov = await client.get("/Coverage", params={"beneficiary": f"Patient/{m1['id']}"}, headers=auth)
    assert len(cov.json()["entry"]) == 2


async def test_medical_claims_map_to_eob_encounter_conditions_procedures(
    db, tmp_path, client, auth
):
    inpatient = [
        medical(
            "IP1",
            line,
            f032="111",
            f025="20240301",
            f029="20240304",
            f031="01",
            f034="R079",
            f038="I10",
            f062="Y",
            f063="N",
            f087="0120",
            f088=code,
            f093="02703DZ",
            f154=NPI_C,
            f120="20240304",
        )
        for line, code in ((1, "99223"), (2, "3044F"))
    ]
    professional = [medical("PR1", 1, f033="11", f088="93000", f089="25")]
    path = cdl_file(tmp_path / "mc.txt", "MC", inpatient + professional)
    result = await importer(db).import_file(path)
    assert (result.loaded, result.rejected) == (3, 0)
    eobs = {e["identifier"][0]["value"]: e for e in await stored(db, "ExplanationOfBenefit")}
    ip, pr = eobs["IP1"], eobs["PR1"]
    assert ip["type"]["coding"][0]["code"] == "institutional"
    assert ip["subType"]["coding"][0]["code"] == "inpatient"
    assert "Inpatient-Institutional" in ip["meta"]["profile"][0]
    assert [i["sequence"] for i in ip["item"]] == [1, 2]
    assert ip["item"][0]["revenue"]["coding"][0]["code"] == "0120"
    assert ip["billablePeriod"] == {"start": "2024-03-01", "end": "2024-03-04"}
    principal = ip["diagnosis"][0]
    assert principal["diagnosisCodeableConcept"]["coding"][0]["code"] == "E119"
    assert principal["onAdmission"]["coding"][0]["code"] == "Y"
    assert ip["procedure"][0]["procedureCodeableConcept"]["coding"][0]["code"] == "02703DZ"
    info = {i["category"]["coding"][0]["code"] for i in ip["supportingInfo"]}
    assert {"typeofbill", "admissionperiod", "discharge-status"} <= info
    assert {m["role"]["coding"][0]["code"] for m in ip["careTeam"]} == {"rendering", "attending"}
    assert ip["payment"]["amount"] == {"value": 160.0, "currency": "USD"}
    assert pr["type"]["coding"][0]["code"] == "professional"
    assert pr["item"][0]["locationCodeableConcept"]["coding"][0]["code"] == "11"
    assert pr["provider"]["identifier"]["value"] == NPI_B

    encounters = {e["identifier"][0]["value"]: e for e in await stored(db, "Encounter")}
    assert encounters["IP1"]["class"]["code"] == "IMP"
    assert encounters["IP1"]["status"] == "finished"
    assert encounters["IP1"]["period"] == {"start": "2024-03-01", "end": "2024-03-04"}
    assert encounters["PR1"]["class"]["code"] == "AMB"
    conditions = await stored(db, "Condition")
    assert sorted(c["code"]["coding"][0]["code"] for c in conditions) == [
        "E119",
        "E119",
        "I10",
        "R079",
    ]
    procedures = sorted(p["code"]["coding"][0]["code"] for p in await stored(db, "Procedure"))
    assert procedures == ["02703DZ", "93000"]  # E/M 99223 is the encounter, not a procedure
    (obs,) = await stored(db, "Observation")
    assert obs["code"]["coding"][0]["code"] == "3044F"
    assert obs["effectiveDateTime"] == "2024-03-01"

    # every produced resource validates, and the normal searches find them
    for rtype in ("ExplanationOfBenefit", "Encounter", "Condition", "Procedure", "Observation"):
        for body in await stored(db, rtype):
            validate_resource(body)
    patient_id = ip["patient"]["reference"].split("/")[1]
    (patient,) = await stored(db, "Patient")  # the claim's member, described by the claim
    assert patient["id"] == patient_id
    for rtype in ("ExplanationOfBenefit", "Encounter", "Condition"):
        answer = await client.get(f"/{rtype}", params={"patient": patient_id}, headers=auth)
        assert answer.status_code == 200 and len(answer.json()["entry"]) >= 2, rtype
    by_code = await client.get(
        "/Condition", params={"code": "http://hl7.org/fhir/sid/icd-10-cm|I10"}, headers=auth
    )
    assert len(by_code.json()["entry"]) == 1


async def test_pharmacy_dental_and_provider_files(db, tmp_path):
    pc = [pharmacy("RX1", member_id="M1")]
    dc = [
        record(
            "DC",
            f005="DN1",
            f006=1,
            f007=0,
            f012="20240320",
            f013="20240301",
            f016="D2391",
            f017="3,14",
            f019="MO",
            f022="75.00",
            f034="M1",
        )
    ]
    pv = [
        record(
            "PV",
            f003="P1",
            f005=NPI_A,
            f006="1",
            f010="Sam",
            f012="Example",
            f014="2 Test Ave",
            f015="Fresno",
            f016="CA",
            f017="93721",
            f020="207Q00000X",
        ),
        record("PV", f003="P2", f005=NPI_B, f006="2", f012="Example Clinic"),
    ]
    imp = importer(db)
    for ftype, lines in (("PC", pc), ("DC", dc), ("PV", pv)):
        result = await imp.import_file(cdl_file(tmp_path / f"{ftype}.txt", ftype, lines))
        assert (result.status, result.rejected) == ("imported", 0), result
    (dispense,) = await stored(db, "MedicationDispense")
    assert dispense["medicationCodeableConcept"]["coding"][0] == {
        "system": "http://hl7.org/fhir/sid/ndc",
        "code": "00093715601",
    }
    assert dispense["daysSupply"]["value"] == 30
    assert dispense["whenHandedOver"] == "2024-03-05"
    assert dispense["contained"][0]["requester"]["identifier"]["value"] == NPI_A
    eobs = {e["type"]["coding"][0]["code"]: e for e in await stored(db, "ExplanationOfBenefit")}
    assert set(eobs) == {"pharmacy", "oral"}
    oral = eobs["oral"]["item"][0]
    assert oral["bodySite"]["coding"][0]["code"] == "3"
    assert [s["coding"][0]["code"] for s in oral["subSite"]] == ["M", "O"]
    assert eobs["oral"]["supportingInfo"][0]["code"]["coding"][0]["code"] == "14"
    (prac,) = await stored(db, "Practitioner")
    assert prac["identifier"][0]["value"] == NPI_A
    (role,) = await stored(db, "PractitionerRole")
    assert role["specialty"][0]["coding"][0]["code"] == "207Q00000X"
    assert role["location"][0]["reference"].startswith("Location/")
    orgs = {o["name"] for o in await stored(db, "Organization")}
    assert "Example Clinic" in orgs
    for rtype in ("MedicationDispense", "ExplanationOfBenefit", "Practitioner", "Location"):
        for body in await stored(db, rtype):
            validate_resource(body)


async def test_replacement_supersedes_and_void_marks_entered_in_error(db, tmp_path):
    imp = importer(db)
    original = [medical("C1", 1, f088="93000"), medical("C1", 2, f088="71046")]
    await imp.import_file(cdl_file(tmp_path / "a.txt", "MC", original))
    assert len(await stored(db, "Procedure")) == 2
    eob_before = (await stored(db, "ExplanationOfBenefit"))[0]

    replacement = [medical("C1", 1, version=1, f088="93000", f125="95.00", f160="R")]
    result = await imp.import_file(cdl_file(tmp_path / "b.txt", "MC", replacement))
    assert result.deleted == 1  # line 2's Procedure is gone from the latest picture
    (eob,) = await stored(db, "ExplanationOfBenefit")
    assert eob["id"] == eob_before["id"]
    assert eob["meta"]["versionId"] == "2"
    assert [i["sequence"] for i in eob["item"]] == [1]
    assert eob["payment"]["amount"]["value"] == 95.0
    assert len(await stored(db, "Procedure")) == 1
    async with db.read() as conn:  # history keeps the earlier picture
        old = await conn.scalar(
            select(resource_history.c.content).where(
                resource_history.c.res_id == eob["id"], resource_history.c.version == 1
            )
        )
    assert len(orjson.loads(old)["item"]) == 2

    stale = [medical("C1", 1, version=0, f088="93000", f125="1.00")]
    result = await imp.import_file(cdl_file(tmp_path / "c.txt", "MC", stale))
    assert result.superseded == 1 and result.created == result.updated == 0

    void = [medical("C1", 1, version=2, f088="93000", f125="95.00", f160="V")]
    await imp.import_file(cdl_file(tmp_path / "d.txt", "MC", void))
    (eob,) = await stored(db, "ExplanationOfBenefit")
    assert eob["status"] == "entered-in-error"
    (enc,) = await stored(db, "Encounter")
    assert enc["status"] == "entered-in-error"
    (cond,) = await stored(db, "Condition")
    assert cond["verificationStatus"]["coding"][0]["code"] == "entered-in-error"
    (proc,) = await stored(db, "Procedure")
    assert proc["status"] == "entered-in-error"


async def test_reimport_changes_nothing(db, tmp_path, monkeypatch):
    monkeypatch.setattr(importer_module, "BULK_MAX", 2)  # several bulk inserts per batch
    me = [member("M1"), member("M1", "20240701"), member("M2")]
    mc = [medical("C1", 1), medical("C1", 2, f088="71046"), medical("C2", 1, member_id="M2")]
    imp = importer(db)
    await imp.import_file(cdl_file(tmp_path / "me.txt", "ME", me))
    await imp.import_file(cdl_file(tmp_path / "mc.txt", "MC", mc))
    before, history = await versions(db), await count(db, resource_history)

    again = await importer(db).import_file(tmp_path / "mc.txt")
    assert again.status == "already-imported"
    # the same records in a file with other bytes (a column-name row): not the same file,
    # but every resource it maps to is already stored as it would be written
    for name, ftype, lines in (("me2.txt", "ME", me), ("mc2.txt", "MC", mc)):
        result = await importer(db).import_file(
            cdl_file(tmp_path / name, ftype, lines, column_row=True)
        )
        assert result.status == "imported"
        assert (result.created, result.updated, result.deleted) == (0, 0, 0)
    assert await versions(db) == before
    assert await count(db, resource_history) == history


class Killed(Exception):
    pass


async def test_killed_import_resumes_and_stores_each_record_once(db, tmp_path):
    claims = [medical(f"C{n}", line, member_id=f"M{n % 7}") for n in range(40) for line in (1, 2)]
    claims.insert(31, medical("BAD", f037="nope"))
    path = cdl_file(tmp_path / "mc.txt", "MC", claims)
    batches = 0

    def crash_after_two_batches(_file: str, _done: int, _total: int) -> None:
        nonlocal batches
        batches += 1
        if batches == 2:
            raise Killed

    repo = FhirRepository(db, policy=FULL, base_url=FHIR_BASE)
    crashing = ApcdImporter(repo, ImportOptions(batch_lines=10), progress=crash_after_two_batches)
    with pytest.raises(Killed):
        await crashing.import_file(path)
    async with db.read() as conn:
        journal = (await conn.execute(select(apcd_import))).one()
    assert journal.status == "running" and 0 < journal.lines_done < len(claims) + 2
    partial = len(await stored(db, "ExplanationOfBenefit"))
    assert 0 < partial < 40

    result = await importer(db, batch_lines=10).import_file(path)
    assert result.status == "imported"
    assert result.lines_read < len(claims)  # resumed after the checkpoint
    eobs = await stored(db, "ExplanationOfBenefit")
    assert len(eobs) == 40
    assert len({e["identifier"][0]["value"] for e in eobs}) == 40
    assert all(v == 1 for v in (await versions(db)).values())
    assert await count(db, resource_history) == len(await versions(db))
    assert [(e.line, e.field_id) for e in result.errors] == [(33, "CDLMC037")]
    async with db.read() as conn:
        journal = (await conn.execute(select(apcd_import))).one()
    assert (journal.status, journal.loaded, journal.rejected) == ("complete", 80, 1)


async def test_bad_lines_are_reported_and_skipped(db, tmp_path):
    lines = [
        medical("C1"),
        medical("C2", f119="20241340"),
        medical("C3", f088="ABCDEFG"),
        medical("C4", f135="1234567890"),
        medical("C5"),
    ]
    path = cdl_file(tmp_path / "mc.txt", "MC", lines)
    imp = importer(db)
    result = await imp.import_file(path)
    assert (result.loaded, result.rejected) == (2, 3)
    assert [(e.file, e.line, e.field_id) for e in result.errors] == [
        ("mc.txt", 3, "CDLMC119"),
        ("mc.txt", 4, "CDLMC088"),
        ("mc.txt", 5, "CDLMC135"),
    ]
    assert {e["identifier"][0]["value"] for e in await stored(db, "ExplanationOfBenefit")} == {
        "C1",
        "C5",
    }
    report = tmp_path / "report.json"
    assert await write_report(report, [result], imp.all_errors) == 3
    rows = orjson.loads(report.read_bytes())
    assert rows[0] == {
        "file": "mc.txt",
        "line": 3,
        "field_id": "CDLMC119",
        "reason": "not a valid CCYYMMDD date",
    }
    csv_report = tmp_path / "report.csv"
    await write_report(csv_report, [result], imp.all_errors)
    assert csv_report.read_text().splitlines()[1] == "mc.txt,3,CDLMC119,not a valid CCYYMMDD date"


async def test_bad_trailer_rejects_the_whole_file(db, tmp_path):
    path = cdl_file(tmp_path / "mc.txt", "MC", [medical("C1"), medical("C2")], count=5)
    result = await importer(db).import_file(path)
    assert result.status == "rejected"
    assert "declares 5 detail records, the file has 2" in result.reason
    assert await versions(db) == {}
    assert await count(db, apcd_import) == 0


async def test_dry_run_stores_nothing(db, tmp_path):
    path = cdl_file(tmp_path / "mc.txt", "MC", [medical("C1"), medical("C2", f037="bad")])
    result = await importer(db, dry_run=True).import_file(path)
    assert (result.status, result.loaded, result.rejected) == ("dry-run", 1, 1)
    assert await versions(db) == {}
    assert await count(db, apcd_import) == 0


async def test_members_link_to_patients_from_other_sources_by_identifier_only(db, tmp_path):
    repo = FhirRepository(db, policy=FULL, base_url=FHIR_BASE)
    cin = "urn:example:medi-cal-cin"
    hl7 = await repo.create(
        "Patient",
        {
            "resourceType": "Patient",
            "identifier": [{"system": cin, "value": "90000001A"}],
            "name": [{"family": "Testperson", "given": ["Alex"]}],
            "birthDate": "1980-02-14",
        },
    )
    hl7_id = hl7.resource.id
    rules = parse_link_rules(f"CDLME011={cin}")
    me = [
        member("M1", f011="90000001A"),
        member("M2"),  # same name and birth date, no shared identifier: never linked
    ]
    imp = ApcdImporter(repo, ImportOptions(link_rules=rules))
    await imp.import_file(cdl_file(tmp_path / "me.txt", "ME", me))
    await imp.import_file(cdl_file(tmp_path / "mc.txt", "MC", [medical("C1", member_id="M1")]))
    patients = {p["id"]: p for p in await stored(db, "Patient")}
    assert len(patients) == 2  # the HL7 Patient and M2's own
    assert patients[hl7_id].get("meta", {}).get("versionId") == "1"  # left alone
    coverages = {c["identifier"][0]["value"]: c for c in await stored(db, "Coverage")}
    assert coverages["M1"]["beneficiary"]["reference"] == f"Patient/{hl7_id}"
    assert coverages["M2"]["beneficiary"]["reference"] != f"Patient/{hl7_id}"
    (eob,) = await stored(db, "ExplanationOfBenefit")
    assert eob["patient"]["reference"] == f"Patient/{hl7_id}"


def test_link_rules_are_validated():
    assert parse_link_rules(" CDLME075=http://hl7.org/fhir/sid/us-mbi ")[0].field_id == "CDLME075"
    for bad in ("CDLME075", "CDLMC161=urn:x", "CDLME075=a|b", "=urn:x"):
        with pytest.raises(ValueError):
            parse_link_rules(bad)


async def test_a_record_whose_mapping_fails_validation_is_skipped_alone(db, tmp_path, monkeypatch):
    original = Mapper.claim

    def broken_for_c2(self, rows, patient_id, assign=None):
        picture = original(self, rows, patient_id, assign)
        if picture.claim_id == "C2":
            picture.resources[0][2]["created"] = "not a date"
        return picture

    monkeypatch.setattr(Mapper, "claim", broken_for_c2)
    path = cdl_file(tmp_path / "mc.txt", "MC", [medical("C1"), medical("C2"), medical("C3")])
    result = await importer(db).import_file(path)
    assert (result.loaded, result.rejected) == (2, 1)
    ((line, field_id, reason),) = [(e.line, e.field_id, e.reason) for e in result.errors]
    assert (line, field_id) == (3, "-")
    assert reason.startswith("mapped resource failed validation: ExplanationOfBenefit.created")
    assert {e["identifier"][0]["value"] for e in await stored(db, "ExplanationOfBenefit")} == {
        "C1",
        "C3",
    }
    assert len(await stored(db, "Encounter")) == 2  # nothing of C2 is left behind


async def test_a_line_the_reader_accepts_but_fhir_does_not_is_rejected_with_its_line(db, tmp_path):
    """Line counter 0 and -1 pass the CDL `int` check but make EOB.item.sequence, a FHIR
    positiveInt, invalid: the import's validation (fast path or not) still catches them."""
    lines = [
        medical("C1"),
        medical("C2", line=0),
        medical("C3"),
        medical("C4", line=-1),
        medical("C5"),
    ]
    path = cdl_file(tmp_path / "mc.txt", "MC", lines)
    for dry_run in (True, False):
        result = await importer(db, dry_run=dry_run).import_file(path)
        assert (result.loaded, result.rejected) == (3, 2)
        assert [(e.line, e.field_id) for e in result.errors] == [(3, "-"), (5, "-")]
        assert all(
            e.reason.startswith(
                "mapped resource failed validation: ExplanationOfBenefit.item[0].sequence"
            )
            for e in result.errors
        )
    assert {e["identifier"][0]["value"] for e in await stored(db, "ExplanationOfBenefit")} == {
        "C1",
        "C3",
        "C5",
    }
    assert len(await stored(db, "Encounter")) == 3


async def test_import_killed_with_sigkill_resumes_without_duplicates(db, tmp_path):
    """A real kill: the command runs in a child process that gets SIGKILL after its first
    committed batch; the re-run finishes the file and every claim is stored exactly once."""
    claims = [medical(f"K{n}", member_id=f"M{n % 9}") for n in range(300)]
    path = cdl_file(tmp_path / "mc.txt", "MC", claims)
    env = {**os.environ, "DXF_DATABASE_URL": db.url, "DXF_APCD_BATCH_LINES": "10"}
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "app.cli",
        "import-apcd",
        "--no-progress",
        str(path),
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    done = 0
    try:
        while time.monotonic() < deadline:  # poll the journal for the first checkpoint
            async with db.read() as conn:
                done = await conn.scalar(select(apcd_import.c.lines_done)) or 0
            if done > 0 or child.returncode is not None:
                break
            await asyncio.sleep(0.02)
    finally:
        if child.returncode is None:
            child.send_signal(signal.SIGKILL)
        await child.wait()
    assert child.returncode == -signal.SIGKILL, "the import finished before it could be killed"
    async with db.read() as conn:
        journal = (await conn.execute(select(apcd_import))).one()
    assert journal.status == "running" and journal.lines_done < 301
    stored_before = len(await stored(db, "ExplanationOfBenefit"))
    assert stored_before == journal.lines_done - 1  # exactly the committed batches

    result = await importer(db, batch_lines=50).import_file(path)
    assert result.status == "imported"
    assert result.lines_read == 300 - (journal.lines_done - 1)
    eobs = await stored(db, "ExplanationOfBenefit")
    assert sorted(e["identifier"][0]["value"] for e in eobs) == sorted(f"K{n}" for n in range(300))
    assert all(v == 1 for v in (await versions(db)).values())
    assert await count(db, resource_history) == len(await versions(db))


async def test_a_claim_replaced_later_in_the_same_batch(db, tmp_path):
    lines = [
        medical("C1", 1, f088="93000"),
        medical("C1", 2, f088="71046"),
        medical("C2", 1),
        medical("C1", 1, version=1, f088="93000", f125="70.00", f160="R"),
    ]
    result = await importer(db).import_file(cdl_file(tmp_path / "mc.txt", "MC", lines))
    assert (result.loaded, result.rejected) == (4, 0)
    eobs = {e["identifier"][0]["value"]: e for e in await stored(db, "ExplanationOfBenefit")}
    assert [i["sequence"] for i in eobs["C1"]["item"]] == [1]
    assert eobs["C1"]["meta"]["versionId"] == "2"
    assert eobs["C1"]["payment"]["amount"]["value"] == 70.0
    assert result.deleted == 1  # the Procedure of line 2


async def test_lost_claim_state_still_changes_nothing(db, tmp_path):
    """Without the claim-state table (say, restored from an older backup) the minted ids of
    stored claims are lost; re-importing reports those claims instead of storing them again,
    and changes nothing."""
    mc = [medical("C1", 1), medical("C1", 2, f088="71046"), medical("C2", 1)]
    await importer(db).import_file(cdl_file(tmp_path / "a.txt", "MC", mc))
    before = await versions(db)
    async with db.write() as conn:
        await conn.execute(apcd_claim.delete())
    result = await importer(db).import_file(cdl_file(tmp_path / "b.txt", "MC", mc, column_row=True))
    assert (result.created, result.updated, result.loaded, result.rejected) == (0, 0, 0, 3)
    assert [e.line for e in result.errors] == [3, 5]  # each claim once, at its first line
    assert all("import state (apcd_claim) is missing" in e.reason for e in result.errors)
    assert await versions(db) == before


async def test_claim_resources_get_time_ordered_ids_kept_with_the_claim(db, tmp_path):
    lines = [medical("C1", 1, f038="I10"), medical("C1", 2, f088="71046"), medical("C2", 1)]
    await importer(db).import_file(cdl_file(tmp_path / "a.txt", "MC", lines))
    encounters = {e["identifier"][0]["value"]: e for e in await stored(db, "Encounter")}
    conditions = await stored(db, "Condition")
    everything = [*encounters.values(), *conditions, *await stored(db, "ExplanationOfBenefit")]
    assert all(uuid.UUID(r["id"]).version == 7 for r in everything)
    c1 = encounters["C1"]
    c1_conditions = [
        c for c in conditions if c["encounter"]["reference"] == f"Encounter/{c1['id']}"
    ]
    assert {c["code"]["coding"][0]["code"] for c in c1_conditions} == {"E119", "I10"}
    assert {d["condition"]["reference"] for d in c1["diagnosis"]} == {
        f"Condition/{c['id']}" for c in c1_conditions
    }
    async with db.read() as conn:
        states = dict(
            (await conn.execute(select(apcd_claim.c.claim_id, apcd_claim.c.resources))).all()
        )
    kept = orjson.loads(states["C1"])
    assert f"Encounter/{c1['id']}" in kept.values()
    assert len(kept) == len(set(kept.values())) == 6  # EOB, Encounter, 2 Conditions, 2 Procedures
    # a new version in a later file updates those very resources
    replaced = [medical("C1", 1, version=1, f038="I10", f125="70.00")]
    result = await importer(db).import_file(cdl_file(tmp_path / "b.txt", "MC", replaced))
    assert result.deleted == 1  # the second line's Procedure
    (encounter,) = [e for e in await stored(db, "Encounter") if e["identifier"][0]["value"] == "C1"]
    assert (encounter["id"], encounter["meta"]["versionId"]) == (c1["id"], "1")
    eob = next(
        e for e in await stored(db, "ExplanationOfBenefit") if e["identifier"][0]["value"] == "C1"
    )
    assert eob["meta"]["versionId"] == "2" and f"ExplanationOfBenefit/{eob['id']}" in kept.values()


async def test_claims_stored_before_ids_were_minted_keep_their_ids(db, tmp_path, monkeypatch):
    """A claim state written by an earlier release lists "Type/id" refs whose ids are the
    deterministic keys; a new version of such a claim updates those resources."""
    original = Mapper.claim
    monkeypatch.setattr(
        Mapper, "claim", lambda self, rows, pid, assign=None: original(self, rows, pid)
    )
    await importer(db).import_file(cdl_file(tmp_path / "a.txt", "MC", [medical("C1", 1)]))
    monkeypatch.setattr(Mapper, "claim", original)
    async with db.write() as conn:  # the state as the earlier release wrote it
        (row,) = (await conn.execute(select(apcd_claim.c.claim_id, apcd_claim.c.resources))).all()
        refs = sorted(orjson.loads(row.resources).values())
        await conn.execute(apcd_claim.update().values(resources=orjson.dumps(refs).decode()))
    (eob,) = await stored(db, "ExplanationOfBenefit")
    assert uuid.UUID(eob["id"]).version == 5
    result = await importer(db).import_file(
        cdl_file(tmp_path / "b.txt", "MC", [medical("C1", 1, version=1, f125="70.00")])
    )
    assert (result.created, result.rejected) == (0, 0)
    (again,) = await stored(db, "ExplanationOfBenefit")
    assert (again["id"], again["meta"]["versionId"]) == (eob["id"], "2")


async def test_a_pharmacy_claim_numbered_like_a_stored_medical_claim_still_loads(db, tmp_path):
    await importer(db).import_file(cdl_file(tmp_path / "mc.txt", "MC", [medical("X1")]))
    pc = pharmacy("X1", member_id="MEM001")
    result = await importer(db).import_file(cdl_file(tmp_path / "pc.txt", "PC", [pc]))
    assert (result.loaded, result.rejected) == (1, 0), result.errors
    kinds = sorted(e["type"]["coding"][0]["code"] for e in await stored(db, "ExplanationOfBenefit"))
    assert kinds == ["pharmacy", "professional"]


async def test_the_latest_span_describes_the_member(db, tmp_path):
    me = [member("M1", "20240101", f024="Fresno"), member("M1", "20240701", f024="Eureka")]
    await importer(db).import_file(cdl_file(tmp_path / "me.txt", "ME", me))
    (patient,) = await stored(db, "Patient")
    assert patient["address"][0]["city"] == "Eureka"
    assert patient["meta"]["versionId"] == "2"
    assert len(await stored(db, "Coverage")) == 2


async def test_the_report_streams_every_error_of_a_file_of_bad_lines(db, tmp_path):
    lines = [medical(f"C{n}", f037="bad") for n in range(6001)] + [medical("OK")]
    imp = importer(db)
    result = await imp.import_file(cdl_file(tmp_path / "mc.txt", "MC", lines))
    assert (result.loaded, result.rejected) == (1, 6001)
    report = tmp_path / "r.json"
    assert await write_report(report, [result], imp.all_errors) == 6001
    rows = orjson.loads(report.read_bytes())
    assert [r["line"] for r in rows] == list(range(2, 6003))
    assert {r["field_id"] for r in rows} == {"CDLMC037"}


async def test_an_endless_claim_is_cut_off(db, tmp_path, monkeypatch):
    monkeypatch.setattr(importer_module, "MAX_CLAIM_LINES", 3)
    lines = [medical("C1", n) for n in range(1, 6)] + [medical("C2")]
    result = await importer(db).import_file(cdl_file(tmp_path / "mc.txt", "MC", lines))
    assert (result.loaded, result.rejected) == (4, 2)
    assert [(e.line, e.field_id) for e in result.errors] == [(5, "CDLMC006"), (6, "CDLMC006")]
    eobs = {e["identifier"][0]["value"]: e for e in await stored(db, "ExplanationOfBenefit")}
    assert [i["sequence"] for i in eobs["C1"]["item"]] == [1, 2, 3]


async def test_icd9_coded_claims_from_older_files(db, tmp_path):
    lines = [
        medical("OLD", f036="9", f037="25000", f038="V5861", f032="111", f093="3606"),
        medical("BAD", f036="9", f037="E119"),  # an ICD-10 code on an ICD-9 claim
    ]
    result = await importer(db).import_file(cdl_file(tmp_path / "mc.txt", "MC", lines))
    assert [(e.line, e.field_id) for e in result.errors] == [(3, "CDLMC037")]
    (eob,) = await stored(db, "ExplanationOfBenefit")
    codings = [d["diagnosisCodeableConcept"]["coding"][0] for d in eob["diagnosis"]]
    assert {c["system"] for c in codings} == {"http://hl7.org/fhir/sid/icd-9-cm"}
    px = eob["procedure"][0]["procedureCodeableConcept"]["coding"][0]
    assert px == {"system": "http://hl7.org/fhir/sid/icd-9-cm", "code": "3606"}


async def test_validation_in_a_worker_process_stores_the_same(db, tmp_path, monkeypatch):
    monkeypatch.setattr(importer_module, "BULK_MAX", 7)  # several chunks in flight per batch
    claims = [medical(f"W{n}", line, member_id=f"M{n % 5}") for n in range(30) for line in (1, 2)]
    path = cdl_file(tmp_path / "mc.txt", "MC", claims)
    result = await importer(
        db, validation_workers=1, worker_min_lines=1, batch_lines=25
    ).import_file(path)
    assert (result.loaded, result.rejected) == (60, 0)
    pooled = await _by_key(db)
    async with db.write() as conn:  # start over, and import in-process
        for table in reversed(metadata.sorted_tables):
            await conn.execute(table.delete())
    await importer(db, validation_workers=0, batch_lines=25).import_file(path)
    inline = await _by_key(db)
    assert pooled == inline and len(pooled) == 30 + 30 + 30 + 60 + 5


async def _by_key(db):
    """The stored resources without meta, with each claim resource's minted id replaced by
    its key (from the claim state), so that two imports of one file compare equal."""
    async with db.read() as conn:
        maps = (await conn.execute(select(apcd_claim.c.resources))).scalars().all()
    key_of = {ref.partition("/")[2]: key for m in maps for key, ref in orjson.loads(m).items()}
    out = {}
    for rtype in ("ExplanationOfBenefit", "Encounter", "Condition", "Procedure", "Patient"):
        for e in await stored(db, rtype):
            text = orjson.dumps({k: v for k, v in e.items() if k != "meta"}).decode()
            for actual, key in key_of.items():
                text = text.replace(actual, key)
            out[(rtype, key_of.get(e["id"], e["id"]))] = orjson.loads(text)
    return out


async def test_a_worker_validation_failure_skips_only_that_record(db, tmp_path, monkeypatch):
    original = Mapper.claim

    def broken_for_c2(self, rows, patient_id, assign=None):
        picture = original(self, rows, patient_id, assign)
        if picture.claim_id == "C2":
            picture.resources[0][2]["created"] = "not a date"
        return picture

    monkeypatch.setattr(Mapper, "claim", broken_for_c2)
    path = cdl_file(tmp_path / "mc.txt", "MC", [medical(f"C{n}") for n in range(1, 5)])
    imp = importer(db, validation_workers=1, worker_min_lines=1)
    result = await imp.import_file(path)
    assert (result.loaded, result.rejected) == (3, 1)
    assert [(e.line, e.field_id) for e in result.errors] == [(3, "-")]


async def test_a_claim_for_an_unknown_member_describes_its_patient(db, tmp_path):
    dc = [
        record(
            "DC",
            f005="D1",
            f006=1,
            f007=0,
            f010="M",
            f011="19700102",
            f012="20240320",
            f013="20240301",
            f016="D0120",
            f034="NEW1",
        )
    ]
    await importer(db).import_file(cdl_file(tmp_path / "dc.txt", "DC", dc))
    (patient,) = await stored(db, "Patient")
    assert (patient["gender"], patient["birthDate"]) == ("male", "1970-01-02")
    assert patient["identifier"][0]["value"] == "NEW1"
    (eob,) = await stored(db, "ExplanationOfBenefit")
    assert eob["patient"]["reference"] == f"Patient/{patient['id']}"
