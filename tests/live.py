"""Real dxf-bridge servers for integration tests: `dxf-bridge serve` processes on loopback, each
with its own SQLite database, signing key and base URL, driven through their CLI and HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LiveServer:
    name: str
    home: Path
    port: int = field(default_factory=free_port)
    extra_env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base(self) -> str:
        return f"{self.origin}/fhir"

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "DXF_DATABASE_URL": f"sqlite:///{self.home / 'dxf.db'}",
            "DXF_SIGNING_KEY_FILE": str(self.home / "signing-key.json"),
            "DXF_BASE_URL": self.origin,
            "DXF_LOG_LEVEL": "WARNING",
            **self.extra_env,
        }

    def cli(self, *args: str) -> str:
        """Run `dxf-bridge ARGS` against this server's settings; its standard output."""
        done = subprocess.run(
            [sys.executable, "-m", "app.cli", *args],
            env=self.env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=180,
        )
        if done.returncode != 0:
            raise AssertionError(f"{self.name}: dxf-bridge {args[0]} exited {done.returncode}")
        return done.stdout

    def token(self, scope: str = "system/*.cruds") -> str:
        return self.cli("token", "--scope", scope).strip()

    async def start(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        if not (self.home / "dxf.db").exists():
            self.cli("migrate")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve", "--port", str(self.port)],
            env=self.env,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        async with httpx.AsyncClient() as http:
            for _ in range(600):  # up to 60 s; a fresh interpreter imports for a few seconds
                if self.proc.poll() is not None:
                    raise AssertionError(f"{self.name} exited with {self.proc.returncode}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(f"{self.origin}/healthz", timeout=1)).status_code == 200:
                        return
                await asyncio.sleep(0.1)  # polling a condition with a deadline
        raise AssertionError(f"{self.name} did not become ready")

    def stop(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None

    async def post(self, path: str, body: dict[str, Any], token: str) -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=30) as http:
            r = await http.post(
                f"{self.base}{path}",
                json=body,
                headers={
                    "Authorization": f"Bearer {token}",
                    "Content-Type": "application/fhir+json",
                },
            )
        assert r.status_code in (200, 201), (self.name, path, r.status_code, r.text[:500])
        return dict(r.json())
