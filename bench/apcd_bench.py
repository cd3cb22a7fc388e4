#!/usr/bin/env python3
"""APCD-CDL import benchmark: lines/s end to end and peak memory of `dxf-bridge import-apcd`.

Standalone script (not a pytest test). For each size in --lines it:

1. writes seeded synthetic files with `dxf-bridge synth apcd` logic (app.apcd.synth): a medical
   claims (MC) file of exactly that many lines and the eligibility (ME) file of its members
   (one member per 20 claim lines, 1% deliberately bad lines);
2. migrates a fresh database (SQLite in a temporary directory, or --database-url, which must be
   an empty database: the script does not drop anything);
3. runs `dxf-bridge import-apcd ME` and then, timed, `dxf-bridge import-apcd MC` as child
   processes, and reads the MC run's wall time and the child's peak RSS (getrusage
   RUSAGE_CHILDREN, i.e. the largest child so far: run one size per invocation if you want
   the figure per size without doubt; the ME import is much smaller than the MC import), the
   CPU time the MC import used (its validation worker included), on PostgreSQL also the CPU
   time of the server processes serving the database (read from /proc every 0.2 s while the
   import runs, so a few tenths of a second may be missed at the end), and the load average:
   on a shared machine CPU per line moves less than the wall-clock rate;
4. prints lines/s (the whole MC command: process start, both reader passes, mapping,
   validation, index rows, commits) and peak RSS, and with --json FILE writes them.

With --sample-seconds N it also prints, every N seconds while the MC import runs, the
importer's RSS and peak RSS (/proc VmRSS, VmHWM), the lines committed so far (the journal's
checkpoint) and the load average: memory must not grow with the file.

Examples:
  .venv/bin/python bench/apcd_bench.py --lines 20000
  .venv/bin/python bench/apcd_bench.py --lines 20000 \
      --database-url postgresql://postgres@127.0.0.1:5432/dxf_apcd_bench
  .venv/bin/python bench/apcd_bench.py --lines 1000000 --sample-seconds 60 --json big.json

Synthetic data only; nothing leaves the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import asyncpg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.apcd.synth import write_apcd_files  # noqa: E402


def _cli() -> list[str]:
    exe = Path(sys.executable).with_name("dxf-bridge")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "app.cli"]


class BackendCpu:
    """CPU seconds used by the PostgreSQL backends serving one database, sampled from /proc
    (the processes are titled `postgres: ... USER DBNAME HOST(PORT) STATE`)."""

    def __init__(self, dbname: str) -> None:
        self.dbname = dbname
        self.seen: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> BackendCpu:
        self._sample()  # the backends already there are not the import's
        self.before = dict(self.seen)
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def seconds(self) -> float:
        return sum(cpu - self.before.get(pid, 0.0) for pid, cpu in self.seen.items())

    def _poll(self) -> None:
        while not self._stop.wait(0.2):
            self._sample()

    def _sample(self) -> None:
        tick = os.sysconf("SC_CLK_TCK")
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                if not title.startswith("postgres: ") or f" {self.dbname} " not in title:
                    continue
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            self.seen[int(entry.name)] = (int(fields[11]) + int(fields[12])) / tick


def _status_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process in KiB; (0, 0) once it is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0, 0
    values = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    return tuple(int(values.get(k, "0 kB").split()[0]) for k in ("VmRSS", "VmHWM"))  # type: ignore[return-value]


def _lines_committed(url: str, import_name: str) -> int | None:
    """The import's checkpoint line from its journal (apcd_import.lines_done)."""
    sql = "select max(lines_done) from apcd_import where file_name = $1"
    try:
        if url.startswith("sqlite"):
            with sqlite3.connect(f"file:{url.split(':///', 1)[1]}?mode=ro", uri=True) as conn:
                row = conn.execute(sql.replace("$1", "?"), (import_name,)).fetchone()
                return row[0] if row else None

        async def fetch() -> int | None:
            conn = await asyncpg.connect(url.replace("+asyncpg", ""))
            try:
                return await conn.fetchval(sql, import_name)
            finally:
                await conn.close()

        return asyncio.run(fetch())
    except Exception:  # noqa: BLE001 - a sample is best effort
        return None


def run_once(
    lines: int, database_url: str | None, workdir: Path, batch: int, sample_seconds: float = 0
) -> dict[str, object]:
    data = workdir / f"data-{lines}"
    made = write_apcd_files(
        data, members=max(10, lines // 20), seed=42, bad_share=0.01, medical_lines=lines
    )
    url = database_url or f"sqlite:///{workdir / f'bench-{lines}.db'}"
    env = {**os.environ, "DXF_DATABASE_URL": url, "DXF_APCD_BATCH_LINES": str(batch)}
    subprocess.run([*_cli(), "migrate"], env=env, check=True, capture_output=True)
    subprocess.run(
        [*_cli(), "import-apcd", "--no-progress", str(made.files["ME"])],
        env=env,
        check=True,
        capture_output=True,
    )
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load_before = os.getloadavg()[0]
    postgres = url.startswith("postgres")
    samples: list[dict[str, object]] = []
    with BackendCpu(url.rsplit("/", 1)[-1].split("?")[0] if postgres else "-") as backend:
        t0 = time.perf_counter()
        child = subprocess.Popen(
            [*_cli(), "import-apcd", "--no-progress", str(made.files["MC"])],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        while sample_seconds > 0:
            try:
                child.wait(timeout=sample_seconds)
                break
            except subprocess.TimeoutExpired:
                rss, hwm = _status_kib(child.pid)
                sample = {
                    "seconds": round(time.perf_counter() - t0),
                    "lines_committed": _lines_committed(url, made.files["MC"].name),
                    "rss_mib": round(rss / 1024, 1),
                    "peak_mib": round(hwm / 1024, 1),
                    "load_1m": round(os.getloadavg()[0], 2),
                }
                samples.append(sample)
                print(sample, flush=True)
        stdout, stderr = child.communicate()
        seconds = time.perf_counter() - t0
        if child.returncode != 0:
            raise SystemExit(f"import-apcd failed ({child.returncode}): {stderr[-2000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    peak_kib = after.ru_maxrss
    return {
        "backend": "postgresql" if url.startswith("postgres") else "sqlite",
        "mc_lines": made.lines["MC"],
        "bad_lines": made.bad_lines["MC"],
        "mc_bytes": made.files["MC"].stat().st_size,
        "seconds": round(seconds, 2),
        "lines_per_s": round(made.lines["MC"] / seconds, 1),
        "peak_rss_mib": round(peak_kib / 1024, 1),
        "cpu_seconds": round(cpu, 1),
        "cpu_ms_per_line": round(1000 * cpu / made.lines["MC"], 2),
        "server_cpu_ms_per_line": round(1000 * backend.seconds / made.lines["MC"], 2)
        if postgres
        else None,
        "load_avg_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "validation_workers": os.environ.get("DXF_APCD_VALIDATION_WORKERS", "0"),
        "summary": stdout.strip().splitlines()[0],
        "samples": samples,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, nargs="+", default=[20_000])
    parser.add_argument("--database-url", help="an EMPTY PostgreSQL database (default SQLite)")
    parser.add_argument("--batch-lines", type=int, default=2000)
    parser.add_argument("--json", type=Path, help="write the results as JSON")
    parser.add_argument(
        "--sample-seconds",
        type=float,
        default=0,
        help="print the importer's RSS and the lines committed this often (default: never)",
    )
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="apcd-bench-") as tmp:
        for n in args.lines:
            results.append(
                run_once(n, args.database_url, Path(tmp), args.batch_lines, args.sample_seconds)
            )
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    )
    print(
        f"{'backend':<11}{'MC lines':>10}{'MiB':>7}{'seconds':>9}{'lines/s':>9}"
        f"{'peak RSS':>10}{'CPU s':>8}{'CPU ms/line':>12}{'server ms/line':>15}"
        "  load 1m before/after"
    )
    for r in results:
        server = "-" if r["server_cpu_ms_per_line"] is None else r["server_cpu_ms_per_line"]
        print(
            f"{r['backend']:<11}{r['mc_lines']:>10,}{int(r['mc_bytes']) / 2**20:>7.1f}"
            f"{r['seconds']:>9}{r['lines_per_s']:>9,}{r['peak_rss_mib']:>9}M{r['cpu_seconds']:>8}"
            f"{r['cpu_ms_per_line']:>12}{server:>15}  {r['load_avg_1m']}"
        )
        print(f"  {r['summary']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
