"""Journal-first ingestion and acknowledgements: AA/AE/AR, enhanced CA/CE/CR per MSH-15/16,
ERR segments, duplicates, MSA-2 echo, the sender's version and delimiters, reprocessing."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from app.db import Database
from app.hl7 import journal
from app.hl7.service import Hl7Service
from app.settings import Settings
from app.store.tables import hl7_message, resource, resource_history
from tests.hl7_messages import adt, er7, msh, pid, pv1


@pytest.fixture
def hl7(db: Database, settings: Settings) -> Hl7Service:
    return Hl7Service(db, settings)


def segments(ack: str) -> dict[str, list[str]]:
    fs = ack[3]
    return {seg.split(fs)[0]: seg.split(fs) for seg in ack.split("\r") if seg}


async def count(db: Database, table, *where) -> int:
    async with db.read() as conn:
        return int(await conn.scalar(select(func.count()).select_from(table).where(*where)))


async def test_accept_commits_resources_and_journal_together(hl7: Hl7Service, db: Database):
    result = await hl7.handle(adt("A01", "C1", "20260301101500-0800"), "test")
    assert result.code == "AA" and result.send
    ack = segments(result.ack)
    assert ack["MSA"][1:3] == ["AA", "C1"]
    assert ack["MSH"][8] == "ACK^A01^ACK"
    assert ack["MSH"][11] == "2.5.1"
    assert ack["MSH"][4:6] == ["EPIC^1.2.3^ISO", "GOODHOSP"]  # sender becomes receiver
    async with db.read() as conn:
        entry = await journal.get(conn, result.journal_id)
    assert entry is not None and entry.status == "processed" and entry.ack == result.ack
    assert entry.sender == "EPIC|GOODHOSP" and entry.control_id == "C1"
    assert entry.raw == adt("A01", "C1", "20260301101500-0800")
    assert await count(db, resource, resource.c.res_type == "Patient") == 1
    assert await count(db, resource, resource.c.res_type == "Encounter") == 1
    assert await count(db, resource, resource.c.res_type == "Provenance") == 1


async def test_identical_resend_gets_the_original_ack_and_changes_nothing(
    hl7: Hl7Service, db: Database
):
    message = adt("A01", "C1", "20260301101500-0800")
    first = await hl7.handle(message, "test")
    versions = await count(db, resource_history)
    again = await hl7.handle(message, "test")
    assert again.duplicate and again.ack == first.ack and again.journal_id == first.journal_id
    assert await count(db, resource_history) == versions
    assert await count(db, hl7_message) == 1


async def test_same_control_id_other_bytes_is_kept_apart_with_an_error_ack(
    hl7: Hl7Service, db: Database
):
    await hl7.handle(adt("A01", "C1", "20260301101500-0800"), "test")
    versions = await count(db, resource_history)
    other = await hl7.handle(adt("A08", "C1", "20260301111500-0800"), "test")
    ack = segments(other.ack)
    assert other.code == "AE" and ack["MSA"][2] == "C1"
    assert ack["ERR"][2] == "MSH^1^10^^1" and ack["ERR"][3].startswith("205^")
    assert await count(db, resource_history) == versions
    assert await count(db, hl7_message, hl7_message.c.status == "conflict") == 1


@pytest.mark.parametrize(
    ("accept", "application", "outcome", "code", "send"),
    [
        ("AL", "NE", "ok", "CA", True),
        ("AL", "AL", "error", "CE", True),
        ("NE", "AL", "ok", "AA", True),
        ("NE", "ER", "ok", "CA", False),
        ("ER", "NE", "ok", "CA", False),
        ("ER", "NE", "error", "CE", True),
        ("SU", "NE", "reject", "CR", False),
    ],
)
async def test_enhanced_mode_follows_msh15_and_msh16(
    hl7: Hl7Service, accept, application, outcome, code, send
):
    event = {"ok": "ADT^A01", "error": "ADT^A01", "reject": "ADT^Z99"}[outcome]
    patient = pid() if outcome != "error" else pid(birth="19751399")
    message = er7(msh(event, "E1", accept=accept, application=application), patient, pv1())
    result = await hl7.handle(message, "test")
    assert (result.code, result.send) == (code, send)
    assert segments(result.ack)["MSA"][1] == code


async def test_ack_uses_the_senders_delimiters_and_version(hl7: Hl7Service):
    message = (
        b"MSH#*@!$#APP#FAC#DXF#DXF#20260301101500##ADT*A04#D9#P#2.3\r"
        b"PID#1##M77*@@*HOSP*MR##DOE*JANE##19800101#F\r"
        b"PV1#1#O#ER\r"
    )
    result = await hl7.handle(message, "test")
    assert result.code == "AA"
    assert result.ack.startswith("MSH#*@!$#")
    assert "ACK*A04*ACK" in result.ack and "#2.3" in result.ack
    assert "\rMSA#AA#D9" in result.ack


@pytest.mark.parametrize(
    ("message", "code", "err_code", "where"),
    [
        (b"", "AE", "100", "MSH^1"),
        (b"PID|1||X\r", "AE", "100", "MSH^1"),
        (b"MSH|^|APP|FAC|||20260101||ADT^A01|X1|P|2.5\r", "AE", "102", "MSH^1^2^^1"),
        (er7(msh("ADT^A01", "")), "AE", "101", "MSH^1^10^^1"),
        (er7(msh("ORM^O01", "X2")), "AR", "200", "MSH^1^9^^1"),
        (er7(msh("ADT^A99", "X3")), "AR", "201", "MSH^1^9^^2"),
        (er7(msh("ADT^A01", "X4", version="3.0")), "AR", "203", "MSH^1^12^^1"),
        (er7(msh("ADT^A01", "X5"), pid(birth="19750231"), pv1()), "AE", "102", "PID^2^7^^1"),
        (er7(msh("ADT^A01", "X6"), pid(mrn=""), pv1()), "AE", "101", "PID^2^3^^1"),
        (er7(msh("ADT^A01", "X7"), pid(sex="Q"), pv1()), "AE", "103", "PID^2^8^^1"),
        (er7(msh("ADT^A01", "X8")), "AE", "100", "PID"),
    ],
)
async def test_bad_messages_get_an_error_ack_with_location_and_reason(
    hl7: Hl7Service, db: Database, message: bytes, code: str, err_code: str, where: str
):
    result = await hl7.handle(message, "test")
    ack = segments(result.ack)
    assert result.code == code
    assert ack["ERR"][3].split("^")[0] == err_code
    assert ack["ERR"][2] == where
    assert ack["ERR"][4] == "E" and ack["ERR"][8]  # severity and a readable reason
    assert await count(db, resource) == 0
    assert await count(db, hl7_message) == 1  # journaled even so


async def test_old_versions_get_err1_instead_of_err2(hl7: Hl7Service):
    result = await hl7.handle(er7(msh("ADT^A01", "O1", version="2.3"), pid(sex="Q"), pv1()), "t")
    assert segments(result.ack)["ERR"][1] == "PID^2^8^103&Table value not found&HL70357"


async def test_acks_are_never_acknowledged(hl7: Hl7Service):
    result = await hl7.handle(er7(msh("ACK^A01", "K1"), "MSA|AA|C1"), "test")
    assert result.send is False


async def test_a_mapping_error_is_journaled_and_reprocessable(
    hl7: Hl7Service, db: Database, monkeypatch: pytest.MonkeyPatch
):
    from app.hl7 import mapping

    async def broken(ctx):
        raise RuntimeError("bug")

    monkeypatch.setitem(mapping.MAPS, ("ADT", "A01"), broken)
    failed = await hl7.handle(adt("A01", "R1", "20260301101500-0800"), "test")
    assert failed.code == "AE" and segments(failed.ack)["ERR"][3].startswith("207^")
    assert await count(db, hl7_message, hl7_message.c.status == "error") == 1
    assert await count(db, resource) == 0
    monkeypatch.undo()
    fixed = await hl7.reprocess(failed.journal_id)
    assert fixed is not None and fixed.code == "AA"
    assert await count(db, hl7_message, hl7_message.c.status == "processed") == 1
    assert await count(db, resource, resource.c.res_type == "Patient") == 1
    # the sender's resend now gets the new outcome, still without a second copy
    resend = await hl7.handle(adt("A01", "R1", "20260301101500-0800"), "test")
    assert resend.duplicate and resend.code == "AA"


async def test_a_row_left_received_by_a_crash_is_processed_on_resend(hl7: Hl7Service, db: Database):
    message = adt("A01", "K9", "20260301101500-0800")
    from app.hl7.parse import parse_message

    msg = parse_message(message)
    async with db.write() as conn:
        await journal.insert_entry(
            conn,
            received_at=hl7.clock(),
            transport="test",
            sender=msg.sender,
            control_id="K9",
            sha256=__import__("hashlib").sha256(message).hexdigest(),
            message_type="ADT^A01",
            version="2.5.1",
            status="received",
            raw=message,
        )
    result = await hl7.handle(message, "test")
    assert result.code == "AA"
    assert await count(db, hl7_message) == 1
    assert await count(db, resource, resource.c.res_type == "Patient") == 1


async def test_database_failure_before_journal_answers_ar(hl7: Hl7Service, monkeypatch):
    from sqlalchemy.exc import OperationalError

    def down(*_a, **_k):
        raise OperationalError("BEGIN", {}, Exception("connection refused"))

    monkeypatch.setattr(hl7.db, "write", down)
    result = await hl7.handle(adt("A01", "D1", "20260301101500-0800"), "test")
    assert result.code == "AR" and segments(result.ack)["ERR"][3].startswith("207^")


async def test_concurrent_messages_for_one_patient_lose_no_update(hl7: Hl7Service, db: Database):
    """Each message adds another identifier to the same Patient; they arrive at once (on
    PostgreSQL over several connections). The merge must see every earlier commit."""
    import asyncio

    import orjson

    def message(n: int) -> bytes:
        patient = pid(extra=f"~EXTRA{n}^^^OTHER^PI")
        return er7(msh("ADT^A31^ADT_A05", f"P{n}"), patient, "PV1|1|N")

    results = await asyncio.gather(*(hl7.handle(message(n), "test") for n in range(12)))
    assert {r.code for r in results} == {"AA"}
    async with db.read() as conn:
        (content,) = (
            await conn.execute(select(resource.c.content).where(resource.c.res_type == "Patient"))
        ).one()
    values = {i["value"] for i in orjson.loads(content)["identifier"]}
    assert {f"EXTRA{n}" for n in range(12)} <= values


async def test_logs_carry_ids_and_counts_never_patient_data(
    hl7: Hl7Service, caplog: pytest.LogCaptureFixture
):
    import logging

    caplog.set_level(logging.INFO, logger="dxf.hl7")
    await hl7.handle(adt("A01", "LOG1", "20260301101500-0800"), "test")
    await hl7.handle(er7(msh("ADT^A01", "LOG2"), pid(birth="19751399"), pv1()), "test")
    await hl7.handle(adt("A01", "LOG1", "20260301101500-0800"), "test")  # duplicate
    assert len(caplog.records) == 3
    text = " ".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    for phi in ("NGUYEN", "LAN", "MRN1001", "1975", "MAIN ST", "SACRAMENTO", "5550101"):
        assert phi not in text
    assert "LOG1" in text and "LOG2" in text  # control ids are what we do log


async def test_a_mapped_resource_that_is_not_valid_fhir_is_an_error_not_a_write(
    hl7: Hl7Service, db: Database, monkeypatch: pytest.MonkeyPatch
):
    from app.hl7 import mapping

    async def invalid(ctx):
        ctx.put("Patient", "p-1", {"birthDate": "last spring"})

    monkeypatch.setitem(mapping.MAPS, ("ADT", "A01"), invalid)
    result = await hl7.handle(adt("A01", "V1", "20260301101500-0800"), "test")
    ack = segments(result.ack)
    assert result.code == "AE" and ack["ERR"][3].startswith("207^")
    assert "not valid FHIR" in ack["ERR"][8] and "Patient.birthDate" in ack["ERR"][8]
    assert await count(db, resource) == 0
    assert await count(db, hl7_message, hl7_message.c.status == "error") == 1


async def test_concurrent_messages_reusing_a_control_id_are_still_a_conflict(
    hl7: Hl7Service, db: Database, monkeypatch: pytest.MonkeyPatch
):
    """Two different messages with one control id arrive at once. Each journal decision waits
    (up to 0.5 s) for the other to have looked too, which is exactly the race a per-id lock must
    prevent: without it both would find nothing and both be accepted."""
    import asyncio
    import contextlib

    looked = 0
    both = asyncio.Event()
    find = journal.find_same_control_id

    async def racing_find(conn, sender, control_id):
        nonlocal looked
        rows = await find(conn, sender, control_id)
        looked += 1
        if looked >= 2:
            both.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(both.wait(), 0.5)
        return rows

    monkeypatch.setattr(journal, "find_same_control_id", racing_find)
    first = adt("A01", "SAME", "20260301101500-0800")
    second = adt("A08", "SAME", "20260301111500-0800")
    results = await asyncio.gather(hl7.handle(first, "test"), hl7.handle(second, "test"))
    assert sorted(r.code for r in results) == ["AA", "AE"]
    assert await count(db, hl7_message, hl7_message.c.status == "conflict") == 1


async def test_messages_arriving_together_commit_as_a_group_and_a_failure_stays_its_own(
    hl7: Hl7Service, db: Database, monkeypatch: pytest.MonkeyPatch
):
    """Messages handed in at once share one journal and one processing transaction (group
    commit); one whose mapping fails rolls back only its own savepoint and is journaled as
    error in that transaction, and an identical resend in the same group gets the original
    answer, not a second copy."""
    import asyncio

    from app.hl7 import mapping

    real = mapping.MAPS[("ADT", "A01")]

    async def fails_for_bad(ctx):
        await real(ctx)
        if ctx.msg.control_id == "G-BAD":
            raise RuntimeError("bug")

    monkeypatch.setitem(mapping.MAPS, ("ADT", "A01"), fails_for_bad)
    commits = 0
    write = db.write

    def counting_write(*args, **kwargs):
        nonlocal commits
        commits += 1
        return write(*args, **kwargs)

    monkeypatch.setattr(db, "write", counting_write)

    def message(n: int, control: str) -> bytes:
        patient = pid(mrn=f"MRN{n}", family=f"FAM{n}")
        return adt("A01", control, "20260301101500-0800", visit=f"V{n}", patient=patient)

    sent = [message(n, f"G{n}") for n in range(5)] + [message(9, "G-BAD"), message(0, "G0")]
    results = await asyncio.gather(*(hl7.handle(m, "test") for m in sent))
    assert [r.code for r in results] == ["AA"] * 5 + ["AE", "AA"]
    assert results[6].duplicate and results[6].journal_id == results[0].journal_id
    assert commits <= 5  # 7 messages alone would take at least 12 write transactions
    assert await count(db, hl7_message, hl7_message.c.status == "processed") == 5
    assert await count(db, hl7_message, hl7_message.c.status == "error") == 1
    assert await count(db, resource, resource.c.res_type == "Patient") == 5
    assert await count(db, resource, resource.c.res_type == "Encounter") == 5
