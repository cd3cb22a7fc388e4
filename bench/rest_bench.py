#!/usr/bin/env python3
"""REST benchmark for dxf-bridge: create throughput, read latency and idle memory.

Standalone script (not a pytest test); needs only httpx and the standard library.

By default it starts its own server (`dxf-bridge migrate`, then `dxf-bridge serve`) on a free
127.0.0.1 port with an embedded SQLite database in a temporary directory, then:

1. polls GET /healthz until the server answers;
2. creates --patients synthetic Patients, one POST at a time over one keep-alive connection,
   and reports creates per second;
3. measures two reference GETs over the same connection: /.well-known/jwks.json (no token,
   no database: the HTTP + framework floor) and /healthz (no token, one `SELECT 1`);
4. after a warm-up, measures --reads GET /fhir/Patient/{id} of random loaded ids, one at a
   time over one keep-alive connection: p50, p90, p99, mean; then --stdlib-reads more with the
   stdlib http.client, whose per-request cost is far below httpx's, to show how much of the
   latency is the client's;
5. reads the server's VmRSS from /proc/<pid>/status after loading, after the reads, and after
   --idle-seconds of idleness, plus the server's CPU time per request from /proc/<pid>/stat.

Options:
  --database-url URL   run the spawned server against this database instead (e.g.
                       postgresql://postgres@127.0.0.1:5432/dxfbench); it is migrated first,
                       so it must be empty or already at this schema.
  --url URL            benchmark an already-running server (loopback only); needs --token,
                       and --server-pid for memory/CPU figures.
  --json FILE          also write the results as JSON (bench/results/ is git-ignored).

The spawned server inherits the environment, so PYTHONPATH=/some/checkout benchmarks another
tree of the code with this script.

All patients are synthetic (random names, random identifiers); nothing leaves 127.0.0.1.
Run it with `make bench` or `.venv/bin/python bench/rest_bench.py --help`.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import platform
import random
import shutil
import signal
import socket
import string
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

FHIR_JSON = "application/fhir+json"
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}
READY_TIMEOUT_S = 60.0

# Targets from the performance issue; the results table compares against them.
TARGETS = {
    "create_per_s": 1000.0,  # >=
    "read_p50_ms": 1.0,  # <=
    "read_p99_ms": 5.0,  # <=
    "idle_rss_mib": 150.0,  # <=
}


# ---- synthetic data ---------------------------------------------------------------------------

_SYLLABLES = ("ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "ba", "do", "fe", "gi", "ha")


def _word(rng: random.Random, lo: int = 2, hi: int = 4) -> str:
    return "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(lo, hi))).capitalize()


def synthetic_patient(rng: random.Random) -> dict[str, Any]:
    """A made-up Patient: random names, birth date, and a random identifier (no real data)."""
    ident = "".join(rng.choices(string.ascii_uppercase + string.digits, k=12))
    return {
        "resourceType": "Patient",
        "identifier": [{"system": "urn:dxf-bridge:bench:mrn", "value": ident}],
        "active": True,
        "name": [{"use": "official", "family": _word(rng), "given": [_word(rng, 1, 3)]}],
        "gender": rng.choice(["male", "female", "other", "unknown"]),
        "birthDate": f"{rng.randint(1930, 2020)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
        "telecom": [{"system": "phone", "value": f"555-01{rng.randint(0, 99):02d}", "use": "home"}],
        "address": [
            {"city": _word(rng), "state": "CA", "postalCode": f"9{rng.randint(0, 9999):04d}"}
        ],
    }


# ---- statistics -------------------------------------------------------------------------------


def percentile(sorted_values: list[float], pct: float) -> float:
    """Linear-interpolation percentile of an already sorted list."""
    if not sorted_values:
        return float("nan")
    k = (len(sorted_values) - 1) * pct / 100.0
    lo = int(k)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


def summarize(samples_ms: list[float]) -> dict[str, float]:
    s = sorted(samples_ms)
    return {
        "n": len(s),
        "min_ms": s[0],
        "p50_ms": percentile(s, 50),
        "p90_ms": percentile(s, 90),
        "p99_ms": percentile(s, 99),
        "max_ms": s[-1],
        "mean_ms": sum(s) / len(s),
    }


# ---- /proc probes -----------------------------------------------------------------------------


def rss_mib(pid: int | None) -> float | None:
    """VmRSS of `pid` in MiB, or None when unknown/unreadable."""
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def cpu_seconds(pid: int | None) -> float | None:
    """utime + stime of `pid` in seconds, or None when unknown/unreadable."""
    if pid is None:
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # fields 14, 15 of proc(5)


# ---- server lifecycle -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def dxf_command() -> list[str]:
    script = Path(sys.executable).with_name("dxf-bridge")
    if script.exists():
        return [str(script)]
    found = shutil.which("dxf-bridge")
    return [found] if found else [sys.executable, "-m", "app.cli"]


@dataclass
class SpawnedServer:
    base_url: str
    env: dict[str, str]
    workdir: Path
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    log_file: Any = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def run_cli(self, *args: str) -> str:
        done = subprocess.run(
            [*dxf_command(), *args],
            env=self.env,
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if done.returncode != 0:
            raise SystemExit(
                f"`dxf-bridge {' '.join(args)}` failed ({done.returncode}):\n{done.stderr.strip()}"
            )
        return done.stdout.strip()

    def start(self) -> None:
        self.log_file = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [*dxf_command(), "serve"],
            env=self.env,
            cwd=self.workdir,
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop() reaches every worker
        )

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            group = os.getpgid(self.process.pid)
            os.killpg(group, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)  # workers still busy with a slow request
        if self.log_file is not None:
            self.log_file.close()

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"


def spawn_server(database_url: str | None, workdir: Path, log_level: str) -> SpawnedServer:
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    env = dict(os.environ)
    env.update(
        {
            "DXF_DATABASE_URL": database_url or f"sqlite:///{workdir / 'bench.db'}",
            "DXF_SIGNING_KEY_FILE": str(workdir / "signing-key.json"),
            "DXF_HOST": "127.0.0.1",
            "DXF_PORT": str(port),
            "DXF_BASE_URL": base_url,
            "DXF_LOG_LEVEL": log_level,
        }
    )
    server = SpawnedServer(base_url, env, workdir, workdir / "server.log")
    server.run_cli("migrate")
    server.start()
    return server


def wait_ready(client: httpx.Client, server: SpawnedServer | None) -> float:
    """Poll /healthz until it answers 200; return the seconds waited."""
    started = time.monotonic()
    deadline = started + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if server is not None and not server.alive():
            raise SystemExit(f"the server exited during startup:\n{server.log_tail()}")
        try:
            if client.get("/healthz", timeout=2.0).status_code == 200:
                return time.monotonic() - started
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    tail = server.log_tail() if server else ""
    raise SystemExit(f"the server was not ready after {READY_TIMEOUT_S:.0f} s\n{tail}")


# ---- phases -----------------------------------------------------------------------------------


@dataclass
class Results:
    meta: dict[str, Any] = field(default_factory=dict)
    create: dict[str, Any] = field(default_factory=dict)
    floor: dict[str, Any] = field(default_factory=dict)
    healthz: dict[str, Any] = field(default_factory=dict)
    read: dict[str, Any] = field(default_factory=dict)
    read_stdlib: dict[str, Any] = field(default_factory=dict)
    create_stdlib: dict[str, Any] = field(default_factory=dict)
    memory: dict[str, Any] = field(default_factory=dict)


def load_patients(
    client: httpx.Client, headers: dict[str, str], count: int, rng: random.Random, pid: int | None
) -> tuple[list[str], dict[str, Any]]:
    bodies = [json.dumps(synthetic_patient(rng)).encode() for _ in range(count)]
    ids: list[str] = []
    latencies: list[float] = []
    cpu0 = cpu_seconds(pid)
    started = time.perf_counter()
    for i, body in enumerate(bodies):
        t0 = time.perf_counter()
        resp = client.post("/fhir/Patient", content=body, headers=headers)
        latencies.append((time.perf_counter() - t0) * 1000.0)
        if resp.status_code != 201:
            raise SystemExit(f"create #{i} returned {resp.status_code}: {resp.text[:500]}")
        ids.append(resp.json()["id"])
        if (i + 1) % 2000 == 0:
            rate = (i + 1) / (time.perf_counter() - started)
            print(f"  created {i + 1}/{count} ({rate:,.0f}/s)", file=sys.stderr, flush=True)
    elapsed = time.perf_counter() - started
    cpu1 = cpu_seconds(pid)
    stats: dict[str, Any] = {
        "count": count,
        "seconds": elapsed,
        "per_s": count / elapsed,
        "latency": summarize(latencies),
    }
    if cpu0 is not None and cpu1 is not None:
        stats["server_cpu_ms_per_request"] = (cpu1 - cpu0) * 1000.0 / count
    return ids, stats


def timed_gets(
    client: httpx.Client, paths: list[str], headers: dict[str, str], pid: int | None
) -> dict[str, Any]:
    latencies: list[float] = []
    cpu0 = cpu_seconds(pid)
    started = time.perf_counter()
    for path in paths:
        t0 = time.perf_counter()
        resp = client.get(path, headers=headers)
        t1 = time.perf_counter()
        if resp.status_code != 200:
            raise SystemExit(f"GET {path} returned {resp.status_code}: {resp.text[:500]}")
        latencies.append((t1 - t0) * 1000.0)
    elapsed = time.perf_counter() - started
    cpu1 = cpu_seconds(pid)
    stats: dict[str, Any] = {"per_s": len(paths) / elapsed, **summarize(latencies)}
    if cpu0 is not None and cpu1 is not None:
        stats["server_cpu_ms_per_request"] = (cpu1 - cpu0) * 1000.0 / len(paths)
    return stats


def timed_stdlib(
    base_url: str,
    requests: list[tuple[str, str, bytes | None]],
    headers: dict[str, str],
    pid: int | None,
    expect: int,
) -> dict[str, Any]:
    """(method, path, body) requests over one keep-alive stdlib http.client connection: a much
    cheaper client than httpx (which costs about 0.7 ms per request here), so the difference
    between the two measurements is client-side overhead, not server time."""
    parts = urlsplit(base_url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=30)
    latencies: list[float] = []
    try:
        cpu0 = cpu_seconds(pid)
        started = time.perf_counter()
        for method, path, body in requests:
            t0 = time.perf_counter()
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            answer = resp.read()
            latencies.append((time.perf_counter() - t0) * 1000.0)
            if resp.status != expect:
                raise SystemExit(f"{method} {path} returned {resp.status}: {answer[:500]!r}")
        elapsed = time.perf_counter() - started
        cpu1 = cpu_seconds(pid)
    finally:
        conn.close()
    stats: dict[str, Any] = {"per_s": len(requests) / elapsed, **summarize(latencies)}
    if cpu0 is not None and cpu1 is not None:
        stats["server_cpu_ms_per_request"] = (cpu1 - cpu0) * 1000.0 / len(requests)
    return stats


def run(args: argparse.Namespace) -> Results:
    res = Results()
    rng = random.Random(args.seed)
    workdir: Path | None = None
    server: SpawnedServer | None = None
    pid: int | None = args.server_pid

    if args.url:
        host = urlsplit(args.url).hostname or ""
        if host not in LOOPBACK_HOSTS:
            raise SystemExit(f"--url must point at a loopback address, not {host!r}")
        if not args.token:
            raise SystemExit(
                "--url needs --token (e.g. from `dxf-bridge token --scope system/*.cruds`)"
            )
        base_url = args.url.rstrip("/")
        if base_url.endswith("/fhir"):
            base_url = base_url[: -len("/fhir")]
        backend = "external"
    else:
        workdir = Path(tempfile.mkdtemp(prefix="dxf-bench-"))
        print(f"starting dxf-bridge in {workdir} ...", file=sys.stderr, flush=True)
        server = spawn_server(args.database_url, workdir, args.log_level)
        base_url = server.base_url
        pid = server.pid
        backend = "postgresql" if (args.database_url or "").startswith("postgres") else "sqlite"

    try:
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        with httpx.Client(base_url=base_url, limits=limits, timeout=30.0) as client:
            ready_s = wait_ready(client, server)
            token = args.token or (
                server.run_cli("token", "--scope", "system/*.cruds") if server else ""
            )
            auth = {"Authorization": f"Bearer {token}"}
            rss_start = rss_mib(pid)

            res.meta = {
                "backend": backend,
                "database_url": _safe_url(args.database_url) if args.database_url else None,
                "base_url": base_url,
                "server_pid": pid,
                "ready_seconds": ready_s,
                "patients": args.patients,
                "reads": args.reads,
                "warmup": args.warmup,
                "seed": args.seed,
                "log_level": None if args.url else args.log_level,
                "python": platform.python_version(),
                "machine": _machine(),
                "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "loadavg_start": os.getloadavg(),
            }

            print(f"creating {args.patients} Patients ...", file=sys.stderr, flush=True)
            post_headers = {**auth, "Content-Type": FHIR_JSON, "Accept": FHIR_JSON}
            ids, res.create = load_patients(client, post_headers, args.patients, rng, pid)
            if args.stdlib_creates:
                creates = [
                    ("POST", "/fhir/Patient", json.dumps(synthetic_patient(rng)).encode())
                    for _ in range(args.stdlib_creates)
                ]
                res.create_stdlib = timed_stdlib(base_url, creates, post_headers, pid, 201)
            rss_after_load = rss_mib(pid)

            get_headers = {**auth, "Accept": FHIR_JSON}
            print("measuring reference GETs and reads ...", file=sys.stderr, flush=True)
            jwks = "/.well-known/jwks.json"
            timed_gets(client, [jwks] * min(args.warmup, 500), {}, pid)
            res.floor = timed_gets(client, [jwks] * args.healthz, {}, pid)
            timed_gets(client, ["/healthz"] * min(args.warmup, 500), {}, pid)
            res.healthz = timed_gets(client, ["/healthz"] * args.healthz, {}, pid)

            warm = [f"/fhir/Patient/{rng.choice(ids)}" for _ in range(args.warmup)]
            timed_gets(client, warm, get_headers, pid)
            paths = [f"/fhir/Patient/{rng.choice(ids)}" for _ in range(args.reads)]
            res.read = timed_gets(client, paths, get_headers, pid)
            if args.stdlib_reads:
                gets = [
                    ("GET", f"/fhir/Patient/{rng.choice(ids)}", None)
                    for _ in range(args.stdlib_reads)
                ]
                timed_stdlib(base_url, gets[: args.warmup], get_headers, pid, 200)
                res.read_stdlib = timed_stdlib(base_url, gets, get_headers, pid, 200)
            rss_after_reads = rss_mib(pid)

        print(f"idling {args.idle_seconds:g} s ...", file=sys.stderr, flush=True)
        time.sleep(args.idle_seconds)
        res.memory = {
            "rss_mib_after_start": rss_start,
            "rss_mib_after_load": rss_after_load,
            "rss_mib_after_reads": rss_after_reads,
            "rss_mib_idle": rss_mib(pid),
            "idle_seconds": args.idle_seconds,
        }
        res.meta["loadavg_end"] = os.getloadavg()
        if server is not None and not server.alive():
            raise SystemExit(f"the server died during the run:\n{server.log_tail()}")
    finally:
        if server is not None:
            server.stop()
        if workdir is not None and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        elif workdir is not None:
            print(f"kept {workdir}", file=sys.stderr)
    return res


# ---- reporting --------------------------------------------------------------------------------


def _safe_url(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        creds, host = rest.split("@", 1)
        user = creds.split(":", 1)[0]
        rest = f"{user}@{host}"
    return f"{scheme}{sep}{rest}"


def _machine() -> dict[str, Any]:
    info: dict[str, Any] = {"nproc": os.cpu_count(), "platform": platform.platform()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                info["mem_gib"] = round(int(line.split()[1]) / 1024 / 1024, 1)
                break
    except OSError:
        pass
    return info


def _fmt(value: float | None, spec: str = ",.2f") -> str:
    return "n/a" if value is None else format(value, spec)


def _p50_p99(stats: dict[str, Any]) -> str:
    return f"{_fmt(stats['p50_ms'], '.3f')} / {_fmt(stats['p99_ms'], '.3f')}"


def _verdict(value: float | None, target: float, higher_is_better: bool) -> str:
    if value is None:
        return "n/a"
    ok = value >= target if higher_is_better else value <= target
    return "met" if ok else "MISSED"


def report(res: Results) -> str:
    c, r, h, f, m = res.create, res.read, res.healthz, res.floor, res.memory
    idle = m.get("rss_mib_idle")
    rows = [
        (
            "create throughput (resources/s)",
            _fmt(c["per_s"], ",.0f"),
            ">= 1,000",
            _verdict(c["per_s"], TARGETS["create_per_s"], True),
        ),
        (
            "create latency p50 / p99 (ms)",
            f"{_fmt(c['latency']['p50_ms'])} / {_fmt(c['latency']['p99_ms'])}",
            "",
            "",
        ),
        (
            "read p50 (ms)",
            _fmt(r["p50_ms"], ".3f"),
            "<= 1",
            _verdict(r["p50_ms"], TARGETS["read_p50_ms"], False),
        ),
        *(
            [
                (
                    "create throughput via stdlib http.client (/s)",
                    _fmt(cs["per_s"], ",.0f"),
                    "(less client cost)",
                    "",
                ),
                ("create p50 / p99 via stdlib http.client (ms)", _p50_p99(cs), "", ""),
            ]
            if (cs := res.create_stdlib)
            else []
        ),
        ("read p90 (ms)", _fmt(r["p90_ms"], ".3f"), "", ""),
        (
            "read p99 (ms)",
            _fmt(r["p99_ms"], ".3f"),
            "<= 5",
            _verdict(r["p99_ms"], TARGETS["read_p99_ms"], False),
        ),
        ("read mean (ms)", _fmt(r["mean_ms"], ".3f"), "", ""),
        ("read throughput (req/s)", _fmt(r["per_s"], ",.0f"), "", ""),
        *(
            [("read p50 / p99 via stdlib http.client (ms)", _p50_p99(sr), "(less client cost)", "")]
            if (sr := res.read_stdlib)
            else []
        ),
        ("GET /.well-known/jwks.json p50 / p99 (ms)", _p50_p99(f), "(HTTP floor)", ""),
        ("GET /healthz p50 / p99 (ms)", _p50_p99(h), "(+ SELECT 1)", ""),
        (
            "server CPU per create / read / jwks / healthz (ms)",
            " / ".join(_fmt(x.get("server_cpu_ms_per_request"), ".3f") for x in (c, r, f, h)),
            "",
            "",
        ),
        (
            "RSS after start / load / reads (MiB)",
            " / ".join(
                _fmt(m.get(k), ".1f")
                for k in ("rss_mib_after_start", "rss_mib_after_load", "rss_mib_after_reads")
            ),
            "",
            "",
        ),
        (
            f"idle RSS after {m.get('idle_seconds', 0):g} s (MiB)",
            _fmt(idle, ".1f"),
            "<= 150",
            _verdict(idle, TARGETS["idle_rss_mib"], False),
        ),
    ]
    meta = res.meta
    head = (
        f"dxf-bridge REST benchmark: backend={meta['backend']}, patients={meta['patients']:,}, "
        f"reads={meta['reads']:,} (warm-up {meta['warmup']:,}), one keep-alive client, "
        f"python {meta['python']}, {meta['machine'].get('nproc')} CPU"
    )
    load = meta.get("loadavg_start", (0.0,))[0], meta.get("loadavg_end", (0.0,))[0]
    head += f"\n1-min load average at start / end: {load[0]:.2f} / {load[1]:.2f}"
    if max(load) > 0.5 * (meta["machine"].get("nproc") or 1):
        head += "  (other work was running: expect noisy numbers)"
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    widths = [
        max(w, len(t))
        for w, t in zip(widths, ("metric", "value", "target", "verdict"), strict=True)
    ]
    line = "  ".join("-" * w for w in widths)
    out = [
        head,
        "",
        "  ".join(
            t.ljust(w)
            for t, w in zip(("metric", "value", "target", "verdict"), widths, strict=True)
        ),
        line,
    ]
    out += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    out = [line.rstrip() for line in out]
    return "\n".join(out)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="dxf-bridge REST benchmark (create throughput, read latency, idle RSS)"
    )
    p.add_argument("--patients", type=int, default=10_000, help="Patients to create (10000)")
    p.add_argument("--reads", type=int, default=5_000, help="timed random reads (5000)")
    p.add_argument("--warmup", type=int, default=1_000, help="untimed reads first (1000)")
    p.add_argument(
        "--stdlib-reads",
        type=int,
        default=2_000,
        help="timed reads with http.client too, to show client overhead (2000; 0=off)",
    )
    p.add_argument(
        "--stdlib-creates",
        type=int,
        default=2_000,
        help="more Patients created with http.client, to show client overhead (2000; 0=off)",
    )
    p.add_argument(
        "--healthz", type=int, default=2_000, help="timed GETs of each reference endpoint (2000)"
    )
    p.add_argument("--database-url", help="database for the spawned server (default: temp SQLite)")
    p.add_argument("--url", help="benchmark an already-running server at this loopback URL")
    p.add_argument("--token", help="bearer token (required with --url; minted otherwise)")
    p.add_argument("--server-pid", type=int, help="with --url: the server pid, for RSS/CPU")
    p.add_argument("--idle-seconds", type=float, default=5.0, help="idle before the last RSS (5)")
    p.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="DXF_LOG_LEVEL of the spawned server (INFO, the default config)",
    )
    p.add_argument("--seed", type=int, default=20240601, help="random seed for data and read order")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (db, log)")
    args = p.parse_args(argv)
    for name in ("patients", "reads"):
        if not 1 <= getattr(args, name) <= 10_000_000:
            p.error(f"--{name} must be between 1 and 10,000,000")
    for name in ("warmup", "healthz", "stdlib_reads", "stdlib_creates"):
        if not 0 <= getattr(args, name) <= 10_000_000:
            p.error(f"--{name} must be between 0 and 10,000,000")
    if args.healthz == 0:
        args.healthz = 1
    if args.url and args.database_url:
        p.error("--url and --database-url are exclusive (the running server has its database)")
    if args.server_pid and not args.url:
        p.error("--server-pid only applies with --url")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    res = run(args)
    print(report(res))
    if args.json:
        Path(args.json).write_text(json.dumps(res.__dict__, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
