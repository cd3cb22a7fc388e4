"""Migrations are the schema: upgrading an empty database to head gives exactly the models."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from app.db import Database
from app.migrate import upgrade
from app.store.tables import metadata


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
