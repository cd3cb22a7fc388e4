"""Alembic environment. The URL comes from the caller (app.migrate) or from Settings."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from app.db import Database
from app.settings import Settings
from app.store.tables import metadata

config = context.config


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        compare_type=True,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_async(url: str) -> None:
    db = Database(url, pool_size=1)
    try:
        async with db.write() as conn:
            await conn.run_sync(_run)
    finally:
        await db.dispose()


if context.is_offline_mode():
    context.configure(
        url=config.attributes.get("database_url"), target_metadata=metadata, literal_binds=True
    )
    with context.begin_transaction():
        context.run_migrations()
elif (connection := config.attributes.get("connection")) is not None:
    _run(connection)
else:
    asyncio.run(_run_async(config.attributes.get("database_url") or Settings().database_url))
