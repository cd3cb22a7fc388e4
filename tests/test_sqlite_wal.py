"""The SQLite write-ahead log stays bounded while readers overlap without pause.

SQLite's own (passive) checkpoints cannot empty the log while some reader always holds an
older snapshot; the writer has to force one (app/db.py). The readers here run in a thread and
alternate two connections so that one of them is always inside a read transaction, which is
what two busy server workers look like to the database.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from app.db import Database

LIMIT = 256 * 1024
ROW = b"x" * 4000  # about one page per row


def _overlapping_readers(path: Path, stop: threading.Event, started: threading.Event) -> None:
    """Two read-only connections taking turns so that a read transaction is always open."""
    a, b = (sqlite3.connect(path, isolation_level=None) for _ in range(2))
    for conn in (a, b):
        conn.execute("PRAGMA query_only=ON")
    older, newer = a, b
    older.execute("BEGIN")
    older.execute("SELECT count(*) FROM blob").fetchone()
    started.set()
    while not stop.is_set():
        newer.execute("BEGIN")  # the new snapshot opens before the old one closes
        newer.execute("SELECT count(*) FROM blob").fetchone()
        older.execute("COMMIT")
        older, newer = newer, older
    older.execute("COMMIT")
    a.close()
    b.close()


async def _write_under_readers(db: Database, path: Path, rows: int) -> list[int]:
    async with db.write() as conn:
        await conn.execute(text("CREATE TABLE blob (id INTEGER PRIMARY KEY, body BLOB)"))
    stop, started = threading.Event(), threading.Event()
    reader = threading.Thread(target=_overlapping_readers, args=(path, stop, started))
    reader.start()
    assert started.wait(10)
    sizes = []
    try:
        for i in range(rows):
            async with db.write() as conn:
                await conn.execute(
                    text("INSERT INTO blob (id, body) VALUES (:i, :b)"), {"i": i, "b": ROW}
                )
            sizes.append(db._wal_size())
    finally:
        stop.set()
        reader.join(10)
    return sizes


@pytest.mark.parametrize("limit", [LIMIT])
async def test_the_log_stays_near_its_limit_under_overlapping_readers(
    tmp_path: Path, limit: int
) -> None:
    path = tmp_path / "wal.db"
    db = Database(f"sqlite:///{path}", pool_size=2, wal_limit_bytes=limit)
    try:
        sizes = await _write_under_readers(db, path, rows=600)  # about 2.5 MB written
    finally:
        await db.dispose()
    assert db.forced_checkpoints >= 1
    # one insert adds a few pages; a checkpoint that had to give up is retried next commit
    assert max(sizes) < limit * 3, max(sizes)
    assert sizes[-1] <= limit + 64 * 1024
    with sqlite3.connect(path) as check:
        assert check.execute("SELECT count(*) FROM blob").fetchone()[0] == 600
        assert check.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


async def test_without_a_limit_the_readers_starve_the_passive_checkpoints(tmp_path: Path) -> None:
    """The failure the limit exists for: the same load with the bound off grows the log."""
    path = tmp_path / "wal.db"
    db = Database(f"sqlite:///{path}", pool_size=2, wal_limit_bytes=0)
    try:
        sizes = await _write_under_readers(db, path, rows=600)
    finally:
        await db.dispose()
    assert db.forced_checkpoints == 0
    assert sizes[-1] > 2 * 1024 * 1024


async def test_commits_leave_checkpoints_to_the_background_thread(tmp_path: Path) -> None:
    """No commit runs a checkpoint itself (wal_autocheckpoint=0); past the threshold the
    checkpointer thread copies the log while writes go on, and the writer's bound (here
    8 MB) empties it whenever writes outrun the copying."""
    path = tmp_path / "bg.db"
    limit = 8 * 1024 * 1024
    db = Database(f"sqlite:///{path}", pool_size=2, wal_limit_bytes=limit)
    try:
        async with db.write() as conn:
            assert (await conn.execute(text("PRAGMA wal_autocheckpoint"))).scalar() == 0
            await conn.execute(text("CREATE TABLE blob (id INTEGER PRIMARY KEY, body BLOB)"))
        sizes = []
        for i in range(4000):  # about 16 MB through the log, four times the threshold
            async with db.write() as conn:
                await conn.execute(
                    text("INSERT INTO blob (id, body) VALUES (:i, :b)"), {"i": i, "b": ROW}
                )
            sizes.append(db._wal_size())
            if i % 500 == 499:
                deadline = time.monotonic() + 30
                while db._checkpointer.runs == 0 and time.monotonic() < deadline:
                    await asyncio.sleep(0.01)  # polling a condition, with a deadline
        assert db._checkpointer.runs >= 1
        # a forced checkpoint that meets the thread's busy is retried at the next commit
        assert max(sizes) < limit + 1024 * 1024, max(sizes)  # 50 MB unbounded
    finally:
        await db.dispose()
    with sqlite3.connect(path) as check:
        assert check.execute("SELECT count(*) FROM blob").fetchone()[0] == 4000
