"""Database.write(lazy=True): on SQLite the write lock is taken at the first statement."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import text

from app.db import Database


@pytest.fixture
async def sqlite_db(tmp_path: Path):
    db = Database(f"sqlite:///{tmp_path / 'w.db'}", pool_size=2)
    async with db.write() as conn:
        await conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY)"))
    yield db
    await db.dispose()


async def test_a_lazy_transaction_without_statements_never_waits_for_the_lock(
    sqlite_db: Database,
) -> None:
    async def lazy_without_statements() -> str:
        async with sqlite_db.write(lazy=True):
            return "done"  # the validating and indexing a Bundle does before its first row

    async with sqlite_db.write() as conn:  # another writer holds the lock meanwhile
        await conn.execute(text("INSERT INTO t (id) VALUES (1)"))
        assert await asyncio.wait_for(lazy_without_statements(), timeout=5) == "done"


async def test_a_lazy_transaction_waits_for_the_lock_at_its_first_statement(
    sqlite_db: Database,
) -> None:
    entered, release = asyncio.Event(), asyncio.Event()
    order: list[str] = []

    async def holder() -> None:
        async with sqlite_db.write() as conn:
            await conn.execute(text("INSERT INTO t (id) VALUES (1)"))
            entered.set()
            await release.wait()
            order.append("holder commits")

    async def lazy() -> None:
        async with sqlite_db.write(lazy=True) as conn:
            order.append("lazy entered")
            release.set()
            await conn.execute(text("INSERT INTO t (id) VALUES (2)"))
            order.append("lazy wrote")

    task = asyncio.create_task(holder())
    await entered.wait()
    await asyncio.wait_for(lazy(), timeout=5)
    await task
    assert order == ["lazy entered", "holder commits", "lazy wrote"]
    async with sqlite_db.read() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM t"))).scalar() == 2


async def test_a_lazy_transaction_rolls_back_on_error(sqlite_db: Database) -> None:
    with pytest.raises(RuntimeError):
        async with sqlite_db.write(lazy=True) as conn:
            await conn.execute(text("INSERT INTO t (id) VALUES (7)"))
            raise RuntimeError("boom")
    async with sqlite_db.read() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM t"))).scalar() == 0
    async with sqlite_db.write(lazy=True) as conn:  # and the lock was released
        await conn.execute(text("INSERT INTO t (id) VALUES (8)"))
    async with sqlite_db.read() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM t"))).scalar() == 1
