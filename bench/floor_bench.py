#!/usr/bin/env python3
"""Storage floors: what the database alone costs for the rows our write paths produce.

Standalone script (not a pytest test). For each workload it runs the real code once and then
asks how fast *any* implementation of this schema could go on this machine:

1. **Capture.** The real path writes into a fresh SQLite database in a temporary directory,
   and its own rate is measured on the way:
   - `hl7`: --units ADT^A01 messages, one new patient each, handed to Hl7Service from 8
     concurrent callers in this process (as `bench/hl7_bench.py --in-process` does);
   - `apcd`: a synthetic medical claims file of --units lines, imported with
     `dxf-bridge import-apcd` after its eligibility file (as `bench/apcd_bench.py` does);
   - `rest`: --units Patients created one POST at a time through a spawned `dxf-bridge serve`
     over one keep-alive stdlib http.client connection (as `bench/rest_bench.py` does), plus
     the server's HTTP floor (GET /.well-known/jwks.json: no token, no database).
2. **Replay.** Exactly the rows the real path stored for those units (resources, history,
   compartment and search-index rows, the HL7 journal and outbox rows, the APCD claim state,
   the audit rows of the creates) are inserted again with the plain driver into a freshly
   migrated database, in transactions of the size the real path commits: sqlite3's
   executemany per table on SQLite; on PostgreSQL one statement per transaction (every
   table's rows as column arrays through unnest, one round trip), or COPY per table. No
   parsing, mapping, validation, index extraction, ORM, HTTP or reads: only the inserts and
   the commits.
   `resources-only` replays just the resources, their history and the journal or claim-state
   rows, as if nothing were indexed for search.

`mllp` is the other end of the HL7 path: the real MLLP listener and the bench's 8 sending
connections, with a service that parses each message and builds its ACK but stores nothing
(no database at all): what receiving, parsing and answering cost before any storage.

The replay's units/s is an upper bound for this schema: a write path that produces these rows
cannot go faster, whatever it does in Python. Compare it with the targets in the table.

The replayed rows are the final state of the capture database, split evenly over the units in
the order they were stored; rows an update replaced are not there, so for workloads with
updates the floor is lower than the real path's share. The HL7 capture has creates only.

Examples:
  .venv/bin/python bench/floor_bench.py                        # all three, SQLite
  .venv/bin/python bench/floor_bench.py --workload hl7 --units 3000
  psql -h 127.0.0.1 -U postgres \\
      -c 'drop database if exists dxf_floor' -c 'create database dxf_floor'
  .venv/bin/python bench/floor_bench.py \\
      --database-url postgresql://postgres@127.0.0.1:5432/dxf_floor --json bench/results/floor.json

--database-url must name an EMPTY PostgreSQL database: it is migrated, and the replayed tables
are truncated before each replay. The capture always runs on SQLite. Synthetic data only;
nothing leaves the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

import apcd_bench  # noqa: E402
import hl7_bench  # noqa: E402
import rest_bench  # noqa: E402

TARGETS = {"hl7": 1_500.0, "apcd": 20_000.0, "rest": 1_000.0}
SEARCH_TABLES = (
    "resource_compartment",
    "spidx_token",
    "spidx_string",
    "spidx_date",
    "spidx_reference",
    "spidx_quantity",
)
RESOURCE_TABLES = ("resource", "resource_history")
MC_TYPES = ("ExplanationOfBenefit", "Encounter", "Condition", "Procedure", "Observation")


@dataclass
class Capture:
    workload: str
    unit: str
    units: int
    source: Path
    # table -> (WHERE clause, whether it is a search table); every listed table is replayed
    tables: dict[str, tuple[str, bool]]
    # (units per transaction, transactions in flight) to replay, per backend
    sqlite_shapes: list[tuple[int, int]]
    pg_shapes: list[tuple[int, int]]
    real: dict[str, Any] = field(default_factory=dict)


def _resource_filter(types: tuple[str, ...]) -> str:
    return "res_type IN (" + ", ".join(f"'{t}'" for t in types) + ")"


# ---- capture -----------------------------------------------------------------------------------


def capture_hl7(workdir: Path, units: int) -> Capture:
    source = workdir / "hl7.db"
    url = f"sqlite:///{source}"
    _migrate(url)
    batches = hl7_bench.lanes(hl7_bench.messages(units, units), 8, units)
    run = asyncio.run(hl7_bench.in_process(url, workdir, batches))
    every = {t: ("", t in SEARCH_TABLES) for t in (*RESOURCE_TABLES, *SEARCH_TABLES)}
    return Capture(
        "hl7",
        "message",
        units,
        source,
        {**every, "hl7_message": ("", False), "event_outbox": ("", False)},
        sqlite_shapes=[(1, 1), (8, 1), (64, 1)],
        pg_shapes=[(1, 8), (2, 4), (4, 2), (8, 1), (64, 1)],
        real={
            "units_per_s": round(units / run["elapsed"], 1),
            "cpu_ms_per_unit": run["cpu_ms_per_message"],
            "what": "Hl7Service in process, 8 concurrent callers",
        },
    )


def capture_apcd(workdir: Path, units: int, batch: int) -> Capture:
    run = apcd_bench.run_once(units, None, workdir, batch)
    source = workdir / f"bench-{units}.db"
    where = _resource_filter(MC_TYPES)
    tables = {t: (where, t in SEARCH_TABLES) for t in (*RESOURCE_TABLES, *SEARCH_TABLES)}
    return Capture(
        "apcd",
        "line",
        int(run["mc_lines"]),  # type: ignore[call-overload]
        source,
        {**tables, "apcd_claim": ("", False)},
        sqlite_shapes=[(batch, 1)],
        pg_shapes=[(batch, 1)],
        real={
            "units_per_s": run["lines_per_s"],
            "cpu_ms_per_unit": run["cpu_ms_per_line"],
            "what": "dxf-bridge import-apcd, medical claims file",
        },
    )


def capture_rest(workdir: Path, units: int) -> Capture:
    server = rest_bench.spawn_server(None, workdir, "WARNING")
    try:
        with httpx.Client(base_url=server.base_url) as client:
            rest_bench.wait_ready(client, server)
        token = server.run_cli("token", "--scope", "system/*.cruds", "--ttl", "3600")
        headers = {
            "Authorization": f"Bearer {token}",
            "Content-Type": rest_bench.FHIR_JSON,
            "Accept": rest_bench.FHIR_JSON,
        }
        rng = random.Random(20240601)
        bodies = [json.dumps(rest_bench.synthetic_patient(rng)).encode() for _ in range(units)]
        create = rest_bench.timed_stdlib(
            server.base_url,
            [("POST", "/fhir/Patient", b) for b in bodies],
            headers,
            server.pid,
            201,
        )
        floor = rest_bench.timed_stdlib(
            server.base_url,
            [("GET", "/.well-known/jwks.json", None)] * 2000,
            {"Accept": "application/json"},
            server.pid,
            200,
        )
    finally:
        server.stop()
    patients = "res_type = 'Patient'"
    tables = {t: (patients, t in SEARCH_TABLES) for t in (*RESOURCE_TABLES, *SEARCH_TABLES)}
    return Capture(
        "rest",
        "create",
        units,
        workdir / "bench.db",
        {**tables, "audit_event": ("interaction = 'create'", False)},
        sqlite_shapes=[(1, 1)],
        pg_shapes=[(1, 1)],
        real={
            "units_per_s": round(create["per_s"], 1),
            "cpu_ms_per_unit": round(create.get("server_cpu_ms_per_request", 0.0), 3),
            "http_floor_cpu_ms": round(floor.get("server_cpu_ms_per_request", 0.0), 3),
            "http_floor_p50_ms": round(floor["p50_ms"], 3),
            "create_p50_ms": round(create["p50_ms"], 3),
            "what": "POST /fhir/Patient, one stdlib http.client connection (server CPU)",
        },
    )


def _migrate(url: str) -> None:
    env = {**os.environ, "DXF_DATABASE_URL": url, "DXF_LOG_LEVEL": "WARNING"}
    subprocess.run([*rest_bench.dxf_command(), "migrate"], env=env, check=True, capture_output=True)


def serve_without_storage() -> int:
    """Child process of the `mllp` workload: the MLLP listener in front of an Hl7Service that
    parses and answers AA but never touches its database."""
    from app.db import Database
    from app.hl7.mllp import MllpServer
    from app.hl7.service import Hl7Result, Hl7Service
    from app.settings import Settings

    class NoStorage(Hl7Service):
        async def handle(self, raw: bytes, transport: str) -> Hl7Result:
            item = self._prepare(raw, transport)
            return self._answer(item.msg, "ok", None, None)

    async def serve() -> None:
        workdir = Path(tempfile.mkdtemp(prefix="dxf-floor-mllp-"))
        settings = Settings(  # type: ignore[call-arg]
            database_url=f"sqlite:///{workdir / 'unused.db'}",
            signing_key_file=workdir / "key.json",
            log_level="WARNING",
        )
        server = MllpServer(NoStorage(Database.from_settings(settings), settings), settings)
        await server.start("127.0.0.1", 0)
        print(f"listening on :{server.port}", flush=True)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await server.close()

    asyncio.run(serve())
    return 0


async def measure_mllp(units: int) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--serve-without-storage",
        stdout=asyncio.subprocess.PIPE, cwd=ROOT,
    )  # fmt: skip
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 60)
    port = int(line.rsplit(b":", 1)[1])
    patients = max(1, units // 3)
    batches = hl7_bench.lanes(hl7_bench.messages(units, patients), 8, patients)
    latencies: list[float] = []
    codes: dict[str, int] = {}
    try:
        started = time.perf_counter()
        await asyncio.gather(*(hl7_bench.sender(port, b, latencies, codes) for b in batches))
        seconds = time.perf_counter() - started
    finally:
        proc.send_signal(signal.SIGTERM)
        await proc.wait()
    if codes.get("AA") != units:
        raise SystemExit(f"the listener without storage answered {codes}")
    return {
        "workload": "mllp",
        "unit": "message",
        "units": units,
        "connections": 8,
        "units_per_s": round(units / seconds, 1),
        "ack_p50_ms": round(hl7_bench.pct(latencies, 0.50), 2),
        "ack_p99_ms": round(hl7_bench.pct(latencies, 0.99), 2),
        "target_per_s": TARGETS["hl7"],
    }


# ---- replay ------------------------------------------------------------------------------------

Rows = dict[str, tuple[list[str], list[tuple[Any, ...]]]]


def read_rows(capture: Capture, resources_only: bool) -> Rows:
    """The captured rows of each replayed table, in the order they were stored."""
    out: Rows = {}
    with sqlite3.connect(f"file:{capture.source}?mode=ro", uri=True) as src:
        for table, (where, search) in capture.tables.items():
            if resources_only and search:
                continue
            cols = [r[1] for r in src.execute(f"PRAGMA table_info({table})")]
            without_rowid = src.execute(
                "SELECT sql LIKE '%WITHOUT ROWID%' FROM sqlite_master WHERE name = ?", (table,)
            ).fetchone()[0]
            order = "" if without_rowid else " ORDER BY rowid"
            sql = f"SELECT * FROM {table}" + (f" WHERE {where}" if where else "") + order
            out[table] = (cols, src.execute(sql).fetchall())
    return out


def _chunk(rows: list[Any], units: int, first: int, last: int) -> list[Any]:
    """The rows of units [first, last) when `rows` are spread evenly over `units`."""
    return rows[len(rows) * first // units : len(rows) * last // units]


def replay_sqlite(
    capture: Capture, rows: Rows, per_commit: int, workdir: Path, tag: str
) -> dict[str, Any]:
    path = workdir / f"replay-{capture.workload}-{tag}-{per_commit}.db"
    _migrate(f"sqlite:///{path}")
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")  # the server's own settings (app.db)
        statements = {
            t: f"INSERT INTO {t} ({', '.join(c)}) VALUES ({', '.join('?' * len(c))})"
            for t, (c, _r) in rows.items()
        }
        units = capture.units
        cpu, started = time.process_time(), time.perf_counter()
        for first in range(0, units, per_commit):
            last = min(units, first + per_commit)
            conn.execute("BEGIN IMMEDIATE")
            for table, (_cols, all_rows) in rows.items():
                chunk = _chunk(all_rows, units, first, last)
                if chunk:
                    conn.executemany(statements[table], chunk)
            conn.execute("COMMIT")
        seconds = time.perf_counter() - started
        cpu = time.process_time() - cpu
    finally:
        conn.close()
    return {"seconds": seconds, "cpu_ms_per_unit": 1000 * cpu / units}


async def _pg_types(conn: asyncpg.Connection, table: str) -> dict[str, str]:
    found = await conn.fetch(
        "SELECT attname, format_type(atttypid, atttypmod) AS typ FROM pg_attribute"
        " WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped",
        table,
    )
    return {r["attname"]: r["typ"] for r in found}


def _to_pg(value: Any, pg_type: str) -> Any:
    """A value as SQLite stored it, in the form asyncpg sends for the PostgreSQL column."""
    if value is None:
        return None
    if pg_type.startswith("timestamp"):
        moment = dt.datetime.fromisoformat(value)
        return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)
    if pg_type == "date":
        return dt.date.fromisoformat(value)
    if pg_type == "boolean":
        return bool(value)
    if pg_type == "bytea" and isinstance(value, str):
        return value.encode()
    return value


async def replay_pg(
    capture: Capture, rows: Rows, per_commit: int, in_flight: int, url: str, copy: bool
) -> dict[str, Any]:
    """One round trip per transaction: every table's rows go as column arrays in a single
    statement (INSERT ... SELECT FROM unnest(...), all but the last table as data-modifying
    CTEs; the server's own bulk path does the same), so an autocommit statement is the whole
    transaction. With `copy`, one COPY per table inside an explicit transaction instead."""
    dsn = url.replace("postgresql+asyncpg://", "postgresql://")
    pool = await asyncpg.create_pool(dsn, min_size=in_flight, max_size=in_flight)
    try:
        converted: Rows = {}
        types: dict[str, list[str]] = {}
        async with pool.acquire() as conn:
            for table, (cols, all_rows) in rows.items():
                await conn.execute(f"TRUNCATE {table} CASCADE")
                found = await _pg_types(conn, table)
                types[table] = [found[c] for c in cols]
                converted[table] = (
                    cols,
                    [
                        tuple(_to_pg(v, k) for v, k in zip(r, types[table], strict=True))
                        for r in all_rows
                    ],
                )
            await conn.execute("CHECKPOINT")  # start from the same place each time
        units = capture.units
        starts = list(range(0, units, per_commit))

        def one_statement(first: int, last: int) -> tuple[str, list[Any]]:
            parts: list[str] = []
            args: list[Any] = []
            for table, (cols, all_rows) in converted.items():
                chunk = _chunk(all_rows, units, first, last)
                if not chunk:
                    continue
                arrays = []
                for i, pg_type in enumerate(types[table]):
                    args.append([row[i] for row in chunk])
                    arrays.append(f"${len(args)}::{pg_type}[]")
                columns, values = ", ".join(cols), ", ".join(arrays)
                parts.append(f"INSERT INTO {table} ({columns}) SELECT * FROM unnest({values})")
            ctes = ", ".join(f"w{k} AS ({sql})" for k, sql in enumerate(parts[:-1]))
            return (f"WITH {ctes} {parts[-1]}" if ctes else parts[-1]), args

        async def lane(k: int) -> None:
            async with pool.acquire() as conn:
                for first in starts[k::in_flight]:
                    last = min(units, first + per_commit)
                    if not copy:
                        sql, args = one_statement(first, last)
                        await conn.execute(sql, *args)
                        continue
                    async with conn.transaction():
                        for table, (cols, all_rows) in converted.items():
                            chunk = _chunk(all_rows, units, first, last)
                            if chunk:
                                await conn.copy_records_to_table(table, records=chunk, columns=cols)

        dbname = dsn.rsplit("/", 1)[-1].split("?")[0]
        with apcd_bench.BackendCpu(dbname) as backend:
            cpu, started = time.process_time(), time.perf_counter()
            await asyncio.gather(*(lane(k) for k in range(in_flight)))
            seconds = time.perf_counter() - started
            cpu = time.process_time() - cpu
    finally:
        await pool.close()
    return {
        "seconds": seconds,
        "cpu_ms_per_unit": 1000 * cpu / units,
        "server_cpu_ms_per_unit": 1000 * backend.seconds / units,
    }


# ---- driver ------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    workdir = Path(tempfile.mkdtemp(prefix="dxf-floor-"))
    if args.database_url:
        _migrate(args.database_url)
    for workload in args.workload:
        units = args.units or {"hl7": 3000, "apcd": 20_000, "rest": 3000, "mllp": 10_000}[workload]
        if workload == "mllp":
            print(f"measuring mllp ({units} messages) ...", file=sys.stderr, flush=True)
            results.append(asyncio.run(measure_mllp(units)))
            continue
        print(f"capturing {workload} ({units} units) ...", file=sys.stderr, flush=True)
        if workload == "hl7":
            capture = capture_hl7(workdir, units)
        elif workload == "apcd":
            capture = capture_apcd(workdir, units, args.apcd_batch)
        else:
            capture = capture_rest(workdir, units)
        for variant in ("full", "resources-only"):
            rows = read_rows(capture, variant == "resources-only")
            per_unit = {t: round(len(r) / capture.units, 2) for t, (_c, r) in rows.items()}
            plans: list[tuple[str, int, int, bool]] = [
                ("sqlite", size, 1, False) for size, _n in capture.sqlite_shapes
            ]
            if args.database_url:
                plans += [("postgresql", s, n, False) for s, n in capture.pg_shapes]
                if workload == "apcd":
                    plans += [("postgresql COPY", s, n, True) for s, n in capture.pg_shapes]
            for backend, size, in_flight, copy in plans:
                print(f"  replay {variant} {backend} {size}x{in_flight}", file=sys.stderr)
                if backend == "sqlite":
                    got = replay_sqlite(capture, rows, size, workdir, variant)
                else:
                    got = asyncio.run(
                        replay_pg(capture, rows, size, in_flight, args.database_url, copy)
                    )
                results.append(
                    {
                        "workload": workload,
                        "unit": capture.unit,
                        "units": capture.units,
                        "variant": variant,
                        "backend": backend,
                        "units_per_commit": size,
                        "commits_in_flight": in_flight,
                        "units_per_s": round(capture.units / got["seconds"], 1),
                        "client_cpu_ms_per_unit": round(got["cpu_ms_per_unit"], 3),
                        "server_cpu_ms_per_unit": round(got["server_cpu_ms_per_unit"], 3)
                        if "server_cpu_ms_per_unit" in got
                        else None,
                        "rows_per_unit": per_unit,
                        "target_per_s": TARGETS[workload],
                        "real_path": capture.real,
                    }
                )
    return results


def report(results: list[dict[str, Any]]) -> str:
    head = (
        f"{'workload':<8} {'variant':<15} {'backend':<16} {'commit':>9} {'floor/s':>9} "
        f"{'ms/unit':>8} {'server':>7} {'target':>7} {'real/s':>8}"
    )
    lines = [head, "-" * len(head)]
    for r in results:
        if r["workload"] == "mllp":
            lines.append(
                f"{'mllp':<8} {'no storage':<15} {'-':<16} {str(r['connections']) + ' conns':>9} "
                f"{r['units_per_s']:>9,.0f}   "
                f"ACK p50 {r['ack_p50_ms']} ms, p99 {r['ack_p99_ms']} ms"
            )
            continue
        server = r["server_cpu_ms_per_unit"]
        lines.append(
            f"{r['workload']:<8} {r['variant']:<15} {r['backend']:<16} "
            f"{r['units_per_commit']:>5}x{r['commits_in_flight']:<3} {r['units_per_s']:>9,.0f} "
            f"{r['client_cpu_ms_per_unit']:>8.3f} "
            f"{'' if server is None else f'{server:.3f}':>7} {r['target_per_s']:>7,.0f} "
            f"{r['real_path']['units_per_s']:>8,.0f}"
        )
    seen: set[str] = set()
    for r in results:
        if r["workload"] in seen or r["workload"] == "mllp":
            continue
        seen.add(r["workload"])
        lines.append(f"{r['workload']}: rows per {r['unit']} {r['rows_per_unit']}")
        lines.append(f"{r['workload']}: real path {r['real_path']}")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--workload",
        nargs="+",
        choices=("hl7", "apcd", "rest", "mllp"),
        default=["hl7", "apcd", "rest", "mllp"],
    )
    ap.add_argument(
        "--units", type=int, help="units per workload (hl7 3000, apcd 20000, rest 3000, mllp 10000)"
    )
    ap.add_argument("--apcd-batch", type=int, default=2000, help="APCD lines per commit (2000)")
    ap.add_argument("--database-url", help="an EMPTY PostgreSQL database to replay into as well")
    ap.add_argument("--json", type=Path, help="write the results as JSON")
    ap.add_argument("--serve-without-storage", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_without_storage:
        return serve_without_storage()
    load = os.getloadavg()[0]
    results = run(args)
    machine = {"cpus": os.cpu_count(), "python": platform.python_version()}
    print(f"machine: {platform.machine()}, {machine['cpus']} CPUs, Python {machine['python']}")
    print(f"load average 1m before / after: {load:.2f} / {os.getloadavg()[0]:.2f}")
    print(report(results))
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
