"""`dxf-bridge intermediaries add|list|check|disable|enable|kinds`: registrations in the
database, checks over real loopback ports (the conformance suite's lying FHIR server, an MLLP
listener), and no credential in anything printed."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn
from joserfc.jwk import RSAKey
from sqlalchemy import select

from app.cli import main
from app.db import Database
from app.migrate import upgrade
from app.store.tables import intermediary, resource
from tests.test_conformance_lies import _LyingServer


@pytest.fixture
async def env(tmp_path, monkeypatch, key_file):
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    db = Database(url)
    await upgrade(db)
    monkeypatch.setenv("DXF_DATABASE_URL", url)
    monkeypatch.setenv("DXF_SIGNING_KEY_FILE", str(key_file))
    monkeypatch.setenv("DXF_BASE_URL", "https://fhir.example.org")
    yield db
    await db.dispose()


@pytest.fixture(scope="module")
def fhir_url() -> Iterator[str]:
    """A small FHIR server (the conformance suite's liar) on a loopback port, in a thread."""
    config = uvicorn.Config(
        _LyingServer().app, host="127.0.0.1", port=0, log_level="warning", lifespan="off"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the test server did not start"
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}/fhir"
    server.should_exit = True
    thread.join(timeout=20)


def _run(*argv):
    return asyncio.get_running_loop().run_in_executor(None, main, list(argv))


@pytest.fixture
def key_path(tmp_path):
    path = tmp_path / "our-client-key.json"
    path.write_text(json.dumps(RSAKey.generate_key(2048).as_dict(private=True)))
    return path


async def test_add_list_disable_enable_without_checks(env, capsys, key_path):
    code = await _run(
        "intermediaries",
        "add",
        "sdhc",
        "--kind",
        "san-diego-health-connect",
        "--base-url",
        "https://sdhc.example.test/fhir",
        "--client-id",
        "secret-client-id",
        "--token-url",
        "https://auth.sdhc.example.test/token",
        "--key-file",
        str(key_path),
        "--set",
        "patient_match=true",
        "--no-check",
    )
    assert code == 0
    assert "registered: Endpoint/" in capsys.readouterr().out
    assert await _run("intermediaries", "list") == 0
    listed = capsys.readouterr().out
    assert "sdhc\tsan-diego-health-connect\tunchecked\tenabled" in listed
    assert "never checked" in listed
    assert await _run("intermediaries", "list", "--json") == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown[0]["settings"] == {"patient_match": True} and shown[0]["auth"] == "smart-backend"
    assert await _run("intermediaries", "disable", "sdhc") == 0
    assert "disabled (status off)" in capsys.readouterr().out
    assert await _run("intermediaries", "enable", "sdhc") == 0
    assert "enabled (status unchecked)" in capsys.readouterr().out
    assert await _run("intermediaries", "disable", "nobody") == 1
    everything_printed = capsys.readouterr()
    for secret in ("secret-client-id", "auth.sdhc", "our-client-key"):
        assert secret not in listed + json.dumps(shown) + everything_printed.out
    async with env.read() as conn:
        row = (await conn.execute(select(intermediary))).one()
        endpoint = (
            await conn.execute(select(resource.c.content).where(resource.c.res_type == "Endpoint"))
        ).scalar_one()
    assert row.client_id == "secret-client-id" and row.key_file == str(key_path)
    assert "secret-client-id" not in str(endpoint)  # the Endpoint holds no credential


async def test_check_against_a_fhir_server_records_the_outcome(env, capsys, fhir_url):
    add = ("intermediaries", "add", "liar", "--kind", "fhir", "--base-url", fhir_url)
    code = await _run(*add, "--auth", "none", "--set", "check_groups=capability")
    assert code == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "liar\tfhir\tactive\tenabled" in out and "0 failed" in out
    # the crud group needs a token the registration does not have: failures, status error
    code = await _run(
        "intermediaries", "add", "liar-crud", "--kind", "fhir", "--base-url", fhir_url,
        "--auth", "none", "--set", "check_groups=crud", "--no-check",
    )  # fmt: skip
    assert code == 0
    capsys.readouterr()
    assert await _run("intermediaries", "check", "liar-crud") == 1
    out = capsys.readouterr().out
    assert "liar-crud\tfhir\terror" in out and "FAIL crud." in out
    assert await _run("intermediaries", "check", "--all") == 1
    out = capsys.readouterr().out
    assert "liar\tfhir\tactive" in out and "liar-crud\tfhir\terror" in out
    assert await _run("intermediaries", "check", "nobody") == 1


async def test_an_unreachable_endpoint_is_an_error(env, capsys):
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    code = await _run(
        "intermediaries", "add", "gone", "--kind", "fhir",
        "--base-url", f"http://127.0.0.1:{port}/fhir", "--auth", "none",
    )  # fmt: skip
    assert code == 1
    out = capsys.readouterr().out
    assert "gone\tfhir\terror" in out and "FAIL kit.reachable" in out


async def test_mllp_kind_is_checked_by_connecting(env, capsys):
    accepted = asyncio.Event()

    async def on_connect(reader, writer):
        accepted.set()
        writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        code = await _run(
            "intermediaries", "add", "medex", "--kind", "manifest-medex",
            "--base-url", f"mllp://127.0.0.1:{port}",
        )  # fmt: skip
    finally:
        server.close()
        await server.wait_closed()
    assert code == 0, capsys.readouterr()
    assert accepted.is_set()
    assert "medex\tmanifest-medex\tactive" in capsys.readouterr().out
    assert await _run("intermediaries", "check", "medex") == 1  # the listener is gone now
    assert "FAIL mllp.connect" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--kind", "nosuch", "--base-url", "https://x.example.test/fhir"], "unknown kind"),
        (["--kind", "fhir", "--base-url", "https://x.example.test/fhir"], "client-id"),
        (["--kind", "fhir", "--base-url", "https://x.example.test", "--auth", "bogus"], "auth"),
        (["--kind", "manifest-medex", "--base-url", "https://x.example.test"], "mllp://"),
        (
            ["--kind", "fhir", "--base-url", "https://x.example.test", "--set", "page_size=x"],
            "page_size",
        ),
        (
            ["--kind", "fhir", "--base-url", "https://x", "--client-id", "c", "--token-url",
             "https://t.example.test", "--key-file", "/nonexistent/secret.pem"],
            "key-file",
        ),
    ],
)  # fmt: skip
async def test_bad_registrations_exit_2(env, capsys, args, words):
    assert await _run("intermediaries", "add", "bad", *args, "--no-check") == 2
    err = capsys.readouterr().err
    assert words in err and "/nonexistent/secret.pem" not in err


async def test_kinds(env, capsys):
    assert await _run("intermediaries", "kinds") == 0
    lines = capsys.readouterr().out.splitlines()
    assert sum("\tQHIO\t" in line for line in lines) == 9
