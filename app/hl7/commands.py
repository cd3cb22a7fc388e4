"""The HL7v2 commands of `dxf-bridge`: mllp, ingest-hl7, hl7 list, hl7 reprocess.

Output names journal ids, control ids, message types, statuses and reasons; never field values.
"""

from __future__ import annotations

import argparse
import sys
from datetime import timedelta
from pathlib import Path

from app.db import Database
from app.hl7 import journal
from app.hl7.parse import split_batch
from app.hl7.service import Hl7Service
from app.settings import Settings
from app.store.base import utc_now_ms

__all__ = ["run"]

_STALE_RECEIVED = timedelta(minutes=5)  # a `received` row this old was left by a crash


def _database(settings: Settings) -> Database:
    return Database.from_settings(settings)


async def run(settings: Settings, args: argparse.Namespace) -> int:
    if args.command == "mllp":
        from app.hl7.mllp import run_listener
        from app.logging import configure_logging

        configure_logging(settings.log_level)
        return await run_listener(settings, args.host, args.port)
    db = _database(settings)
    try:
        service = Hl7Service(db, settings)
        if args.command == "ingest-hl7":
            return await _ingest(service, args.files)
        if args.hl7_command == "list":
            return await _list(db, args.status, args.limit)
        return await _reprocess(service, db, args.id, args.all_failed)
    finally:
        await db.dispose()


async def _ingest(service: Hl7Service, files: list[str]) -> int:
    failures = 0
    for name in files:
        path = Path(name)
        try:
            data = path.read_bytes()
        except OSError as exc:
            print(f"{name}: cannot read ({exc.strerror})", file=sys.stderr)
            failures += 1
            continue
        items = split_batch(data) or [data]
        for n, item in enumerate(items, start=1):
            result = await service.handle(item, "file")
            line = _ack_summary(result.ack)
            print(f"{name}#{n} journal={result.journal_id} {line}")
            if result.code not in ("AA", "CA"):
                failures += 1
    return 1 if failures else 0


def _ack_summary(ack: str) -> str:
    """MSA-1, MSA-2 and the ERR reason of an ACK, for the terminal."""
    segments = ack.split("\r")
    msh = segments[0] if segments else ""
    fs = msh[3:4] or "|"
    out = ""
    for seg in segments:
        fields = seg.split(fs)
        if fields[0] == "MSA":
            fields += ["", "", ""]
            out = f"{fields[1]} control_id={fields[2]}"
            if len(fields) > 3 and fields[3]:
                out += f" reason={fields[3]}"
    return out


async def _list(db: Database, status: str | None, limit: int) -> int:
    async with db.read() as conn:
        entries = await journal.listing(conn, status=status, limit=limit)
    print("id\treceived_at\tstatus\ttype\tsender\tcontrol_id\tack\terror")
    for e in entries:
        error = f"{e.error_code} {e.error}" if e.error else ""
        print(
            f"{e.id}\t{e.received_at.isoformat()}\t{e.status}\t{e.message_type}\t{e.sender}\t"
            f"{e.control_id}\t{e.ack_code or ''}\t{error}"
        )
    return 0


async def _reprocess(
    service: Hl7Service, db: Database, entry_id: int | None, all_failed: bool
) -> int:
    if all_failed:
        async with db.read() as conn:
            ids = await journal.ids_with_status(conn, ("error",))
            cutoff = utc_now_ms() - _STALE_RECEIVED
            stale = [
                e.id
                for e in await journal.listing(conn, status="received", limit=100_000)
                if e.received_at.replace(tzinfo=e.received_at.tzinfo or cutoff.tzinfo) < cutoff
            ]
        ids = sorted(set(ids) | set(stale))
    else:
        assert entry_id is not None
        ids = [entry_id]
    failures = 0
    for one in ids:
        result = await service.reprocess(one)
        if result is None:
            print(f"journal={one}: no such message, or not one that is processed", file=sys.stderr)
            failures += 1
            continue
        print(f"journal={one} {result.status} {_ack_summary(result.ack)}")
        if result.code not in ("AA", "CA"):
            failures += 1
    print(f"reprocessed {len(ids)} message(s), {failures} still failing")
    return 1 if failures else 0
