#!/usr/bin/env python3
"""Federated $everything benchmark: parallel intermediaries, and the deadline when one hangs.

Standalone script (not a pytest test). Everything runs on 127.0.0.1:

- a child process (this script with --intermediaries) serves N small FHIR servers, each a
  uvicorn server on its own port: `GET /fhir/Patient?identifier=...` (the generic adapter's
  locate) and `GET /fhir/Patient/{id}/$everything` (its fetch), each answering after half of
  --delay-ms, so one intermediary's whole answer takes --delay-ms; with --hang one more server
  accepts the request and never answers;
- this process runs dxf-bridge (SQLite in a temporary directory, one Patient with
  --observations Observations) under uvicorn on a free port, its federator wired to a
  generic FHIR adapter (app/adapters/fhir.py) per intermediary, and an httpx client that asks
  `GET /fhir/Patient/{id}/$everything` one request at a time over one keep-alive connection.

Scenarios, each after a short warm-up, client-observed latency in ms:
  local        `_federate=false`: the local $everything alone
  federated    --intermediaries servers answering in --delay-ms each
               (target: p50 <= 300 ms, i.e. parallel, not summed)
  one_hanging  the same plus one server that never answers, deadline --deadline seconds
               (target: p50 and p99 <= deadline + 100 ms)
  breaker_open the same after the hanging server's breaker opened (5 failures): it is skipped

The breaker is disabled (a huge failure threshold) during `one_hanging`, so every request
waits out the deadline instead of being saved by the breaker, which the last scenario shows.

Run: `.venv/bin/python bench/federation_bench.py` (about 30 s with the defaults);
`--json FILE` also writes the numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import uvicorn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MRN = "urn:oid:2.16.840.1.113883.3.dxf.mrn"
TARGET_PARALLEL_P50_MS = 300.0
DEADLINE_SLACK_MS = 100.0


# ---- the intermediaries (child process) ---------------------------------------------------------


def _intermediary(index: int, delay: float, hang: bool) -> Any:
    """A tiny FHIR server: one Patient (MRN M-BENCH) with a few Observations."""
    pid = f"remote-{index}"
    patient = {
        "resourceType": "Patient",
        "id": pid,
        "identifier": [{"system": MRN, "value": "M-BENCH"}],
        "name": [{"family": "Benchperson", "given": [f"Remote{index}"]}],
        "birthDate": "1970-01-01",
    }
    observations = [
        {
            "resourceType": "Observation",
            "id": f"o{index}-{n}",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
            "subject": {"reference": f"Patient/{pid}"},
            "effectiveDateTime": f"2024-01-{n + 1:02d}",
            "valueQuantity": {"value": 60 + index + n, "unit": "/min"},
        }
        for n in range(10)
    ]

    def searchset(resources: list[dict[str, Any]]) -> bytes:
        entries = [{"resource": r, "search": {"mode": "match"}} for r in resources]
        return json.dumps(
            {"resourceType": "Bundle", "type": "searchset", "entry": entries}
        ).encode()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if hang:
            await asyncio.Event().wait()
        path = scope["path"]
        query = parse_qs(scope["query_string"].decode())
        await asyncio.sleep(delay / 2)
        if path == "/fhir/Patient" and query.get("identifier") == [f"{MRN}|M-BENCH"]:
            status, body = 200, searchset([patient])
        elif path == f"/fhir/Patient/{pid}/$everything":
            status, body = 200, searchset([patient, *observations])
        elif path == "/fhir/Patient":
            status, body = 200, searchset([])
        else:
            status, body = 404, b'{"resourceType":"OperationOutcome","issue":[]}'
        headers = [
            (b"content-type", b"application/fhir+json"),
            (b"content-length", b"%d" % len(body)),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


async def _serve_intermediaries(count: int, delay: float, hang: bool) -> None:
    servers = []
    specs = [(i, False) for i in range(count)] + ([(count, True)] if hang else [])
    for index, hangs in specs:
        sock = _loopback_socket()
        config = uvicorn.Config(
            _intermediary(index, delay, hangs),
            log_level="warning",
            lifespan="off",
            access_log=False,
            timeout_graceful_shutdown=1,
        )
        server = uvicorn.Server(config)
        servers.append((server, sock, hangs))
    tasks = [asyncio.create_task(s.serve(sockets=[sock])) for s, sock, _ in servers]
    for server, _, _ in servers:
        while not server.started:
            await asyncio.sleep(0.01)
    ports = [{"port": sock.getsockname()[1], "hang": hangs} for _, sock, hangs in servers]
    print(json.dumps(ports), flush=True)
    await asyncio.gather(*tasks)


def _loopback_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # accepted connections inherit it: without, small answers wait out delayed ACKs (~40 ms)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


# ---- dxf-bridge and the measurements (this process) -------------------------------------------


async def _measure(
    client: httpx.AsyncClient, url: str, headers: dict[str, str], n: int
) -> list[float]:
    out = []
    for _ in range(n):
        started = time.perf_counter()
        r = await client.get(url, headers=headers)
        out.append((time.perf_counter() - started) * 1000)
        if r.status_code != 200:
            raise SystemExit(f"$everything answered {r.status_code}: {r.text[:300]}")
    return out


def _summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return {
        "n": len(ordered),
        "p50_ms": round(statistics.median(ordered), 1),
        "p99_ms": round(p99, 1),
        "max_ms": round(ordered[-1], 1),
    }


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    from app.adapters.config import RegisteredEndpoint
    from app.adapters.fhir import FhirAdapter
    from app.auth.policy import AccessPolicy, ScopeGrant
    from app.auth.tokens import issue_token
    from app.container import build_container
    from app.federation.directory import StaticDirectory
    from app.federation.federator import Federator
    from app.main import create_app
    from app.migrate import upgrade
    from app.settings import Settings

    child = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--intermediaries",
            str(args.intermediaries),
            "--delay-ms",
            str(args.delay_ms),
            "--serve-intermediaries",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,  # the hanging server's cancelled requests at shutdown
        text=True,
    )
    try:
        assert child.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(child.stdout.readline), 30)
        remotes = json.loads(line)
        tmp = Path(tempfile.mkdtemp(prefix="dxf-fedbench-"))
        sock = _loopback_socket()
        port = sock.getsockname()[1]
        settings = Settings(
            database_url=f"sqlite:///{tmp / 'bench.db'}",
            base_url=f"http://127.0.0.1:{port}",
            signing_key_file=tmp / "key.json",
            log_level="ERROR",
            federation_deadline_seconds=args.deadline,
        )
        container = build_container(settings)
        await upgrade(container.db)
        writer = container.repository(
            AccessPolicy((ScopeGrant("system", "*", frozenset("cruds")),))
        )
        local = await writer.create(
            "Patient",
            {
                "resourceType": "Patient",
                "identifier": [{"system": MRN, "value": "M-BENCH"}],
                "name": [{"family": "Benchperson", "given": ["Local"]}],
                "birthDate": "1970-01-01",
            },
        )
        pid = local.resource.id
        for n in range(args.observations):
            await writer.create(
                "Observation",
                {
                    "resourceType": "Observation",
                    "status": "final",
                    "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
                    "subject": {"reference": f"Patient/{pid}"},
                    "valueQuantity": {"value": 70 + n, "unit": "/min"},
                },
            )
        remote_http = httpx.AsyncClient(timeout=httpx.Timeout(30.0))

        def adapter(spec: dict[str, Any], index: int) -> FhirAdapter:
            address = f"http://127.0.0.1:{spec['port']}/fhir"
            name = "hanging" if spec["hang"] else f"intermediary-{index}"
            return FhirAdapter(RegisteredEndpoint(name=name, address=address), remote_http)

        answering = [adapter(s, i) for i, s in enumerate(remotes) if not s["hang"]]
        hanging = [adapter(s, i) for i, s in enumerate(remotes) if s["hang"]]
        server = uvicorn.Server(
            uvicorn.Config(
                create_app(settings, container=container),
                log_level="warning",
                access_log=False,
                lifespan="on",
            )
        )
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:
            await asyncio.sleep(0.01)
        token = issue_token(
            container.keys,
            issuer=settings.issuer,
            audience=settings.fhir_base_url,
            scope="system/*.rs",
        )
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/fhir+json"}
        url = f"{settings.fhir_base_url}/Patient/{pid}/$everything"
        results: dict[str, Any] = {}
        federators: list[Federator] = []
        async with httpx.AsyncClient(timeout=httpx.Timeout(60.0)) as client:
            container.federator = Federator(StaticDirectory())

            async def scenario(
                name: str,
                adapters: list[FhirAdapter],
                n: int,
                query: str = "",
                failures: int = 10**6,
                warmup: int = args.warmup,
            ) -> None:
                federator = Federator(
                    StaticDirectory(adapters),
                    deadline=args.deadline,
                    breaker_failures=failures,
                    breaker_cooldown=3600,
                )
                federators.append(federator)
                container.federator = federator
                await _measure(client, url + query, headers, warmup)
                results[name] = _summary(await _measure(client, url + query, headers, n))
                print(f"  {name:<13} {json.dumps(results[name])}", flush=True)

            await scenario("local", answering, args.requests, "?_federate=false")
            await scenario("federated", answering, args.requests)
            body = (await client.get(url, headers=headers)).json()
            results["federated"]["remote_entries"] = sum(
                1 for e in body.get("entry", []) if "source" in e["resource"].get("meta", {})
            )
            await scenario("one_hanging", answering + hanging, args.hanging_requests)
            # the default breaker (5 failures): the five warm-up requests open it
            await scenario("breaker_open", answering + hanging, args.requests, failures=5, warmup=5)
        server.should_exit = True
        await serving
        for federator in federators:
            await federator.aclose()
        await remote_http.aclose()
        await container.close()
        return results
    finally:
        child.terminate()
        try:
            child.wait(10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--intermediaries", type=int, default=3)
    parser.add_argument("--delay-ms", type=float, default=200.0, help="each intermediary's answer")
    parser.add_argument("--deadline", type=float, default=1.0, help="federation deadline, s")
    parser.add_argument("--observations", type=int, default=20, help="local Observations")
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--hanging-requests", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--serve-intermediaries", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_intermediaries:  # the child: serve the intermediaries until terminated
        asyncio.run(_serve_intermediaries(args.intermediaries, args.delay_ms / 1000, True))
        return
    print(
        f"federated $everything: {args.intermediaries} intermediaries at {args.delay_ms:g} ms, "
        f"deadline {args.deadline:g} s, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        flush=True,
    )
    logging.disable(logging.WARNING)  # each timed-out call logs one line; not what is measured
    results = asyncio.run(_run(args))
    deadline_ms = args.deadline * 1000
    checks = [
        ("federated p50", results["federated"]["p50_ms"], TARGET_PARALLEL_P50_MS),
        ("one_hanging p50", results["one_hanging"]["p50_ms"], deadline_ms + DEADLINE_SLACK_MS),
        ("one_hanging p99", results["one_hanging"]["p99_ms"], deadline_ms + DEADLINE_SLACK_MS),
    ]
    print("\n| check | measured ms | target ms | |\n| --- | --- | --- | --- |")
    for name, value, target in checks:
        print(f"| {name} | {value} | <= {target:g} | {'met' if value <= target else 'NOT met'} |")
    for name, row in results.items():
        print(f"{name}: median {row['p50_ms']} ms, p99 {row['p99_ms']} ms (n={row['n']})")
    if args.json:
        args.json.write_text(
            json.dumps(
                {"args": vars(args) | {"json": str(args.json)}, "results": results}, indent=2
            )
        )


if __name__ == "__main__":
    main()
