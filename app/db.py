"""The database handle: async engines for SQLite (embedded default) and PostgreSQL.

SQLite runs in WAL mode. Writes go through one connection that opens `BEGIN IMMEDIATE`, behind
an asyncio lock, so writers queue instead of failing with "database is locked"; `busy_timeout`
covers other processes (the MLLP listener, an import) writing to the same file. PostgreSQL uses
one pool for both; its row locks and unique constraints decide races.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, nullcontext, suppress
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from app.settings import async_database_url

__all__ = ["Database"]


def _private_file(path: Path) -> None:
    """Create the SQLite file (and its folder) readable by the server's user only: it holds PHI.
    SQLite gives the -wal and -shm files the database file's permissions."""
    if not path.parent.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def _raw_jsonb_codec(dbapi_conn: Any, _record: Any) -> None:
    """Make asyncpg hand JSONB over as the bytes PostgreSQL sent, not as parsed objects.

    The read path serves stored JSON without parsing it; SQLAlchemy's default codec would
    json.loads every value. Binary jsonb is a version byte (1) followed by the JSON text.
    """

    def encode(value: str | bytes) -> bytes:
        return b"\x01" + (value.encode() if isinstance(value, str) else value)

    def decode(value: bytes) -> bytes:
        return value[1:]

    async def install(conn: Any) -> None:
        await conn.set_type_codec(
            "jsonb", schema="pg_catalog", encoder=encode, decoder=decode, format="binary"
        )

    dbapi_conn.run_async(install)


class Database:
    def __init__(
        self, url: str, *, pool_size: int = 10, sqlite_synchronous: str = "NORMAL"
    ) -> None:
        self.url = async_database_url(url)
        parsed = make_url(self.url)
        self.dialect = parsed.get_backend_name()
        if self.dialect == "sqlite":
            if parsed.database and parsed.database != ":memory:":
                _private_file(Path(parsed.database))
            self.engine = self._sqlite_engine(pool_size, sqlite_synchronous, "BEGIN")
            self.write_engine = self._sqlite_engine(1, sqlite_synchronous, "BEGIN IMMEDIATE")
            self._write_lock: asyncio.Lock | None = asyncio.Lock()
        else:
            self.engine = create_async_engine(
                self.url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=False
            )
            event.listen(self.engine.sync_engine, "connect", _raw_jsonb_codec)
            self.write_engine = self.engine
            self._write_lock = None

    def _sqlite_engine(self, pool_size: int, synchronous: str, begin: str) -> AsyncEngine:
        engine = create_async_engine(self.url, pool_size=pool_size, max_overflow=0)

        @event.listens_for(engine.sync_engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            for pragma in (
                "PRAGMA journal_mode=WAL",
                f"PRAGMA synchronous={synchronous}",
                "PRAGMA busy_timeout=30000",
                "PRAGMA foreign_keys=ON",
            ):
                cur.execute(pragma)
            cur.close()

        @event.listens_for(engine.sync_engine, "begin")
        def _on_begin(conn: Any) -> None:
            conn.exec_driver_sql(begin)

        return engine

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        async with self.engine.connect() as conn, conn.begin():
            yield conn

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """One write transaction: committed on normal exit, rolled back on any exception."""
        lock = self._write_lock or nullcontext()
        async with lock, self.write_engine.begin() as conn:
            yield conn

    async def dispose(self) -> None:
        await self.engine.dispose()
        if self.write_engine is not self.engine:
            await self.write_engine.dispose()
