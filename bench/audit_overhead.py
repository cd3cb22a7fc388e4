"""What auditing costs a read: median and p99 of GET /fhir/Patient/{id}, in process over ASGI,
with the audit recorder on, then replaced by a no-op. SQLite in a temporary directory, or
--database-url for an existing (migrated, disposable) database.

    .venv/bin/python bench/audit_overhead.py [--reads 2000] [--database-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from app.auth.tokens import issue_token
from app.container import build_container
from app.db import Database
from app.main import create_app
from app.migrate import upgrade
from app.settings import Settings


async def _measure(client: httpx.AsyncClient, path: str, headers: dict[str, str], n: int):
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        response = await client.get(path, headers=headers)
        samples.append(time.perf_counter() - started)
        assert response.status_code == 200, response.text
    samples.sort()
    return statistics.median(samples) * 1e3, samples[int(len(samples) * 0.99)] * 1e3


async def main(reads: int, database_url: str | None, wait_for_flush: bool) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="dxf-audit-bench-"))
    url = database_url or f"sqlite:///{tmp / 'bench.db'}"
    db = Database(url)
    await upgrade(db)
    settings = Settings(
        database_url=url,
        base_url="http://bench",
        signing_key_file=tmp / "key.json",
        log_level="WARNING",
        audit_wait_for_flush=wait_for_flush,
    )
    container = build_container(settings, db=db)
    token = issue_token(
        container.keys,
        issuer=settings.issuer,
        audience=settings.fhir_base_url,
        scope="system/*.cruds",
    )
    headers = {"Authorization": f"Bearer {token}"}
    transport = httpx.ASGITransport(app=create_app(settings, container=container))
    async with httpx.AsyncClient(transport=transport, base_url="http://bench/fhir") as client:
        created = await client.post(
            "/Patient",
            json={"resourceType": "Patient", "gender": "unknown"},
            headers={**headers, "Content-Type": "application/fhir+json"},
        )
        path = f"/Patient/{created.json()['id']}"
        await _measure(client, path, headers, 200)  # warm-up
        audited = await _measure(client, path, headers, reads)

        async def no_audit(entry, body=None):  # noqa: ANN001, ARG001
            return "none"

        container.audit.record = no_audit  # type: ignore[method-assign]
        await _measure(client, path, headers, 200)
        bare = await _measure(client, path, headers, reads)
    await container.close()
    print(f"backend: {db.dialect}, reads: {reads}, audit waits for WAL flush: {wait_for_flush}")
    print(f"audited   median {audited[0]:.3f} ms  p99 {audited[1]:.3f} ms")
    print(f"no audit  median {bare[0]:.3f} ms  p99 {bare[1]:.3f} ms")
    print(f"overhead  median {audited[0] - bare[0]:.3f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reads", type=int, default=2000)
    parser.add_argument("--database-url")
    parser.add_argument(
        "--no-wait-for-flush", action="store_true", help="DXF_AUDIT_WAIT_FOR_FLUSH=false"
    )
    args = parser.parse_args()
    asyncio.run(main(args.reads, args.database_url, not args.no_wait_for_flush))
