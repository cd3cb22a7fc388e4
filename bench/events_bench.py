#!/usr/bin/env python3
"""ADT event notification benchmark: delay from an ADT event to its rest-hook notification.

Standalone script (not a pytest test), run from the repository's virtualenv. It:

1. migrates a fresh database (a temporary SQLite file, or --database-url: an EMPTY database),
   stores a panel Group of --patients made-up patients and an active full-resource
   Subscription on the ADT topic whose rest-hook is a real loopback HTTP receiver (a separate
   process, so its work does not share the dispatcher's event loop);
2. offers events open-loop at --rate per second for --seconds:
   - `--mode mllp` (default): A01 messages over MLLP to `dxf-bridge mllp --port 0` (the same
     process a deployment runs, with its dispatcher), over --connections connections; the
     whole path: journal, mapping, resources + outbox in one commit, ACK, routing, rest-hook;
   - `--mode outbox`: events committed straight into the outbox (each in its own transaction,
     as ingestion does) by this process, whose dispatcher is woken by each commit: the
     notification path alone, for when ingestion cannot sustain the rate;
3. waits for the notifications and prints events/s offered and achieved, and the delay
   median and p99 twice: seen by the bench (message sent or event committed -> receiver got
   the notification) and recorded by the server (`delay_ms`: message received -> delivered).

All content is synthetic; nothing leaves 127.0.0.1. `--json FILE` also writes the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
VT, FS_CR = b"\x0b", b"\x1c\r"
SYSTEM = "urn:dxf-bridge:v2:assigning-authority:HOSP"


# ---- the rest-hook receiver (runs as its own process) ----------------------------------------


async def serve_receiver(port: int, out: Path) -> None:
    """Answer 200 to every POST; append `key<TAB>visit<TAB>arrival` per notification."""
    sink = out.open("a", buffering=1)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                arrived = time.time()
                headers = {}
                for line in head.decode("latin-1").split("\r\n")[1:]:
                    if ":" in line:
                        name, value = line.split(":", 1)
                        headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
                bundle = json.loads(body)
                visit = ""
                for entry in bundle.get("entry", [])[1:]:
                    res = entry.get("resource") or {}
                    if res.get("resourceType") == "Encounter":
                        visit = (res.get("identifier") or [{}])[0].get("value", "")
                if len(bundle.get("entry", [])) > 1:  # not a handshake
                    sink.write(f"{headers.get('idempotency-key', '')}\t{visit}\t{arrived}\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    print("ready", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    async with server:
        await stop.wait()
    sink.close()


# ---- set-up ------------------------------------------------------------------------------------


def patient_id(p: int) -> str:
    from app.hl7.mapping import resource_id

    return resource_id("Patient", SYSTEM, f"M{p:07d}")


def a01(n: int, patients: int) -> bytes:
    p = n % patients
    when = time.strftime("%Y%m%d%H%M%S", time.gmtime(1_772_000_000 + n)) + "+0000"
    segments = [
        f"MSH|^~\\&|BENCH|HOSP|DXF|DXF|{when}||ADT^A01|E{n:08d}|P|2.5.1",
        f"EVN|A01|{when}",
        f"PID|1||M{p:07d}^^^HOSP^MR||BENCH^PATIENT{p}||19700101|F",
        f"PV1|1|I|4W^{p % 40}^A^HOSP||||1234^WELBY^MARCUS||||||||||||V{n:08d}^^^HOSP^VN"
        + "|" * 25
        + "20260301100000",
    ]
    return ("\r".join(segments) + "\r").encode()


async def subscribe(db, settings, patients: int, hook: str) -> str:
    from app.events.subscriptions import FILTER_URL, PAYLOAD_URL
    from app.events.topic import TOPIC_URL
    from app.hl7.service import SYSTEM_POLICY
    from app.store.repository import FhirRepository

    repo = FhirRepository(db, policy=SYSTEM_POLICY, base_url=settings.fhir_base_url)
    group = {
        "resourceType": "Group",
        "id": "bench-panel",
        "type": "person",
        "actual": True,
        "member": [{"entity": {"reference": f"Patient/{patient_id(p)}"}} for p in range(patients)],
    }
    sub = {
        "resourceType": "Subscription",
        "id": "bench-sub",
        "status": "active",
        "reason": "benchmark",
        "criteria": TOPIC_URL,
        "_criteria": {
            "extension": [
                {"url": FILTER_URL, "valueString": "Encounter?patient:in=Group/bench-panel"}
            ]
        },
        "channel": {
            "type": "rest-hook",
            "endpoint": hook,
            "payload": "application/fhir+json",
            "_payload": {"extension": [{"url": PAYLOAD_URL, "valueCode": "full-resource"}]},
        },
    }
    async with repo.transaction() as tx:
        await tx.update("Group", "bench-panel", group)
        await tx.update("Subscription", "bench-sub", sub)
    return "bench-sub"


async def start_process(
    *argv: str, env: dict[str, str]
) -> tuple[asyncio.subprocess.Process, bytes]:
    proc = await asyncio.create_subprocess_exec(
        *argv, cwd=REPO, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 120)
    return proc, line


async def stop_process(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    await proc.wait()


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)


# ---- offering events -----------------------------------------------------------------------------


async def offer_mllp(port: int, total: int, rate: float, connections: int, patients: int) -> dict:
    """Open loop: message n is due at start + n/rate; a free connection sends it (then waits
    for its ACK). Returns send wall times by visit number."""
    sent: dict[str, float] = {}
    codes: dict[str, int] = {}
    queue: asyncio.Queue[int] = asyncio.Queue()
    for n in range(total):
        queue.put_nowait(n)
    start = time.perf_counter() + 0.2

    async def worker() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while True:
                try:
                    n = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                due = start + n / rate
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)  # the open-loop schedule, not synchronisation
                sent[f"V{n:08d}"] = time.time()
                writer.write(VT + a01(n, patients) + FS_CR)
                await writer.drain()
                ack = await reader.readuntil(FS_CR)
                code = ack.split(b"\rMSA|", 1)[1][:2].decode()
                codes[code] = codes.get(code, 0) + 1
        finally:
            writer.close()

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    return {"sent": sent, "codes": codes, "offer_seconds": time.perf_counter() - began}


async def offer_outbox(
    db, settings, total: int, rate: float, patients: int, sid: str, arrivals: Path
) -> dict:
    """Commit outbox rows (copies of the warm-up events, new keys) at `rate`, in this process,
    with its dispatcher woken by each commit as the HL7 service does."""
    from sqlalchemy import insert, select

    from app.events.dispatcher import Dispatcher
    from app.store.base import utc_now_ms
    from app.store.tables import event_outbox

    o = event_outbox.c
    async with db.read() as conn:
        templates = list(await conn.execute(select(event_outbox).order_by(o.id).limit(patients)))
    dispatcher = Dispatcher(db, settings)
    dispatcher.start()
    sent: dict[str, float] = {}
    start = time.perf_counter() + 0.2
    began = time.perf_counter()
    try:
        for n in range(total):
            delay = start + n / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)  # the open-loop schedule
            t = templates[n % len(templates)]
            key = str(uuid.uuid4())
            now = utc_now_ms()
            async with db.write() as conn:
                await conn.execute(
                    insert(event_outbox).values(
                        event_key=key, journal_id=t.journal_id, trigger="A01", kind="admit",
                        patient_id=t.patient_id, patient_version=t.patient_version,
                        encounter_id=t.encounter_id, encounter_version=t.encounter_version,
                        other_patient_id=None, sender=t.sender, occurred_at=t.occurred_at,
                        received_at=now, created_at=now, routed=False, routed_at=None,
                    )
                )  # fmt: skip
            sent[str(uuid.uuid5(uuid.UUID(key), f"Subscription/{sid}"))] = time.time()
            dispatcher.wake()
        offered = time.perf_counter() - began
        await wait_for_file_lines(arrivals, total, 60)
    finally:
        await dispatcher.stop()
    return {"sent": sent, "codes": {}, "offer_seconds": offered}


async def wait_for_file_lines(path: Path, count: int, deadline_s: float) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().count("\n") >= count:
            return
        await asyncio.sleep(0.1)  # polling a file with a deadline


async def server_delays(db) -> list[float]:
    from sqlalchemy import select

    from app.store.tables import event_delivery

    d = event_delivery.c
    async with db.read() as conn:
        rows = await conn.execute(select(d.delay_ms).where(d.status == "delivered"))
        return [float(r.delay_ms) for r in rows]


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mode", choices=["mllp", "outbox"], default="mllp")
    ap.add_argument("--rate", type=float, default=100.0, help="events offered per second")
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--connections", type=int, default=8, help="MLLP connections (mllp mode)")
    ap.add_argument("--patients", type=int, default=500)
    ap.add_argument("--database-url", help="an EMPTY database; default: a temporary SQLite file")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--receiver", nargs=2, metavar=("PORT", "FILE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.receiver:
        await serve_receiver(int(args.receiver[0]), Path(args.receiver[1]))
        return 0

    from app.db import Database
    from app.settings import Settings

    tmp = Path(tempfile.mkdtemp(prefix="dxf-events-bench-"))
    url = args.database_url or f"sqlite:///{tmp / 'bench.db'}"
    arrivals = tmp / "arrivals.tsv"
    env = {
        **os.environ,
        "DXF_DATABASE_URL": url,
        "DXF_LOG_LEVEL": "WARNING",
        "DXF_BASE_URL": "http://127.0.0.1:8080",
        "DXF_SIGNING_KEY_FILE": str(tmp / "key.json"),
    }
    subprocess.run([sys.executable, "-m", "app.cli", "migrate"], cwd=REPO, env=env, check=True,
                   stdout=subprocess.DEVNULL)  # fmt: skip
    with __import__("socket").socket() as s:
        s.bind(("127.0.0.1", 0))
        hook_port = s.getsockname()[1]
    receiver, line = await start_process(
        sys.executable, __file__, "--receiver", str(hook_port), str(arrivals), env=env
    )
    if b"ready" not in line:
        raise SystemExit("the receiver did not start")
    hook = f"http://127.0.0.1:{hook_port}/hook"
    settings = Settings(database_url=url, base_url=env["DXF_BASE_URL"], log_level="WARNING")
    db = Database(url, pool_size=settings.db_pool_size)
    total = int(args.rate * args.seconds)
    listener = None
    try:
        if args.mode == "outbox":
            # warm-up: the patients and their encounters, routed before anyone subscribes
            from app.events.dispatcher import Dispatcher
            from app.hl7.service import Hl7Service

            service = Hl7Service(db, settings)
            for n in range(args.patients):
                await service.handle(a01(n, args.patients), "file")
            quiet = Dispatcher(db, settings)
            while await quiet.route():
                pass
            await quiet.stop()
            sid = await subscribe(db, settings, args.patients, hook)
            offered = await offer_outbox(
                db, settings, total, args.rate, args.patients, sid, arrivals
            )
        else:
            await subscribe(db, settings, args.patients, hook)
            listener, line = await start_process(
                sys.executable, "-m", "app.cli", "mllp", "--port", "0", env=env
            )
            found = re.search(rb":(\d+)", line)
            if not found:
                raise SystemExit(f"listener did not start: {line!r}")
            offered = await offer_mllp(
                int(found.group(1)), total, args.rate, args.connections, args.patients
            )
            await wait_for_file_lines(arrivals, total, 60)
    finally:
        if listener is not None:
            await stop_process(listener)
        await stop_process(receiver)
    got = [ln.split("\t") for ln in arrivals.read_text().splitlines()] if arrivals.exists() else []
    sent = offered["sent"]
    delays = []
    for key, visit, arrived in got:
        t0 = sent.get(visit if args.mode == "mllp" else key)
        if t0 is not None:
            delays.append((float(arrived) - t0) * 1000)
    server = await server_delays(db)
    await db.dispose()
    first = min(sent.values()) if sent else 0
    last = max((float(a) for _, _, a in got), default=first)
    result = {
        "mode": args.mode,
        "backend": "sqlite" if url.startswith("sqlite") else "postgresql",
        "events_offered": total,
        "rate_offered_per_s": args.rate,
        "rate_sent_per_s": round(total / offered["offer_seconds"], 1),
        "notifications_received": len(got),
        "events_per_s_delivered": round(len(got) / (last - first), 1) if last > first else None,
        "ack_codes": offered["codes"],
        "delay_ms_bench": {"median": pct(delays, 0.5), "p99": pct(delays, 0.99),
                           "max": round(max(delays), 1) if delays else None},
        "delay_ms_server": {"median": pct(server, 0.5), "p99": pct(server, 0.99),
                            "max": max(server) if server else None},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }  # fmt: skip
    print(json.dumps(result, indent=2))
    print(
        f"{args.mode}: {result['notifications_received']}/{total} notifications, "
        f"{result['events_per_s_delivered']} events/s; delay (sent -> notified) median "
        f"{result['delay_ms_bench']['median']} ms, p99 {result['delay_ms_bench']['p99']} ms"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    shutil.rmtree(tmp, ignore_errors=True)
    return 0 if len(got) == total else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
