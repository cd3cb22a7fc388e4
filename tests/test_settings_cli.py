"""Settings, the signing key file, and the dxf-bridge command."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from app.auth.keys import load_or_create_signing_keys
from app.auth.tokens import TokenValidator
from app.cli import main
from app.settings import Settings, async_database_url


def test_database_url_mapping():
    assert async_database_url("sqlite:///./data/x.db") == "sqlite+pysqlite:///./data/x.db"
    assert async_database_url("postgresql://u@h/db") == "postgresql+asyncpg://u@h/db"
    assert async_database_url("postgres://u@h/db") == "postgresql+asyncpg://u@h/db"
    assert async_database_url("postgresql+asyncpg://u@h/db") == "postgresql+asyncpg://u@h/db"
    with pytest.raises(ValueError, match="unsupported"):
        async_database_url("mysql://u@h/db")


def test_settings_from_environment(monkeypatch):
    monkeypatch.setenv("DXF_BASE_URL", "https://fhir.example.org/")
    monkeypatch.setenv("DXF_PORT", "9090")
    monkeypatch.setenv("DXF_MAX_BODY_BYTES", "2048")
    s = Settings()
    assert s.fhir_base_url == "https://fhir.example.org/fhir"
    assert s.port == 9090 and s.max_body_bytes == 2048
    assert s.database_url.startswith("sqlite:///") and "data" in s.database_url
    monkeypatch.setenv("DXF_BASE_URL", "fhir.example.org")
    with pytest.raises(ValidationError):
        Settings()


def test_signing_key_created_private(tmp_path):
    path = tmp_path / "sub" / "key.json"
    keys, created = load_or_create_signing_keys(path)
    assert created
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    again, created_again = load_or_create_signing_keys(path)
    assert not created_again and again.kid == keys.kid
    os.chmod(path, 0o644)
    with pytest.raises(PermissionError):
        load_or_create_signing_keys(path)


def test_token_command_prints_a_valid_token(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DXF_SIGNING_KEY_FILE", str(tmp_path / "k.json"))
    monkeypatch.setenv("DXF_BASE_URL", "http://127.0.0.1:8080")
    assert main(["token", "--scope", "patient/*.rs", "--patient", "p9", "--ttl", "60"]) == 0
    token = capsys.readouterr().out.strip()
    keys, _ = load_or_create_signing_keys(tmp_path / "k.json")
    validator = TokenValidator(
        keys, issuer="http://127.0.0.1:8080", audience="http://127.0.0.1:8080/fhir"
    )
    principal = validator.authenticate(f"Bearer {token}")
    assert principal.policy.patient == "p9"
    assert principal.expires_at - principal.claims["iat"] == 60


def test_migrate_command_creates_schema(tmp_path):
    env = {**os.environ, "DXF_DATABASE_URL": f"sqlite:///{tmp_path}/cli.db"}
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "migrate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "cli.db").exists()


def test_sqlite_database_file_is_private(tmp_path):
    from app.db import Database

    Database(f"sqlite:///{tmp_path}/new/dxf.db")
    assert stat.S_IMODE(os.stat(tmp_path / "new").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(tmp_path / "new" / "dxf.db").st_mode) == 0o600


def test_page_size_settings_are_consistent():
    with pytest.raises(ValidationError):
        Settings(default_page_size=2000, max_page_size=1000)


def test_serve_with_two_workers(tmp_path):
    """`serve --workers 2`: both processes serve the same database and signing key, so a
    resource written through one is read through whichever answers next."""
    import time

    import httpx

    server, port, env = _serve_two_workers(tmp_path)
    base = f"http://127.0.0.1:{port}"
    cli = [sys.executable, "-m", "app.cli"]
    try:
        token = subprocess.run(
            [*cli, "token", "--scope", "system/*.cruds"],
            env=env,
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout.strip()
        headers = {"Authorization": f"Bearer {token}"}
        deadline = time.monotonic() + 60
        with httpx.Client(base_url=f"{base}/fhir", timeout=10) as client:
            while True:  # poll until the workers answer (bounded; not a synchronisation sleep)
                try:
                    if client.get("/metadata").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert server.poll() is None, server.stderr.read() if server.stderr else ""
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.1)
            ids = []
            for i in range(6):
                body = {"resourceType": "Patient", "gender": "unknown", "id": f"w{i}"}
                r = client.put(f"/Patient/w{i}", json=body, headers=headers)
                assert r.status_code == 201, r.text
                ids.append(r.json()["id"])
            for rid in ids:  # new connections: reads land on either worker
                with httpx.Client(base_url=f"{base}/fhir", timeout=10) as fresh:
                    assert fresh.get(f"/Patient/{rid}", headers=headers).status_code == 200
        # keep-alive connections opened together are spread over both workers (each accepts
        # on its own SO_REUSEPORT socket), not all taken by whichever woke first
        if sys.platform == "linux":
            clients = [httpx.Client(base_url=base, timeout=10) for _ in range(24)]
            try:
                for c in clients:
                    assert c.get("/healthz").status_code == 200
                owners = _connection_owners(server.pid, port)
                assert sum(owners.values()) == 24 and len(owners) == 2, owners
            finally:
                for c in clients:
                    c.close()
            # SIGTERM stops the workers too, and the serving process exits cleanly
            workers = _children(server.pid)
            assert len(workers) == 2
            server.terminate()
            assert server.wait(timeout=60) == 0
            assert not [pid for pid in workers if Path(f"/proc/{pid}").exists()]
    finally:
        server.terminate()
        server.communicate(timeout=30)  # reaps it and closes its stderr pipe


def test_a_worker_that_dies_at_start_stops_the_server(tmp_path):
    """A worker that dies within seconds of starting (a broken deployment) is not restarted
    in a loop: the serving process stops the other workers and exits 1."""
    import signal
    import time

    import httpx

    if sys.platform != "linux":
        pytest.skip("reads /proc")
    server, port, _env = _serve_two_workers(tmp_path)
    try:
        deadline = time.monotonic() + 60
        while True:  # poll until both workers run (bounded; not a synchronisation sleep)
            workers = _children(server.pid)
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code
            except httpx.TransportError:
                ready = 0
            if ready == 200 and len(workers) == 2:
                break
            assert server.poll() is None and time.monotonic() < deadline, "no start"
            time.sleep(0.1)
        os.kill(workers[0], signal.SIGKILL)
        assert server.wait(timeout=60) == 1
        assert not Path(f"/proc/{workers[1]}").exists()
    finally:
        server.kill()
        server.communicate(timeout=30)  # reaps it and closes its stderr pipe


def _serve_two_workers(tmp_path: Path) -> tuple[subprocess.Popen[bytes], int, dict[str, str]]:
    """`dxf-bridge serve --workers 2` on a free loopback port over a migrated SQLite file:
    the server process (stderr piped), its port and its environment."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        **os.environ,
        "DXF_DATABASE_URL": f"sqlite:///{tmp_path}/w.db",
        "DXF_SIGNING_KEY_FILE": str(tmp_path / "key.json"),
        "DXF_BASE_URL": f"http://127.0.0.1:{port}",
        "DXF_LOG_LEVEL": "WARNING",
    }
    cli = [sys.executable, "-m", "app.cli"]
    subprocess.run([*cli, "migrate"], env=env, check=True, capture_output=True, timeout=120)
    server = subprocess.Popen(
        [*cli, "serve", "--port", str(port), "--workers", "2"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    return server, port, env


def _children(parent: int) -> list[int]:
    """The live worker processes (multiprocessing spawns; not its resource tracker) whose
    parent is `parent`, from /proc, in pid order."""
    found = []
    for proc_stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = proc_stat.read_text().rsplit(")", 1)[1].split()
            command = (proc_stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == parent and fields[0] != "Z" and b"spawn_main" in command:
            found.append(int(proc_stat.parent.name))
    return sorted(found)


def _connection_owners(parent: int, port: int) -> dict[int, int]:
    """Established server-side connections on 127.0.0.1:`port`, counted per child process of
    `parent` that holds them (from /proc: the sockets' inodes and the children's open files)."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == f"0100007F:{port:04X}" and fields[3] == "01":  # local addr, ESTABLISHED
            inodes.add(fields[9])
    owners: dict[int, int] = {}
    for proc_stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(proc_stat.read_text().rsplit(")", 1)[1].split()[1])
            if ppid != parent:
                continue
            links = [os.readlink(fd) for fd in (proc_stat.parent / "fd").iterdir()]
        except (OSError, ValueError, IndexError):
            continue  # the process ended meanwhile
        held = sum(1 for link in links if link[len("socket:[") : -1] in inodes)
        if held:
            owners[int(proc_stat.parent.name)] = held
    return owners


def test_analyze_command_measures_statistics(tmp_path):
    """`dxf-bridge analyze` replaces the seeded SQLite statistics with measured ones."""
    import sqlite3

    env = {**os.environ, "DXF_DATABASE_URL": f"sqlite:///{tmp_path}/a.db"}
    cli = [sys.executable, "-m", "app.cli"]
    subprocess.run([*cli, "migrate"], env=env, check=True, capture_output=True, timeout=120)

    def stat() -> str:
        with sqlite3.connect(tmp_path / "a.db") as conn:
            row = conn.execute(
                "SELECT stat FROM sqlite_stat1 WHERE idx = 'sqlite_autoindex_resource_1'"
            ).fetchone()
        return str(row[0]) if row else ""

    assert stat().startswith("1000000 ")  # seeded by migration 0009
    with sqlite3.connect(tmp_path / "a.db") as conn:
        conn.execute(
            "INSERT INTO resource VALUES ('Patient', 'p1', 1, '2026-01-01 00:00:00', 0, '{}')"
        )
    done = subprocess.run(
        [*cli, "analyze"], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert stat().startswith("1 ")  # one resource, measured
