"""kill -9 of a real MLLP listener process during a send (../shared/reference/reliability.md
ING-01): a sender that retries every unacknowledged message ends with every message stored
exactly once, and every message that got AA is in the database."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
from pathlib import Path

from sqlalchemy import func, select

from app.db import Database
from app.settings import Settings
from app.store.tables import hl7_message, resource, resource_history
from tests.hl7_messages import er7, msh, pid, pv1

REPO = Path(__file__).resolve().parent.parent
VT, FS_CR = b"\x0b", b"\x1c\r"
MESSAGES = 120
KILL_AFTER_WRITE = {20, 75}  # kill right after the whole frame was written (mid-processing)
KILL_MID_FRAME = {45}  # kill after half a frame
KILL_AFTER_ACK = {100}  # kill right after an ACK arrived


def message(n: int) -> bytes:
    return er7(
        msh("ADT^A01", f"K{n:05d}", when="20260301101500-0800"),
        pid(mrn=f"MRN{n:05d}", family=f"FAMILY{n}"),
        pv1(visit=f"V{n:05d}"),
    )


async def start_listener(settings: Settings) -> tuple[asyncio.subprocess.Process, int]:
    env = {**os.environ, "DXF_DATABASE_URL": settings.database_url, "DXF_LOG_LEVEL": "WARNING"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "app.cli",
        "mllp",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        cwd=REPO,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 120)
    found = re.search(rb":(\d+)", line)
    assert found, line
    return proc, int(found.group(1))


async def kill(proc: asyncio.subprocess.Process) -> None:
    proc.send_signal(signal.SIGKILL)
    await asyncio.wait_for(proc.wait(), 30)


async def test_kill_9_during_sends_loses_and_duplicates_nothing(settings: Settings, db: Database):
    pending = list(range(MESSAGES))
    after_write, mid_frame = set(KILL_AFTER_WRITE), set(KILL_MID_FRAME)
    after_ack = set(KILL_AFTER_ACK)
    acked: dict[int, str] = {}
    kills = 0
    proc, port = await start_listener(settings)
    try:
        while pending:
            writer = None
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                while pending:
                    n = pending[0]
                    data = VT + message(n) + FS_CR
                    if n in mid_frame:
                        mid_frame.discard(n)
                        writer.write(data[: len(data) // 2])
                        await writer.drain()
                        kills += 1
                        await kill(proc)
                    writer.write(data)
                    await writer.drain()
                    if n in after_write:
                        after_write.discard(n)
                        kills += 1
                        await kill(proc)
                    raw = await asyncio.wait_for(reader.readuntil(FS_CR), 30)
                    ack = raw[1:-2].decode()
                    msa = next(s for s in ack.split("\r") if s.startswith("MSA")).split("|")
                    assert msa[1:3] == ["AA", f"K{n:05d}"]
                    acked[n] = ack
                    pending.pop(0)
                    if n in after_ack:
                        after_ack.discard(n)
                        kills += 1
                        await kill(proc)
            except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
                pass  # unacknowledged: retried on a new connection to a restarted listener
            finally:
                if writer is not None:
                    writer.close()
                    with contextlib.suppress(ConnectionError):
                        await writer.wait_closed()
            if proc.returncode is not None:
                proc, port = await start_listener(settings)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), 30)
    assert kills == 4
    assert sorted(acked) == list(range(MESSAGES))
    async with db.read() as conn:
        journal_rows = await conn.scalar(select(func.count()).select_from(hl7_message))
        processed = await conn.scalar(
            select(func.count()).select_from(hl7_message).where(hl7_message.c.status == "processed")
        )
        distinct_ids = await conn.scalar(
            select(func.count(func.distinct(hl7_message.c.control_id)))
        )
        patients = await conn.scalar(
            select(func.count()).select_from(resource).where(resource.c.res_type == "Patient")
        )
        encounters = await conn.scalar(
            select(func.count()).select_from(resource).where(resource.c.res_type == "Encounter")
        )
        patient_versions = await conn.scalar(
            select(func.count())
            .select_from(resource_history)
            .where(resource_history.c.res_type == "Patient")
        )
    assert journal_rows == processed == distinct_ids == MESSAGES
    assert patients == encounters == MESSAGES
    assert patient_versions == MESSAGES  # no message was applied twice
