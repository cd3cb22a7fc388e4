#!/usr/bin/env python3
"""HL7v2 ingestion benchmark: durable ADT throughput and ACK latency over MLLP.

Standalone script (not a pytest test); standard library only. It:

1. migrates a fresh database (a temporary SQLite file, or --database-url) and starts
   `dxf-bridge mllp --port 0` against it (the same process a deployment runs);
2. sends --messages synthetic ADT messages (A01, A08, A03 for --patients made-up patients)
   over --connections concurrent MLLP connections; each connection sends one message, waits for
   its ACK (which the listener writes only after the commit), then sends the next;
3. reports messages/s (wall clock, first send to last ACK), ACK latency p50/p90/p99/max, and
   checks afterwards that every message is in the journal as processed.

`--in-process` skips the listener and the network: the same messages go straight to
Hl7Service.handle from --connections concurrent callers in this process, and the report adds
the CPU milliseconds per message (this process's CPU time, all threads, and the event-loop
thread's alone). On a shared machine that figure moves less than messages/s does; compare
several runs.

All content is synthetic; nothing leaves 127.0.0.1. `--json FILE` also writes the figures
(bench/results/ is git-ignored).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import re
import shutil
import signal
import sqlite3
import string
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VT, FS_CR = b"\x0b", b"\x1c\r"
START = datetime(2026, 3, 1, 10, 0, 0)


def _name(rng: random.Random) -> str:
    return "".join(rng.choice(string.ascii_uppercase) for _ in range(7))


def messages(count: int, patients: int, seed: int = 7) -> list[bytes]:
    rng = random.Random(seed)
    out = []
    for n in range(count):
        p = n % patients
        event = ("A01", "A08", "A03")[(n // patients) % 3]
        discharge = "20260305120000" if event == "A03" else ""
        when = (START + timedelta(seconds=n)).strftime("%Y%m%d%H%M%S") + "-0800"
        birth = f"19{rng.randint(30, 99)}0{rng.randint(1, 9)}1{rng.randint(0, 9)}"
        segments = [
            f"MSH|^~\\&|BENCH|HOSP|DXF|DXF|{when}||ADT^{event}|B{n:07d}|P|2.5.1",
            f"EVN|{event}|{when}",
            f"PID|1||M{p:07d}^^^HOSP^MR||{_name(rng)}^{_name(rng)}||{birth}"
            f"|{rng.choice('FM')}|||{rng.randint(1, 999)} MAIN ST^^SACRAMENTO^CA^95814",
            f"PV1|1|I|4W^{p % 40}^A^HOSP||||1234^WELBY^MARCUS|||||||||||V{p:07d}^^^HOSP^VN"
            + "|" * 25
            + f"20260301100000|{discharge}",
        ]
        out.append(("\r".join(segments) + "\r").encode())
    return out


async def start_listener(env: dict[str, str]) -> tuple[asyncio.subprocess.Process, int]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "app.cli", "mllp", "--port", "0",
        cwd=REPO, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 120)
    found = re.search(rb":(\d+)", line)
    if not found:
        raise SystemExit(f"listener did not start: {line!r}")
    return proc, int(found.group(1))


async def sender(port: int, batch: list[bytes], latencies: list[float], codes: dict) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for message in batch:
            started = time.perf_counter()
            writer.write(VT + message + FS_CR)
            await writer.drain()
            ack = await reader.readuntil(FS_CR)
            latencies.append(time.perf_counter() - started)
            code = ack.split(b"\rMSA|", 1)[1][:2].decode()
            codes[code] = codes.get(code, 0) + 1
    finally:
        writer.close()


async def in_process(url: str, tmp: Path, batches: list[list[bytes]]) -> dict:
    """Hand the messages to Hl7Service.handle directly; a patient's messages stay with one
    caller, in order, as they stay on one connection in the MLLP run."""
    sys.path.insert(0, str(REPO))
    from app.db import Database
    from app.hl7.service import Hl7Service
    from app.settings import Settings

    settings = Settings(database_url=url, signing_key_file=tmp / "key.json", log_level="WARNING")  # type: ignore[call-arg]
    db = Database.from_settings(settings)
    service = Hl7Service(db, settings)
    latencies: list[float] = []
    codes: dict[str, int] = {}

    async def caller(batch: list[bytes]) -> None:
        for message in batch:
            started = time.perf_counter()
            result = await service.handle(message, "bench")
            latencies.append(time.perf_counter() - started)
            codes[result.code] = codes.get(result.code, 0) + 1

    cpu, loop_cpu, started = time.process_time(), time.thread_time(), time.perf_counter()
    try:
        await asyncio.gather(*(caller(b) for b in batches))
    finally:
        elapsed = time.perf_counter() - started
        cpu, loop_cpu = time.process_time() - cpu, time.thread_time() - loop_cpu
        await db.dispose()
    return {
        "elapsed": elapsed,
        "latencies": latencies,
        "codes": codes,
        "cpu_ms_per_message": round(cpu * 1000 / len(latencies), 3),
        "loop_cpu_ms_per_message": round(loop_cpu * 1000 / len(latencies), 3),
    }


def lanes(data: list[bytes], connections: int, patients: int) -> list[list[bytes]]:
    """A patient's messages stay on one connection, in order (as a real feed's would)."""
    out: list[list[bytes]] = [[] for _ in range(connections)]
    for n, message in enumerate(data):
        out[(n % patients) % connections].append(message)
    return out


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=10_000)
    ap.add_argument("--patients", type=int, default=3_334)
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--database-url", help="default: a temporary SQLite file")
    ap.add_argument("--json", type=Path)
    ap.add_argument(
        "--in-process",
        action="store_true",
        help="call Hl7Service.handle directly (no listener, no MLLP) and report CPU ms/message",
    )
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="dxf-hl7-bench-"))
    url = args.database_url or f"sqlite:///{tmp / 'bench.db'}"
    env = {**os.environ, "DXF_DATABASE_URL": url, "DXF_LOG_LEVEL": "WARNING"}
    subprocess.run([sys.executable, "-m", "app.cli", "migrate"], cwd=REPO, env=env, check=True,
                   stdout=subprocess.DEVNULL)  # fmt: skip
    batches = lanes(messages(args.messages, args.patients), args.connections, args.patients)
    extra: dict = {}
    if args.in_process:
        run = await in_process(url, tmp, batches)
        elapsed, latencies, codes = run.pop("elapsed"), run.pop("latencies"), run.pop("codes")
        extra = run
    else:
        proc, port = await start_listener(env)
        try:
            latencies = []
            codes = {}
            started = time.perf_counter()
            await asyncio.gather(*(sender(port, b, latencies, codes) for b in batches))
            elapsed = time.perf_counter() - started
        finally:
            proc.send_signal(signal.SIGTERM)
            await proc.wait()
    processed = None
    if url.startswith("sqlite"):
        with sqlite3.connect(tmp / "bench.db") as conn:
            processed = conn.execute(
                "select count(*) from hl7_message where status = 'processed'"
            ).fetchone()[0]
    result = {
        "backend": "sqlite" if url.startswith("sqlite") else "postgresql",
        "messages": args.messages,
        "connections": args.connections,
        "seconds": round(elapsed, 2),
        "messages_per_second": round(args.messages / elapsed, 1),
        "ack_ms": {
            "p50": round(pct(latencies, 0.50), 2),
            "p90": round(pct(latencies, 0.90), 2),
            "p99": round(pct(latencies, 0.99), 2),
            "max": round(max(latencies) * 1000, 2),
        },
        "ack_codes": codes,
        "journal_processed": processed,
        **extra,
        "mode": "in-process" if args.in_process else "mllp",
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    shutil.rmtree(tmp, ignore_errors=True)
    return 0 if codes.get("AA") == args.messages else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
