"""The database handle: PostgreSQL through asyncpg, or the embedded SQLite file.

Both are used through the same awaitable connection surface (`DbConnection`: `execute`,
`scalar`, `begin_nested`, `run_sync`), so the repository has one code path.

PostgreSQL uses SQLAlchemy's async engine; row locks and unique constraints decide races.

SQLite runs on the event-loop thread through the standard `sqlite3` driver. A statement on a
local WAL database takes microseconds, far less than the thread hand-offs an async wrapper such
as aiosqlite costs on every call (measured: they tripled read latency). Writers queue on an
asyncio lock inside the process and on `BEGIN IMMEDIATE` across processes (the MLLP listener
or an import writing the same file); while another process holds the write lock the request
waits with `asyncio.sleep` between attempts instead of blocking the loop.

SQLite's automatic checkpoints are passive: they copy to the database only the log frames no
reader still needs, and the log file restarts only once every frame is copied. A server whose
readers overlap without pause (two workers under load) never reaches that moment, so the log
grows without bound (13.5 GB beside a 4.5 GB database in the 1M-resource benchmark) and every
page read searches a longer log index. The writer therefore bounds it: after a commit that
leaves the log over `wal_limit_bytes`, it runs a TRUNCATE checkpoint, which waits (a bounded
time) for the readers of older snapshots to finish, copies everything and empties the log
(https://sqlite.org/c3ref/wal_checkpoint_v2.html, https://sqlite.org/wal.html#avoiding_excessively_large_wal_files).

Ordinary checkpoints run off the request path: SQLite would run one inside the commit that
takes the log past 1,000 pages (copying them into the database and syncing it), which doubled
the cost of a commit. Pooled connections set `wal_autocheckpoint=0`, and a thread of this
process (`_Checkpointer`, its own connection) runs a passive checkpoint whenever a commit leaves
more than CHECKPOINT_AFTER_BYTES in the log. sqlite3 releases the GIL while it copies, so on a
second core the copying overlaps the server's own work.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import sqlite3
import threading
import time
from collections import namedtuple
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from datetime import datetime
from functools import cache
from operator import itemgetter
from pathlib import Path
from typing import Any, Protocol, TypeVar

import asyncpg
from sqlalchemy import Connection, DateTime, Insert, create_engine, event, text
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.dialects.postgresql import asyncpg as asyncpg_dialect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from app.settings import Settings, async_database_url

__all__ = [
    "Database",
    "DbConnection",
    "Prepared",
    "pg_insert_all",
    "pg_insert_all_params",
    "pg_unnest_sql",
]

T = TypeVar("T")

_LOCK_WAIT_SECONDS = 30.0  # how long a writer waits for another process's write lock
_LOCK_RETRY_SECONDS = 0.001  # how often it tries again meanwhile
_CHECKPOINT_WAIT_MS = 2000  # how long a forced checkpoint waits for older readers
DEFAULT_WAL_LIMIT_BYTES = 64 * 1024 * 1024
DEFAULT_SQLITE_CACHE_MB = 0  # 0: SQLite's own default (2 MB a connection)
DEFAULT_SQLITE_WRITER_CACHE_MB = 0  # 0: SQLite's own default
CHECKPOINT_AFTER_BYTES = 4 * 1024 * 1024  # SQLite's own default: 1,000 pages of 4 KiB
_CHECKPOINT_INTERVAL_SECONDS = 0.05


class DbConnection(Protocol):
    """What the repository needs of a connection inside a transaction."""

    async def execute(self, statement: Any, parameters: Any = None) -> Any: ...

    async def scalar(self, statement: Any, parameters: Any = None) -> Any: ...

    def begin_nested(self) -> Any: ...

    async def run_sync(self, fn: Callable[..., T], *args: Any) -> T: ...


class _LoopConnection:
    """A synchronous SQLAlchemy connection used from the event-loop thread, awaitable like
    AsyncConnection. Only for SQLite, whose statements do not wait on the network."""

    __slots__ = ("sync",)

    def __init__(self, sync: Connection) -> None:
        self.sync = sync

    async def execute(self, statement: Any, parameters: Any = None) -> Any:
        if isinstance(statement, Prepared):
            return statement.run_sqlite(self.sync.connection.driver_connection, parameters)
        return self.sync.execute(statement, parameters)

    async def scalar(self, statement: Any, parameters: Any = None) -> Any:
        if isinstance(statement, Prepared):
            return (await self.execute(statement, parameters)).scalar()
        return self.sync.scalar(statement, parameters)

    @asynccontextmanager
    async def begin_nested(self) -> AsyncIterator[None]:
        with self.sync.begin_nested():
            yield

    async def run_sync(self, fn: Callable[..., T], *args: Any) -> T:
        return fn(self.sync, *args)


class _LazyWrite:
    """A SQLite write transaction opened by its first statement (Database.write(lazy=True))."""

    __slots__ = ("_conn", "_db", "_stack")

    def __init__(self, db: Database) -> None:
        self._db = db
        self._stack: AsyncExitStack | None = None
        self._conn: DbConnection | None = None

    async def _open(self) -> DbConnection:
        if self._conn is None:
            self._stack = AsyncExitStack()
            self._conn = await self._stack.enter_async_context(self._db.write())
        return self._conn

    async def finish(self, exc: BaseException | None) -> None:
        """Commit (no exception) or roll back what was opened; nothing if nothing was."""
        stack, self._stack, self._conn = self._stack, None, None
        if stack is None:
            return
        if exc is None:
            await stack.aclose()
        else:
            await stack.__aexit__(type(exc), exc, exc.__traceback__)

    async def execute(self, statement: Any, parameters: Any = None) -> Any:
        return await (await self._open()).execute(statement, parameters)

    async def scalar(self, statement: Any, parameters: Any = None) -> Any:
        return await (await self._open()).scalar(statement, parameters)

    @asynccontextmanager
    async def begin_nested(self) -> AsyncIterator[None]:
        async with (await self._open()).begin_nested():
            yield

    async def run_sync(self, fn: Callable[..., T], *args: Any) -> T:
        return await (await self._open()).run_sync(fn, *args)


def _private_file(path: Path) -> None:
    """Create the SQLite file (and its folder) readable by the server's user only: it holds PHI.
    SQLite gives the -wal and -shm files the database file's permissions."""
    if not path.parent.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


async def _install_raw_jsonb(conn: Any) -> None:
    await conn.set_type_codec(
        "jsonb", schema="pg_catalog", encoder=_jsonb_encode, decoder=_jsonb_decode, format="binary"
    )


def _jsonb_encode(value: str | bytes) -> bytes:
    return b"\x01" + (value.encode() if isinstance(value, str) else value)


def _jsonb_decode(value: bytes) -> bytes:
    return value[1:]


def _asyncpg_dsn(url: str) -> str:
    """The SQLAlchemy URL as a DSN asyncpg accepts (no driver name)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _raw_jsonb_codec(dbapi_conn: Any, _record: Any) -> None:
    """Make asyncpg hand JSONB over as the bytes PostgreSQL sent, not as parsed objects.

    The read path serves stored JSON without parsing it; SQLAlchemy's default codec would
    json.loads every value. Binary jsonb is a version byte (1) followed by the JSON text.
    """

    dbapi_conn.run_async(_install_raw_jsonb)


def _is_locked(exc: Exception) -> bool:
    """A SQLite "database is locked/busy" error, raw or wrapped by SQLAlchemy."""
    text = str(getattr(exc, "orig", exc)).lower()
    return "locked" in text or "busy" in text


async def _when_unlocked(begin: Callable[[], T]) -> T:
    """`begin()` (a BEGIN IMMEDIATE) once no other process holds SQLite's write lock: while
    one does, yield the loop (its other requests go on) and try again soon; a failed BEGIN
    IMMEDIATE costs microseconds, a late one a whole gap. Gives up after _LOCK_WAIT_SECONDS."""
    deadline = time.monotonic() + _LOCK_WAIT_SECONDS
    while True:
        try:
            return begin()
        except (OperationalError, sqlite3.OperationalError) as exc:
            if not _is_locked(exc) or time.monotonic() > deadline:
                raise
        await asyncio.sleep(_LOCK_RETRY_SECONDS)


class Database:
    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 10,
        sqlite_synchronous: str = "NORMAL",
        wal_limit_bytes: int = DEFAULT_WAL_LIMIT_BYTES,
        sqlite_cache_mb: int = DEFAULT_SQLITE_CACHE_MB,
        sqlite_writer_cache_mb: int = DEFAULT_SQLITE_WRITER_CACHE_MB,
    ) -> None:
        self.url = async_database_url(url)
        self.wal_limit_bytes = wal_limit_bytes
        self.forced_checkpoints = 0
        parsed = make_url(self.url)
        self.dialect = parsed.get_backend_name()
        if self.dialect == "sqlite":
            if not parsed.database or parsed.database == ":memory:":
                raise ValueError(
                    "SQLite needs a database file (in-memory databases are not shared)"
                )
            _private_file(Path(parsed.database))
            sync_url = parsed.set(drivername="sqlite+pysqlite")
            self._sqlite = create_engine(
                sync_url,
                pool_size=pool_size,
                max_overflow=pool_size,
                connect_args={"check_same_thread": False},
                pool_reset_on_return=None,  # every use ends in an explicit commit or rollback
                pool_use_lifo=True,  # the connections used most keep their caches warm
            )
            self._pragmas = _sqlite_pragmas(sqlite_synchronous, sqlite_cache_mb)
            # busy_timeout=0: a writer that finds the lock taken by another process does not
            # sleep inside SQLite (which blocks the event loop for SQLite's 1-100 ms steps) but
            # retries from the loop every millisecond (_when_unlocked)
            self._writer_pragmas = _sqlite_pragmas(
                sqlite_synchronous, sqlite_writer_cache_mb, busy_ms=0
            )
            event.listen(self._sqlite, "connect", self._pragmas)
            event.listen(self._sqlite, "begin", _sqlite_begin)
            # Write transactions take turns (self._write_lock), so one connection serves them
            # all, with its own cache size (DXF_SQLITE_WRITER_CACHE_MB; the audit rows' lone
            # writer gets the same).
            self._sqlite_writer = create_engine(
                sync_url,
                pool_size=1,
                max_overflow=0,
                connect_args={"check_same_thread": False},
                pool_reset_on_return=None,
            )
            event.listen(self._sqlite_writer, "connect", self._writer_pragmas)
            event.listen(self._sqlite_writer, "begin", _sqlite_begin)
            self._write_lock = asyncio.Lock()
            self._point_reader: sqlite3.Connection | None = None
            self._point_path = parsed.database
            self._wal_path = parsed.database + "-wal"
            self._checkpointer = _Checkpointer(parsed.database)
            self._lone_writer: sqlite3.Connection | None = None  # see execute_alone
        else:
            self.engine = create_async_engine(
                self.url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=False
            )
            event.listen(self.engine.sync_engine, "connect", _raw_jsonb_codec)
            # one-statement reads go straight to asyncpg: one round trip, no BEGIN/ROLLBACK
            # and no per-call SQLAlchemy execution set-up (see fetch_one)
            # by whether their commits wait for the WAL flush (see _pool)
            self._point_pools: dict[bool, asyncpg.Pool] = {}
            self._point_pool_lock = asyncio.Lock()
            self._point_pool_size = max(2, pool_size // 2)

    @classmethod
    def from_settings(cls, settings: Settings, *, pool_size: int | None = None) -> Database:
        """The database the settings name, with their pool size, durability and WAL bound."""
        return cls(
            settings.database_url,
            pool_size=settings.db_pool_size if pool_size is None else pool_size,
            sqlite_synchronous=settings.sqlite_synchronous,
            wal_limit_bytes=settings.sqlite_wal_limit_mb * 1024 * 1024,
            sqlite_cache_mb=settings.sqlite_cache_mb,
            sqlite_writer_cache_mb=settings.sqlite_writer_cache_mb,
        )

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @asynccontextmanager
    async def read(self) -> AsyncIterator[DbConnection]:
        """A connection for reads. On SQLite, one read transaction: its statements share a
        snapshot. On PostgreSQL, autocommit: each statement is its own snapshot, as it would
        be in a READ COMMITTED transaction anyway, minus the BEGIN and ROLLBACK round trips
        (a search is one round trip instead of three)."""
        if self.is_sqlite:
            with self._sqlite.connect() as conn:
                conn.info["begin"] = "BEGIN"
                with conn.begin():
                    yield _LoopConnection(conn)
            return
        async with self.engine.connect() as aconn:
            await aconn.execution_options(isolation_level="AUTOCOMMIT")
            yield _PgConnection(aconn)

    @asynccontextmanager
    async def write(self, *, lazy: bool = False) -> AsyncIterator[DbConnection]:
        """One write transaction: committed on normal exit, rolled back on any exception.

        `lazy=True` (SQLite): the write lock is taken at the transaction's first statement,
        not on entry, so work done before it (validating and indexing a Bundle's resources,
        whose rows the repository holds back until commit) runs while other writers write.
        A lazy transaction that never runs a statement commits nothing and takes no lock.
        """
        if not self.is_sqlite:
            async with self.engine.begin() as aconn:
                yield _PgConnection(aconn)
            return
        if lazy:
            deferred = _LazyWrite(self)
            try:
                yield deferred
            except BaseException as exc:
                await deferred.finish(exc)
                raise
            await deferred.finish(None)
            return
        async with self._write_lock:
            with self._sqlite_writer.connect() as conn:
                conn.info["begin"] = "BEGIN IMMEDIATE"
                tx = await _when_unlocked(conn.begin)
                try:
                    yield _LoopConnection(conn)
                except BaseException:
                    tx.rollback()
                    raise
                tx.commit()
                size = self._wal_size()
                if self.wal_limit_bytes and size > self.wal_limit_bytes:
                    await self._checkpoint(conn.connection.driver_connection)
                elif size > CHECKPOINT_AFTER_BYTES:
                    self._checkpointer.wake()

    def _wal_size(self) -> int:
        try:
            return os.stat(self._wal_path).st_size
        except FileNotFoundError:
            return 0

    async def _checkpoint(self, raw: sqlite3.Connection) -> None:
        """Copy the whole log into the database and empty it, still holding this process's
        write lock (so no writer here adds frames meanwhile). It runs in a thread: the loop
        keeps serving reads, some of which the checkpoint may be waiting for."""
        started = time.monotonic()
        before = self._wal_size()
        busy, _log, _done = await asyncio.to_thread(_truncate_wal, raw)
        self.forced_checkpoints += 1
        _log_checkpoint(before, self._wal_size(), busy, time.monotonic() - started)

    async def fetch_one(self, statement: Prepared, params: dict[str, Any]) -> Any:
        """Run a one-row, one-statement read outside any transaction; the row, or None.

        On SQLite this uses a dedicated query-only connection: one statement is its own
        snapshot, so the pool and BEGIN/COMMIT are skipped.
        """
        if self.is_sqlite:
            if self._point_reader is None:
                self._point_reader = _open_point_reader(self._point_path)
            return statement.run_sqlite(self._point_reader, params).first()
        pool = await self._pool()
        record = await pool.fetchrow(
            statement.pg_sql, *[params[name] for name in statement.pg_param_names]
        )
        if record is None:
            return None
        row = tuple(record)
        return statement.row_type(*row) if statement.row_type else row

    async def execute_alone(
        self,
        statement: Prepared,
        params: dict[str, Any] | list[dict[str, Any]],
        *,
        wait_for_flush: bool = True,
    ) -> None:
        """Run one write statement (for a list of parameter sets: once per set) as its own
        transaction, committed when this returns.

        On PostgreSQL one row is one round trip (autocommit) on the point pool, or, with
        `wait_for_flush=False`, on a small pool whose sessions have `synchronous_commit = off`
        (the commit does not wait for the WAL flush: a database crash can lose the last
        fraction of a second of such rows); several rows are one transaction. On SQLite it is
        a `write()` transaction; durability follows `DXF_SQLITE_SYNCHRONOUS`.
        """
        if self.is_sqlite:
            await self._execute_alone_sqlite(statement, params)
            return
        pool = await self._pool(flushed=wait_for_flush)
        names = statement.pg_param_names
        rows = [[p[n] for n in names] for p in (params if isinstance(params, list) else [params])]
        if len(rows) == 1:
            await pool.execute(statement.pg_sql, *rows[0])
            return
        async with pool.acquire() as conn, conn.transaction():
            await conn.executemany(statement.pg_sql, rows)

    async def _execute_alone_sqlite(
        self, statement: Prepared, params: dict[str, Any] | list[dict[str, Any]]
    ) -> None:
        """On a connection of its own, with no pool checkout and no SQLAlchemy transaction
        around it: the audit row every FHIR answer waits for costs three sqlite3 calls."""
        async with self._write_lock:
            if self._lone_writer is None:
                self._lone_writer = sqlite3.connect(
                    self._point_path, isolation_level=None, check_same_thread=False
                )
                self._writer_pragmas(self._lone_writer, None)
            raw = self._lone_writer
            await _when_unlocked(lambda: raw.execute("BEGIN IMMEDIATE"))
            try:
                statement.run_sqlite(raw, params)
            except BaseException:
                raw.execute("ROLLBACK")
                raise
            raw.execute("COMMIT")
            size = self._wal_size()
            if self.wal_limit_bytes and size > self.wal_limit_bytes:
                await self._checkpoint(raw)
            elif size > CHECKPOINT_AFTER_BYTES:
                self._checkpointer.wake()

    async def _pool(self, *, flushed: bool = True) -> asyncpg.Pool:
        """The point pool: one-statement reads and writes straight on asyncpg. `flushed=False`:
        a second pool whose sessions have `synchronous_commit = off` (execute_alone's
        `wait_for_flush=False`), set once per session so that each insert stays one round trip
        instead of BEGIN, SET LOCAL, INSERT and COMMIT."""
        pool = self._point_pools.get(flushed)
        if pool is None:
            async with self._point_pool_lock:
                pool = self._point_pools.get(flushed)
                if pool is None:
                    pool = self._point_pools[flushed] = await asyncpg.create_pool(
                        _asyncpg_dsn(self.url),
                        min_size=1,
                        max_size=self._point_pool_size,
                        init=_install_raw_jsonb,
                        server_settings={} if flushed else {"synchronous_commit": "off"},
                    )
        return pool

    async def dispose(self) -> None:
        if not self.is_sqlite:
            pools, self._point_pools = self._point_pools, {}
            for pool in pools.values():
                await pool.close()
        if self.is_sqlite:
            self._checkpointer.stop()
            if self._lone_writer is not None:
                self._lone_writer.close()
                self._lone_writer = None
            if self._point_reader is not None:
                self._point_reader.close()
                self._point_reader = None
            self._sqlite.dispose()
            self._sqlite_writer.dispose()
        else:
            await self.engine.dispose()


class Prepared:
    """A static SQLAlchemy statement also compiled once to SQLite SQL.

    On SQLite, `DbConnection.execute` runs it straight on the driver connection, skipping the
    per-call compile-cache lookup, parameter processing and result set-up that cost several
    times the statement itself; on PostgreSQL it runs as the SQLAlchemy statement it wraps.
    Only for statements whose shape never changes (built once, at import).
    """

    def __init__(self, statement: Any, column_keys: list[str] | None = None) -> None:
        self.statement = statement
        dialect = sqlite_dialect.dialect()
        compiled = statement.compile(dialect=dialect, column_keys=column_keys)
        self.sql = str(compiled)
        self.param_names = list(compiled.positiontup or [])
        self._binds = [
            _bind_processor(compiled.binds[name].type.dialect_impl(dialect), dialect)
            for name in self.param_names
        ]
        # the values in parameter order at C speed; then the few that need converting
        self._values: Callable[[dict[str, Any]], Any] = (
            itemgetter(*self.param_names)
            if len(self.param_names) > 1
            else (lambda v: (v[self.param_names[0]],))
            if self.param_names
            else (lambda _v: ())
        )
        self._converted = [(i, proc) for i, proc in enumerate(self._binds) if proc is not None]
        pg = statement.compile(dialect=asyncpg_dialect.dialect(), column_keys=column_keys)
        self.pg_sql = str(pg)
        self.pg_param_names = list(pg.positiontup or [])
        self._unnest: tuple[Any, list[str]] | None | bool = False  # built on first use
        columns = list(getattr(statement, "selected_columns", []))
        self.row_type: Any = (
            namedtuple("Row", [c.key for c in columns], rename=True) if columns else None  # noqa: PYI024
        )
        self._results = [
            c.type.dialect_impl(dialect).result_processor(dialect, None) for c in columns
        ]

    def pg_unnest(self) -> tuple[Any, list[str]] | None:
        """For a plain INSERT of a table's columns: the same insert as one PostgreSQL
        statement over arrays (`INSERT ... SELECT * FROM unnest(:c0, :c1, ...)`) and the
        parameter name behind each array; None for any other statement."""
        if self._unnest is False:
            self._unnest = _unnest_insert(self.statement, self.pg_param_names)
        return self._unnest  # type: ignore[return-value]

    def params(self, values: dict[str, Any]) -> Any:
        """The parameters in SQLite order (a tuple, or a list when some are converted)."""
        out = self._values(values)
        if not self._converted:
            return out
        out = list(out)
        for i, proc in self._converted:
            if out[i] is not None:
                out[i] = proc(out[i])
        return out

    def row(self, raw: tuple[Any, ...]) -> Any:
        values = [
            proc(value) if proc is not None and value is not None else value
            for proc, value in zip(self._results, raw, strict=True)
        ]
        return self.row_type(*values) if self.row_type else tuple(values)

    def run_sqlite(self, conn: sqlite3.Connection, values: Any) -> _RawResult:
        try:
            if isinstance(values, list):
                cursor = conn.executemany(self.sql, [self.params(v) for v in values])
            else:
                cursor = conn.execute(self.sql, self.params(values or {}))
        except sqlite3.Error as exc:
            raise DBAPIError.instance(self.sql, values, exc, sqlite3.Error) from exc
        return _RawResult(cursor, self)


def _bind_processor(type_impl: Any, dialect: Any) -> Callable[[Any], Any] | None:
    """The type's SQLite bind processor; for date-times one that remembers its recent
    answers (index rows repeat the same few dates, and every row of a transaction has the
    same last_updated), since formatting one costs more than the rest of the row."""
    proc = type_impl.bind_processor(dialect)
    if proc is None or not isinstance(type_impl, DateTime):
        return proc
    known: dict[Any, Any] = {}

    def process(value: Any) -> Any:
        # equal instants in different offsets are equal datetimes but format differently
        key = (value, value.utcoffset()) if isinstance(value, datetime) else None
        if key is None:
            return proc(value)
        formatted = known.get(key)
        if formatted is None:
            if len(known) >= 4096:
                known.clear()
            formatted = known[key] = proc(value)
        return formatted

    return process


class _RawResult:
    """The part of a SQLAlchemy Result the repository uses, over a sqlite3 cursor."""

    __slots__ = ("_cursor", "_prepared", "rowcount")

    def __init__(self, cursor: sqlite3.Cursor, prepared: Prepared) -> None:
        self._cursor = cursor
        self._prepared = prepared
        self.rowcount = cursor.rowcount

    def first(self) -> Any:
        raw = self._cursor.fetchone()
        return None if raw is None else self._prepared.row(raw)

    def all(self) -> list[Any]:
        return [self._prepared.row(raw) for raw in self._cursor.fetchall()]

    def __iter__(self) -> Any:
        return iter(self.all())

    def scalar(self) -> Any:
        row = self.first()
        return None if row is None else row[0]


class _PgConnection:
    """AsyncConnection for the repository: runs a Prepared as the statement it wraps."""

    __slots__ = ("conn",)

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def execute(self, statement: Any, parameters: Any = None) -> Any:
        if isinstance(statement, Prepared):
            if isinstance(parameters, list) and len(parameters) > 1:
                bulk = statement.pg_unnest()
                if bulk is not None:
                    # one statement for all the rows: the driver's executemany sends a Bind
                    # and an Execute per row, and PostgreSQL runs the insert once per row
                    sql, names = bulk
                    columns = {f"c{i}": [row[n] for row in parameters] for i, n in enumerate(names)}
                    return await self.conn.execute(sql, columns)
            statement = statement.statement
        return await self.conn.execute(statement, parameters)

    async def scalar(self, statement: Any, parameters: Any = None) -> Any:
        if isinstance(statement, Prepared):
            statement = statement.statement
        return await self.conn.scalar(statement, parameters)

    def begin_nested(self) -> Any:
        return self.conn.begin_nested()

    async def run_sync(self, fn: Callable[..., T], *args: Any) -> T:
        return await self.conn.run_sync(fn, *args)


def _unnest_insert(statement: Any, names: list[str]) -> tuple[Any, list[str]] | None:
    sql = pg_unnest_sql(statement, names, "c")
    return None if sql is None else (text(sql), names)


def pg_unnest_sql(statement: Any, names: list[str], prefix: str) -> str | None:
    """`INSERT INTO t (a, b) SELECT * FROM unnest(CAST(:{prefix}0 AS ...[]), ...)`, or None
    when `statement` is not a plain INSERT of `names` columns."""
    if not isinstance(statement, Insert) or statement._returning or statement._post_values_clause:
        return None
    table = statement.table
    if not names or any(n not in table.c for n in names):
        return None
    pg = asyncpg_dialect.dialect()

    def array_of(column: Any) -> str:
        # an array type takes no COLLATE; the column's own collation applies on insert
        return re.sub(r' COLLATE "[^"]*"', "", column.type.compile(dialect=pg)) + "[]"

    casts = ", ".join(f"CAST(:{prefix}{i} AS {array_of(table.c[n])})" for i, n in enumerate(names))
    columns = ", ".join(f'"{table.c[n].name}"' for n in names)
    return f'INSERT INTO "{table.name}" ({columns}) SELECT * FROM unnest({casts})'


@cache
def pg_insert_all(statements: tuple[Prepared, ...]) -> Any:
    """One PostgreSQL statement that runs several plain INSERTs over arrays, all but the last
    as data-modifying CTEs: rows for many tables in one round trip, all or none. Parameters
    `s{statement}c{column}` (pg_insert_all_params); None if one is not a plain INSERT."""
    parts = []
    for k, prepared in enumerate(statements):
        sql = pg_unnest_sql(prepared.statement, prepared.pg_param_names, f"s{k}c")
        if sql is None:
            return None
        parts.append(sql)
    ctes = ", ".join(f"w{k} AS ({sql})" for k, sql in enumerate(parts[:-1]))
    return text(f"WITH {ctes} {parts[-1]}" if ctes else parts[-1])


def pg_insert_all_params(batches: list[tuple[Prepared, list[dict[str, Any]]]]) -> dict[str, Any]:
    """The arrays of pg_insert_all(tuple of the batches' statements)."""
    params: dict[str, Any] = {}
    for k, (prepared, rows) in enumerate(batches):
        for i, name in enumerate(prepared.pg_param_names):
            params[f"s{k}c{i}"] = [row[name] for row in rows]
    return params


class _Checkpointer:
    """Passive checkpoints in a thread of their own, woken by commits (see the module's
    docstring). Started on the first wake-up; stop() ends it."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._wanted = threading.Event()
        self._quiet = threading.Event()  # set only by stop(): ends the pause between runs
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.runs = 0  # checkpoints run so far (tests wait on it)

    def wake(self) -> None:
        with self._lock:
            if self._stopping:
                return
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, name="dxf-sqlite-checkpoint", daemon=True
                )
                self._thread.start()
        self._wanted.set()

    def _loop(self) -> None:
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA busy_timeout=100")
            while True:
                self._wanted.wait()
                self._wanted.clear()
                if self._stopping:
                    return
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                except sqlite3.Error as exc:  # busy or locked: the next commit wakes us again
                    logging.getLogger("dxf.db").warning(
                        "sqlite checkpoint failed", extra={"error": type(exc).__name__}
                    )
                self.runs += 1
                # at most one checkpoint per interval: while readers keep the log from being
                # restarted, every commit finds it over the threshold and wakes us again
                self._quiet.wait(_CHECKPOINT_INTERVAL_SECONDS)
        finally:
            conn.close()

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            thread, self._thread = self._thread, None
        self._quiet.set()
        self._wanted.set()
        if thread is not None:
            thread.join(timeout=30)


def _truncate_wal(raw: sqlite3.Connection) -> tuple[int, int, int]:
    """PRAGMA wal_checkpoint(TRUNCATE) with a longer busy wait than ordinary statements get;
    (busy, log frames, frames copied). busy=1: a reader or another process's writer outlasted
    the wait; the next commit over the limit tries again."""
    before = raw.execute("PRAGMA busy_timeout").fetchone()[0]
    raw.execute(f"PRAGMA busy_timeout={_CHECKPOINT_WAIT_MS}")
    try:
        row = raw.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    finally:
        raw.execute(f"PRAGMA busy_timeout={int(before)}")
    return (int(row[0]), int(row[1]), int(row[2])) if row else (1, -1, -1)


def _log_checkpoint(before: int, after: int, busy: int, seconds: float) -> None:
    logging.getLogger("dxf.db").info(
        "sqlite wal checkpoint",
        extra={
            "wal_bytes_before": before,
            "wal_bytes_after": after,
            "busy": bool(busy),
            "ms": round(seconds * 1000, 1),
        },
    )


def _open_point_reader(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout=100")
    conn.execute("PRAGMA query_only=ON")
    return conn


def _sqlite_pragmas(
    synchronous: str, cache_mb: int = 0, *, busy_ms: int = 100
) -> Callable[[Any, Any], None]:
    sizing = [f"PRAGMA cache_size={-cache_mb * 1024}"] if cache_mb else []  # negative: KiB

    def on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (see _sqlite_begin)
        cur = dbapi_conn.cursor()
        for pragma in (
            "PRAGMA journal_mode=WAL",
            f"PRAGMA synchronous={synchronous}",
            f"PRAGMA busy_timeout={busy_ms}",  # longer waits happen in _when_unlocked
            "PRAGMA foreign_keys=ON",
            "PRAGMA wal_autocheckpoint=0",  # checkpoints run in _Checkpointer, not in commits
            # a restarted log is cut back to this size, so its size again tells how much has
            # been written since (Database.write wakes the checkpointer past it)
            f"PRAGMA journal_size_limit={CHECKPOINT_AFTER_BYTES}",
            *sizing,
        ):
            cur.execute(pragma)
        cur.close()

    return on_connect


def _sqlite_begin(conn: Connection) -> None:
    conn.exec_driver_sql(conn.info.get("begin", "BEGIN"))
