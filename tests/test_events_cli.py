"""`dxf-bridge events ...` as operators run it (subprocesses against the test database), and the
dispatcher in the server's lifespan."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from app.db import Database
from app.settings import Settings
from tests.event_receivers import MllpReceiver, free_port
from tests.hl7_messages import adt

REPO = Path(__file__).resolve().parent.parent


async def cli(settings: Settings, *args: str, **env: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "app.cli",
        *args,
        cwd=REPO,
        env={
            **os.environ,
            "DXF_DATABASE_URL": settings.database_url,
            "DXF_SIGNING_KEY_FILE": str(settings.signing_key_file),
            **env,
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.fixture
async def receiver() -> AsyncIterator[MllpReceiver]:
    rx = await MllpReceiver().start()
    yield rx
    await rx.close()


async def test_receivers_deliveries_dead_letters_and_retry(
    settings: Settings, db: Database, receiver: MllpReceiver, tmp_path: Path
):
    code, out, _ = await cli(
        settings, "events", "receiver", "add", "network", "--mllp", receiver.url
    )
    assert code == 0, out
    down = f"mllp://127.0.0.1:{free_port()}"
    code, _, _ = await cli(
        settings, "events", "receiver", "add", "backup", "--mllp", down, "--kinds", "admit"
    )
    assert code == 0
    code, _, err = await cli(
        settings, "events", "receiver", "add", "bad", "--fhir-message", "ftp://x", "--kinds", "x"
    )
    assert code == 2 and "error:" in err
    code, out, _ = await cli(settings, "events", "receiver", "list")
    assert "network\thl7v2-mllp" in out and "backup\thl7v2-mllp" in out and "\tadmit\t" in out

    feed = tmp_path / "a01.hl7"
    feed.write_bytes(adt("A01", "CLI1", "20260301101500-0800"))
    assert (await cli(settings, "ingest-hl7", str(feed)))[0] == 0

    code, out, _ = await cli(settings, "events", "deliver-once", DXF_EVENTS_MAX_ATTEMPTS="1")
    assert code == 0 and "routed=1 delivered=1 retry=0 dead=1" in out, out
    assert len(receiver.messages) == 1 and b"|CLI1|" in receiver.messages[0]

    code, out, _ = await cli(settings, "events", "list", "--status", "dead")
    [header, row] = out.strip().splitlines()
    assert header.startswith("id\tevent\ttrigger")
    assert "receiver/backup" in row and "unreachable" in row and "gave up after 1" in row
    assert "NGUYEN" not in out

    code, out, _ = await cli(settings, "events", "stats")
    assert "dead=1" in out and "delivered=1" in out and "p99" in out

    dead_id = row.split("\t")[0]
    code, out, _ = await cli(settings, "events", "retry", dead_id)
    assert code == 0 and "1 delivery(ies) back to pending" in out
    code, out, _ = await cli(settings, "events", "list", "--status", "pending")
    assert len(out.strip().splitlines()) == 2
    code, _, _ = await cli(settings, "events", "retry", "999999")
    assert code == 1

    code, out, _ = await cli(settings, "events", "receiver", "remove", "backup")
    assert code == 0
    code, out, _ = await cli(settings, "events", "deliver-once")
    assert "dead=1" in out  # its receiver is gone: nothing to deliver to, and it says so
    code, out, _ = await cli(settings, "events", "list", "--status", "dead")
    assert "removed or disabled" in out


async def test_topic_command(settings: Settings):
    code, out, _ = await cli(settings, "events", "topic")
    topic = json.loads(out)
    assert code == 0 and topic["url"].endswith("/SubscriptionTopic/encounter-adt")
    assert {t["event"]["coding"][0]["code"] for t in topic["eventTrigger"]} >= {"A01", "A03"}


async def test_the_server_lifespan_runs_the_dispatcher(container, settings: Settings):
    from app.main import create_app

    app = create_app(settings, container=container)
    async with app.api.router.lifespan_context(app.api):
        dispatcher = container.events()
        assert dispatcher._task is not None and not dispatcher._task.done()  # noqa: SLF001
    assert dispatcher._task is None  # noqa: SLF001 - stopped with the API


async def test_the_capability_statement_names_the_topic(client):
    from app.events.topic import TOPIC_URL

    statement = (await client.get("/metadata")).json()
    [entry] = [r for r in statement["rest"][0]["resource"] if r["type"] == "Subscription"]
    assert entry["extension"][0]["valueCanonical"] == TOPIC_URL
    assert entry["supportedProfile"][0].endswith("/backport-subscription")
