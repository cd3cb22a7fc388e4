#!/usr/bin/env python3
"""Search and $everything benchmark at scale, and the transaction-Bundle load rate.

Standalone script (not a pytest test). It starts its own `dxf-bridge serve` (SQLite in a
temporary directory, or --database-url), then for each scale in --scales (patients; about 100
resources each, see synth.py):

1. loads patients as one transaction Bundle each, over --clients concurrent keep-alive
   connections, and reports resources per second for that stretch;
2. runs `dxf-bridge analyze` (planner statistics, as after any bulk load), then every
   query shape below --repeat times, one at a time over one connection, with
   parameters drawn from patients loaded so far, and reports p50, p90, p99 and max in ms.

So `--scales 1000,10000` measures at about 100,000 and then about 1,000,000 resources in one
run, on the same database. Latencies are client-observed (httpx on the same machine); see
rest_bench.py for how much of a request is the client's.

Query shapes (the issue's three targets first):
  obs_patient_code      Observation?patient=X&code=http://loinc.org|Y
  patient_family_birth  Patient?family=F&birthdate=D
  everything            Patient/X/$everything (one page of up to 200, ~100 resources)
  obs_patient_cat_date  Observation?patient=X&category=laboratory&date=ge2020-01-01
  encounter_sorted      Encounter?patient=X&_sort=-date&_count=10
  patient_identifier    Patient?identifier=system|mrn
  patient_name_prefix   Patient?name=Ka&_count=20
  condition_code        Condition?code=I10&_count=20
  obs_value_range       Observation?code=2345-7&value-quantity=gt140&_count=20
  medreq_include        MedicationRequest?patient=X&_include=MedicationRequest:requester
  patient_has_obs       Patient?_has:Observation:patient:code=4548-4&_count=20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from rest_bench import (  # noqa: E402
    _machine,
    _safe_url,
    spawn_server,
    summarize,
    wait_ready,
)
from synth import LOINC, MRN_SYSTEM, Generator  # noqa: E402

FHIR_JSON = "application/fhir+json"
TARGETS_MS = {"obs_patient_code": 5.0, "patient_family_birth": 10.0, "everything": 25.0}
P99_CEILING_MS = 500.0


def queries(rng: random.Random, facts: list[dict[str, Any]]) -> dict[str, str]:
    """One instance of every query shape, for a random loaded patient."""
    f = rng.choice(facts)
    pid = f["id"]
    code = rng.choice(f["lab_codes"]) if f["lab_codes"] else "718-7"
    return {
        "obs_patient_code": f"/Observation?patient={pid}&code={LOINC}|{code}",
        "patient_family_birth": f"/Patient?family={f['family']}&birthdate={f['birthDate']}",
        "everything": f"/Patient/{pid}/$everything?_count=200",
        "obs_patient_cat_date": (
            f"/Observation?patient={pid}&category=laboratory&date=ge2020-01-01"
        ),
        "encounter_sorted": f"/Encounter?patient={pid}&_sort=-date&_count=10",
        "patient_identifier": f"/Patient?identifier={MRN_SYSTEM}|{f['mrn']}",
        "patient_name_prefix": f"/Patient?name={f['family'][:2]}&_count=20",
        "condition_code": "/Condition?code=I10&_count=20",
        "obs_value_range": "/Observation?code=2345-7&value-quantity=gt140&_count=20",
        "medreq_include": (
            f"/MedicationRequest?patient={pid}&_include=MedicationRequest:requester"
        ),
        "patient_has_obs": "/Patient?_has:Observation:patient:code=4548-4&_count=20",
    }


async def load(
    base: str, token: str, gen: Generator, patients: int, clients: int, facts: list[dict[str, Any]]
) -> dict[str, float]:
    """Post `patients` transaction Bundles over `clients` connections; resources/s."""
    headers = {"Authorization": f"Bearer {token}", "Content-Type": FHIR_JSON}
    queue: asyncio.Queue[tuple[dict[str, Any], dict[str, Any]] | None] = asyncio.Queue(
        maxsize=clients * 2
    )
    loaded = 0

    async def worker() -> None:
        nonlocal loaded
        async with httpx.AsyncClient(base_url=base, timeout=300.0) as client:
            while (item := await queue.get()) is not None:
                bundle, fact = item
                r = await client.post("/fhir", json=bundle, headers=headers)
                if r.status_code != 200:
                    raise SystemExit(f"transaction failed: {r.status_code} {r.text[:500]}")
                location = r.json()["entry"][0]["response"]["location"]
                fact["id"] = location.split("/")[1]
                facts.append(fact)
                loaded += fact["resources"]

    started = time.perf_counter()
    tasks = [asyncio.create_task(worker()) for _ in range(clients)]
    last_report = started
    for i in range(patients):
        await queue.put(gen.patient_bundle())
        now = time.perf_counter()
        if now - last_report > 30:
            rate = loaded / (now - started)
            print(f"  loaded {i} patients, {loaded:,} resources, {rate:,.0f}/s", flush=True)
            last_report = now
    for _ in tasks:
        await queue.put(None)
    await asyncio.gather(*tasks)
    seconds = time.perf_counter() - started
    return {"resources": loaded, "seconds": seconds, "per_s": loaded / seconds}


async def existing(
    base: str, token: str, gen: Generator, patients: int, facts: list[dict[str, Any]]
) -> dict[str, float]:
    """--existing: the same seeded patients, already in the database; each one's server id is
    looked up by its identifier (for 500 of them: the queries only need a sample)."""
    derived = [gen.patient_bundle()[1] for _ in range(patients)]
    sample = random.Random(len(facts)).sample(derived, min(500, len(derived)))
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=base, timeout=60.0) as client:
        for fact in sample:
            r = await client.get(
                f"/fhir/Patient?identifier={MRN_SYSTEM}|{fact['mrn']}", headers=headers
            )
            r.raise_for_status()
            entries = r.json().get("entry") or []
            if not entries:
                raise SystemExit(f"--existing: patient {fact['mrn']} is not in the database")
            fact["id"] = entries[0]["resource"]["id"]
            facts.append(fact)
    return {"resources": 0, "seconds": 0.0, "per_s": 0.0}


def measure(
    base: str, token: str, facts: list[dict[str, Any]], repeat: int, seed: int
) -> dict[str, dict[str, float]]:
    rng = random.Random(seed)
    samples: dict[str, list[float]] = {}
    with httpx.Client(base_url=base + "/fhir", timeout=60.0) as client:
        headers = {"Authorization": f"Bearer {token}"}
        for _ in range(20):  # warm-up
            for url in queries(rng, facts).values():
                client.get(url, headers=headers)
        for _ in range(repeat):
            for name, url in queries(rng, facts).items():
                t = time.perf_counter()
                r = client.get(url, headers=headers)
                elapsed = (time.perf_counter() - t) * 1000
                if r.status_code != 200:
                    raise SystemExit(f"{name} failed: {r.status_code} {r.text[:300]}")
                samples.setdefault(name, []).append(elapsed)
    return {name: summarize(values) for name, values in samples.items()}


async def count_resources(base: str, token: str) -> int:
    async with httpx.AsyncClient(base_url=base + "/fhir", timeout=600.0) as client:
        headers = {"Authorization": f"Bearer {token}"}
        total = 0
        for rtype in ("Patient", "Encounter", "Observation", "Condition", "Procedure"):
            r = await client.get(f"/{rtype}?_summary=count", headers=headers)
            total += r.json()["total"]
        r = await client.get("/MedicationRequest?_summary=count", headers=headers)
        return total + r.json()["total"]


def report(results: dict[str, Any]) -> str:
    lines = [
        f"backend: {results['backend']}  machine: {results['machine']}",
        "",
        "| scale (resources) | load /s (clients) | "
        + " | ".join(f"{k} p50/p99 ms" for k in results["scales"][0]["queries"])
        + " |",
    ]
    for s in results["scales"]:
        cells = [f"{v['p50_ms']:.1f} / {v['p99_ms']:.1f}" for v in s["queries"].values()]
        lines.append(
            f"| {s['resources']:,} | {s['load']['per_s']:,.0f} ({results['clients']}, "
            f"{results['workers']}w) | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="dxf-search-bench-"))
    os.environ["DXF_WORKERS"] = str(args.workers)  # the spawned server inherits it
    server = spawn_server(args.database_url, workdir, "WARNING")
    results: dict[str, Any] = {
        "backend": _safe_url(args.database_url) if args.database_url else "sqlite (temp file)",
        "machine": _machine(),
        "clients": args.clients,
        "workers": args.workers,
        "seed": args.seed,
        "scales": [],
    }
    try:
        with httpx.Client(base_url=server.base_url) as client:
            wait_ready(client, server)
        token = server.run_cli("token", "--scope", "system/*.cruds", "--ttl", "86400")
        gen = Generator(args.seed)
        headers = {"Authorization": f"Bearer {token}", "Content-Type": FHIR_JSON}
        if not args.existing and not args.resume_from:
            async with httpx.AsyncClient(base_url=server.base_url, timeout=300.0) as client:
                r = await client.post("/fhir", json=gen.shared.bundle(), headers=headers)
                r.raise_for_status()
        facts: list[dict[str, Any]] = []
        done = 0  # patients in the database (or re-derived) so far
        if args.resume_from:
            print(f"re-deriving the {args.resume_from} patients already loaded ...", flush=True)
            await existing(server.base_url, token, gen, args.resume_from, facts)
            done = args.resume_from
        for scale in args.scales:
            todo, done = scale - done, scale
            if args.existing:
                print(f"re-deriving {todo} patients (to {scale}) already loaded ...", flush=True)
                loaded = await existing(server.base_url, token, gen, todo, facts)
            else:
                print(f"loading {todo} patients (to {scale}) ...", flush=True)
                loaded = await load(server.base_url, token, gen, todo, args.clients, facts)
                print(
                    f"  {loaded['resources']:,} resources in {loaded['seconds']:.0f} s: "
                    f"{loaded['per_s']:,.0f}/s",
                    flush=True,
                )
                server.run_cli("analyze")  # as after any bulk load (see README, "Bulk loads")
            total = await count_resources(server.base_url, token)
            print(f"measuring at {total:,} resources ...", flush=True)
            stats = measure(server.base_url, token, facts, args.repeat, args.seed + scale)
            results["scales"].append(
                {"patients": scale, "resources": total, "load": loaded, "queries": stats}
            )
            for name, s in stats.items():
                p50, p99, worst = s["p50_ms"], s["p99_ms"], s["max_ms"]
                print(f"  {name:22s} p50 {p50:7.2f}  p99 {p99:7.2f}  max {worst:7.2f}")
    finally:
        server.stop()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--scales",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[1000, 10000],
        help="patients loaded before each measurement (default 1000,10000)",
    )
    parser.add_argument("--clients", type=int, default=2, help="concurrent loaders (default 2)")
    parser.add_argument("--workers", type=int, default=1, help="server processes (default 1)")
    parser.add_argument("--repeat", type=int, default=200, help="runs of each query (default 200)")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument(
        "--database-url", help="PostgreSQL URL of an EMPTY database (default: SQLite)"
    )
    parser.add_argument(
        "--existing",
        action="store_true",
        help="measure a database this script loaded before (same --seed and --scales; give"
        " --database-url, sqlite:////path/bench.db for SQLite) without loading anything",
    )
    parser.add_argument(
        "--resume-from",
        type=int,
        default=0,
        metavar="N",
        help="the database (--database-url) holds the first N patients of this --seed from an"
        " earlier run: load from there to each of --scales (all above N), and measure",
    )
    parser.add_argument("--json", type=Path, help="also write the results as JSON")
    args = parser.parse_args(argv)
    if args.resume_from and (
        not args.database_url or args.existing or min(args.scales) <= args.resume_from
    ):
        parser.error("--resume-from needs --database-url, scales above it, and no --existing")
    if args.existing and not args.database_url:
        parser.error("--existing needs --database-url")
    results = asyncio.run(main_async(args))
    print()
    print(report(results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
