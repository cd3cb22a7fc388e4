"""Apply the alembic migrations (migrations/) to a database: `dxf-bridge migrate`."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection

import migrations
from app.db import Database

__all__ = ["alembic_config", "upgrade", "upgrade_connection", "upgrade_url"]


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
