"""Apply the alembic migrations (migrations/) to a database: `dxf-bridge migrate`; and refresh
the planner statistics: `dxf-bridge analyze`."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.engine import Connection

import migrations
from app.db import Database

__all__ = [
    "alembic_config",
    "analyze",
    "analyze_url",
    "upgrade",
    "upgrade_connection",
    "upgrade_url",
]


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(migrations.__file__).parent))
    return cfg


def upgrade_connection(connection: Connection, revision: str = "head") -> None:
    """Upgrade through an open synchronous connection (used via AsyncConnection.run_sync)."""
    cfg = alembic_config()
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, revision)


async def upgrade(db: Database, revision: str = "head") -> None:
    async with db.write() as conn:
        await conn.run_sync(upgrade_connection, revision)


def upgrade_url(url: str, revision: str = "head") -> None:
    async def _go() -> None:
        db = Database(url, pool_size=1)
        try:
            await upgrade(db, revision)
        finally:
            await db.dispose()

    asyncio.run(_go())


async def analyze(db: Database) -> None:
    """Refresh the query planner's statistics after a bulk load. PostgreSQL's autovacuum gets
    there on its own within minutes; until then plans built on an empty table's statistics can
    be off by orders of magnitude. On SQLite this replaces the seeded statistics (migration
    0009) with measured ones. The whole of every index is read (about 1.3 s per 100,000
    resources): SQLite's sampling (`analysis_limit`) caps its counts at the sample size, and
    the plans built on those were up to fifteen times slower than with the seeded figures.

    On PostgreSQL it is `VACUUM (ANALYZE)`: vacuum also marks the freshly loaded pages
    all-visible, without which every index-only scan of the index tables visits the table for
    each row it reads (a `_has` over a common code read 14,573 heap rows for a page of 20)."""
    if db.is_sqlite:
        async with db.write() as conn:
            await conn.execute(text("ANALYZE"))
        return
    async with db.engine.connect() as conn:  # VACUUM cannot run inside a transaction
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text("VACUUM (ANALYZE)"))


def analyze_url(url: str) -> None:
    async def _go() -> None:
        db = Database(url, pool_size=1)
        try:
            await analyze(db)
        finally:
            await db.dispose()

    asyncio.run(_go())
