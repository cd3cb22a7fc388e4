"""Migrations are the schema: upgrading an empty database to head gives exactly the models."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text

from app.db import Database
from app.migrate import alembic_config, upgrade
from app.store.tables import metadata
from tests.conftest import BACKENDS, PG_URL


def _diff(sync_conn):
    context = MigrationContext.configure(sync_conn, opts={"compare_type": True})
    return compare_metadata(context, metadata)


async def test_head_matches_models(session_db):
    """session_db was created from nothing by running the migrations (see conftest)."""
    async with session_db.read() as conn:
        diff = await conn.run_sync(_diff)
    assert diff == []


async def test_fresh_sqlite_file_upgrade(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'fresh' / 'x.db'}")
    try:
        await upgrade(db)
        await upgrade(db)  # idempotent at head
        async with db.read() as conn:
            assert await conn.run_sync(_diff) == []
    finally:
        await db.dispose()


@asynccontextmanager
async def _scratch(backend: str, tmp_path: Path) -> AsyncIterator[Database]:
    """An empty database of its own: a file on SQLite, a database beside the test one on
    PostgreSQL (dropped afterwards)."""
    if backend == "sqlite":
        db = Database(f"sqlite:///{tmp_path / 'scratch.db'}")
        try:
            yield db
        finally:
            await db.dispose()
        return
    assert PG_URL
    name = "dxf_migration_scratch"
    admin = await asyncpg.connect(PG_URL.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {name}")
        await admin.execute(f"CREATE DATABASE {name}")
        db = Database(PG_URL.rsplit("/", 1)[0] + f"/{name}", pool_size=1)
        try:
            yield db
        finally:
            await db.dispose()
            await admin.execute(f"DROP DATABASE IF EXISTS {name}")
    finally:
        await admin.close()


def _downgrade(connection, revision: str) -> None:
    cfg = alembic_config()
    cfg.attributes["connection"] = connection
    command.downgrade(cfg, revision)


_OLD_ROWS = [  # (table, res_id, the row's own values), in the order they were written
    ("spidx_token", "p1", {"param": "identifier", "system": "urn:x", "value": "a"}),
    ("spidx_token", "p2", {"param": "identifier", "system": None, "value": "b"}),
    ("spidx_token", "p1", {"param": "gender", "system": "urn:g", "value": "female"}),
    ("spidx_token", "p1", {"param": "identifier", "system": "urn:x", "value": "a"}),
    ("spidx_string", "p1", {"param": "family", "value_normalized": "o", "value_exact": "O"}),
    ("spidx_date", "p1", {"param": "birthdate", "low": "2000-01-01", "high": "2000-01-02"}),
    ("spidx_quantity", "p1", {"param": "x", "system": None, "code": "kg", "value": 1.5}),
    ("spidx_reference", "p1", {"param": "link", "target_type": "Patient", "target_id": "p2"}),
]


async def _rows(db: Database, table: str, columns: str, order: str) -> list[tuple]:
    async with db.read() as conn:
        found = await conn.execute(text(f"SELECT {columns} FROM {table} ORDER BY {order}"))
        return [tuple(row) for row in found]


@pytest.mark.parametrize("backend", BACKENDS)
async def test_index_rows_survive_rekeying_by_resource_and_back(backend, tmp_path):
    """0012 keys the index tables by (type, id, param, seq): existing rows keep their values,
    seq numbers each resource's rows in the order they were written, and the downgrade
    gives the row-id tables back with the same rows."""
    async with _scratch(backend, tmp_path) as db:
        await upgrade(db, "0011")
        async with db.write() as conn:
            for table, res_id, values in _OLD_ROWS:
                row = {"res_type": "Patient", "res_id": res_id, **values}
                if table == "spidx_date":
                    row["low"] = datetime.fromisoformat(row["low"]).replace(tzinfo=UTC)
                    row["high"] = datetime.fromisoformat(row["high"]).replace(tzinfo=UTC)
                names = ", ".join(row)
                marks = ", ".join(f":{k}" for k in row)
                await conn.execute(text(f"INSERT INTO {table} ({names}) VALUES ({marks})"), row)
        await upgrade(db)
        async with db.read() as conn:
            assert await conn.run_sync(_diff) == []
        assert await _rows(db, "spidx_token", "res_id, seq, param, system, value", "1, 2") == [
            ("p1", 0, "identifier", "urn:x", "a"),
            ("p1", 1, "gender", "urn:g", "female"),
            ("p1", 2, "identifier", "urn:x", "a"),  # a duplicate row is kept, seq tells it apart
            ("p2", 0, "identifier", None, "b"),
        ]
        for table in ("spidx_string", "spidx_date", "spidx_quantity", "spidx_reference"):
            assert await _rows(db, table, "res_id, seq, param", "1") == [
                ("p1", 0, values["param"]) for t, _r, values in _OLD_ROWS if t == table
            ]
        async with db.write() as conn:
            await conn.run_sync(_downgrade, "0011")
        assert await _rows(db, "spidx_token", "res_id, param, value", "row_id") == [
            ("p1", "identifier", "a"),
            ("p1", "gender", "female"),
            ("p1", "identifier", "a"),
            ("p2", "identifier", "b"),
        ]
        async with db.write() as conn:  # the row-id tables take new rows again
            await conn.execute(
                text(
                    "INSERT INTO spidx_token (res_type, res_id, param, value) "
                    "VALUES ('Patient', 'p3', 'identifier', 'c')"
                )
            )
        await upgrade(db)
        assert (await _rows(db, "spidx_token", "res_id, seq", "1, 2"))[-1:] == [("p3", 0)]


async def test_sqlite_planner_statistics_cover_every_index_table_index(tmp_path):
    """0009 seeds SQLite's planner statistics; 0012 rebuilds the index tables, which drops
    their statistics, and must seed them again. Without them $everything's supporting-resource
    join scanned every reference to an Organization, Practitioner or Location instead of one
    patient's rows (9 ms -> 108 ms at 100,000 resources)."""
    db = Database(f"sqlite:///{tmp_path / 'stats.db'}")
    try:
        await upgrade(db)
        async with db.read() as conn:
            seeded = {
                (row.tbl, row.idx)
                for row in await conn.execute(text("SELECT tbl, idx FROM sqlite_stat1"))
            }
            declared = {
                (row.tbl_name, row.name)
                for row in await conn.execute(
                    text(
                        "SELECT tbl_name, name FROM sqlite_master "
                        "WHERE type = 'index' AND tbl_name LIKE 'spidx%'"
                    )
                )
            }
    finally:
        await db.dispose()
    tables = {table for table, _index in declared}
    assert tables == {
        "spidx_token",
        "spidx_date",
        "spidx_string",
        "spidx_reference",
        "spidx_quantity",
    }
    assert declared | {(t, t) for t in tables} <= seeded  # value indexes and keys alike
