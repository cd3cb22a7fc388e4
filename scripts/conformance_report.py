"""Regenerates docs/conformance-report.html: the kit run against a seeded local dxf-bridge.

Starts `dxf-bridge serve` on a free loopback port with a fresh SQLite database and signing key in
a temporary directory, seeds it with a small US Core-shaped record (Patients, Encounters, heart
rate and laboratory Observations, problem-list Conditions, Procedures in one transaction
Bundle: the `us-core` group holds the server's own data to the profiles it claims), then runs
`dxf-bridge conformance BASE --token T --report OUT` and stops the server. Exit status is the
kit's (non-zero when any check failed). Run it with `make conformance-report`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def _dxf() -> list[str]:
    return [sys.executable, "-m", "app.cli"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"


def _cc(system: str, code: str) -> dict[str, object]:
    return {"coding": [{"system": system, "code": code}]}


def _ucum(value: int, code: str) -> dict[str, object]:
    return {"value": value, "unit": code, "system": "http://unitsofmeasure.org", "code": code}


def _seed_bundle() -> dict[str, object]:
    entries: list[dict[str, object]] = []
    for n, (family, gender, born) in enumerate(
        [
            ("Nguyen", "female", "1975-09-30"),
            ("Park", "male", "1968-02-11"),
            ("Ortiz", "other", "1990-12-01"),
        ]
    ):
        pid = f"urn:uuid:00000000-0000-4000-8000-00000000000{n}"
        entries.append(
            {
                "fullUrl": pid,
                "resource": {
                    "resourceType": "Patient",
                    "identifier": [{"system": "urn:example:mrn", "value": f"SEED-{n}"}],
                    "name": [{"family": family, "given": ["Seed"]}],
                    "gender": gender,
                    "birthDate": born,
                },
                "request": {"method": "POST", "url": "Patient"},
            }
        )
        day = f"2024-03-0{n + 1}"
        for kind, body in (
            (
                "Encounter",
                {
                    "status": "finished",
                    "class": {
                        "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                        "code": "AMB",
                    },
                    "type": [_cc("http://snomed.info/sct", "185349003")],
                    "subject": {"reference": pid},
                    "period": {"start": day},
                },
            ),
            (
                "Observation",
                {
                    "status": "final",
                    "category": [_cc(_OBSERVATION_CATEGORY, "vital-signs")],
                    "code": _cc("http://loinc.org", "8867-4"),
                    "subject": {"reference": pid},
                    "effectiveDateTime": day,
                    "valueQuantity": _ucum(60 + n, "/min"),
                },
            ),
            (
                "Observation",
                {
                    "status": "final",
                    "category": [_cc(_OBSERVATION_CATEGORY, "laboratory")],
                    "code": _cc("http://loinc.org", "2339-0"),
                    "subject": {"reference": pid},
                    "effectiveDateTime": day,
                    "valueQuantity": _ucum(90 + n, "mg/dL"),
                },
            ),
            (
                "Condition",
                {
                    "clinicalStatus": _cc(
                        "http://terminology.hl7.org/CodeSystem/condition-clinical", "active"
                    ),
                    "category": [
                        _cc(
                            "http://terminology.hl7.org/CodeSystem/condition-category",
                            "problem-list-item",
                        )
                    ],
                    "code": _cc("http://snomed.info/sct", "44054006"),
                    "subject": {"reference": pid},
                },
            ),
            (
                "Procedure",
                {
                    "status": "completed",
                    "code": _cc("http://snomed.info/sct", "80146002"),
                    "subject": {"reference": pid},
                    "performedDateTime": day,
                },
            ),
        ):
            entries.append(
                {
                    "resource": {"resourceType": kind, **body},
                    "request": {"method": "POST", "url": kind},
                }
            )
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "conformance-report.html")
    args = parser.parse_args()
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="dxf-conformance-") as tmp:
        env = {
            **os.environ,
            "DXF_DATABASE_URL": f"sqlite:///{tmp}/dxf.db",
            "DXF_SIGNING_KEY_FILE": f"{tmp}/signing-key.json",
            "DXF_BASE_URL": f"http://127.0.0.1:{port}",
            "DXF_LOG_LEVEL": "WARNING",
        }
        env.pop("DXF_TOKEN_ISSUER", None)
        run = {"env": env, "cwd": ROOT, "check": True, "capture_output": True, "text": True}
        subprocess.run([*_dxf(), "migrate"], **run)  # type: ignore[call-overload]
        token = subprocess.run(
            [*_dxf(), "token", "--scope", "system/*.cruds"], **run
        ).stdout.strip()  # type: ignore[call-overload]
        log = open(Path(tmp) / "server.log", "wb")  # noqa: SIM115 - closed in finally
        server = subprocess.Popen(
            [*_dxf(), "serve", "--port", str(port)],
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        base = f"http://127.0.0.1:{port}/fhir"
        try:
            _wait_ready(f"http://127.0.0.1:{port}/healthz", server)
            seeded = httpx.post(
                base,
                json=_seed_bundle(),
                headers={
                    "Authorization": f"Bearer {token}",
                    "Content-Type": "application/fhir+json",
                },
                timeout=60,
            )
            seeded.raise_for_status()
            args.out.parent.mkdir(parents=True, exist_ok=True)
            kit = subprocess.run(
                [*_dxf(), "conformance", base, "--token", token, "--report", str(args.out)],
                env=env,
                cwd=ROOT,
                check=False,
            )
            return kit.returncode
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(os.getpgid(server.pid), signal.SIGTERM)
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(timeout=5)
            log.close()


def _wait_ready(url: str, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"dxf-bridge serve exited with {server.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.1)
    raise SystemExit("dxf-bridge serve did not become ready within 60 s")


if __name__ == "__main__":
    sys.exit(main())
