"""Three real dxf-bridge servers on loopback; B and C act as intermediaries (QHIOs) for A.

A registers B and C with `dxf-bridge intermediaries add` (SMART backend services: A's key is a
client of B's and C's authorization servers), the registry's check makes them active, and a
federated `Patient/$everything` on A merges all three records. With C stopped, the answer still
comes, within the federation deadline, with an OperationOutcome issue about C.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from joserfc.jwk import ECKey

from tests.live import LiveServer

MRN = "urn:oid:2.16.840.1.113883.3.dxf.mrn"
DEADLINE = 2.0


def _record(mrn: str, family: str, codes: list[str]) -> dict[str, Any]:
    entries: list[dict[str, Any]] = [
        {
            "fullUrl": "urn:uuid:00000000-0000-4000-8000-000000000001",
            "resource": {
                "resourceType": "Patient",
                "identifier": [{"system": MRN, "value": mrn}],
                "name": [{"family": family, "given": ["Ana"]}],
                "gender": "female",
                "birthDate": "1971-04-05",
            },
            "request": {"method": "POST", "url": "Patient"},
        }
    ]
    for code in codes:
        entries.append(
            {
                "resource": {
                    "resourceType": "Observation",
                    "status": "final",
                    "category": [
                        {
                            "coding": [
                                {
                                    "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                    "code": "laboratory",
                                }
                            ]
                        }
                    ],
                    "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
                    "subject": {"reference": "urn:uuid:00000000-0000-4000-8000-000000000001"},
                    "effectiveDateTime": "2026-03-01T10:00:00Z",
                    "valueQuantity": {"value": 5.4, "unit": "%"},
                },
                "request": {"method": "POST", "url": "Observation"},
            }
        )
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def _patient_id(bundle: dict[str, Any]) -> str:
    for e in bundle["entry"]:
        if e["response"]["location"].startswith("Patient/"):
            return str(e["response"]["location"].split("/")[1])
    raise AssertionError("no Patient in the transaction response")


@pytest.fixture
async def three(tmp_path: Path):
    servers = {
        name: LiveServer(
            name,
            tmp_path / name,
            extra_env={"DXF_FEDERATION_DEADLINE_SECONDS": str(DEADLINE)} if name == "a" else {},
        )
        for name in ("a", "b", "c")
    }
    try:
        for s in servers.values():
            await s.start()
        yield servers
    finally:
        for s in servers.values():
            s.stop()


def _client_key(home: Path) -> tuple[Path, Path]:
    """A's key pair as a backend-services client: private JWK for A, public JWKS for B and C."""
    key = ECKey.generate_key("P-384", parameters={"use": "sig", "alg": "ES384"}, auto_kid=True)
    private, public = home / "a-client.jwk", home / "a-client.jwks"
    private.write_text(json.dumps(key.as_dict(private=True)))
    public.write_text(json.dumps({"keys": [key.as_dict(private=False)]}))
    private.chmod(0o600)
    return private, public


async def test_federated_everything_across_three_instances(three, tmp_path: Path) -> None:
    a, b, c = three["a"], three["b"], three["c"]
    a_pid = _patient_id(await a.post("", _record("M-7", "Rivera", ["4548-4"]), a.token()))
    await b.post("", _record("M-7", "Rivera", ["2345-7", "2093-3"]), b.token())
    await c.post("", _record("M-7", "Rivera", ["718-7"]), c.token())
    # someone else at B, who must never appear in A's answer
    await b.post("", _record("M-8", "Other", ["2345-7"]), b.token())

    private, public = _client_key(tmp_path)
    for remote in (b, c):
        remote.cli(
            "clients", "add", "--client-id", "bridge-a", "--scope", "system/*.rs",
            "--jwks-file", str(public),
        )  # fmt: skip
        a.cli(
            "intermediaries", "add", f"qhio-{remote.name}", "--kind", "fhir",
            "--base-url", remote.base, "--client-id", "bridge-a",
            "--token-url", f"{remote.origin}/auth/token", "--key-file", str(private),
            "--set", "check_groups=capability,operations",
        )  # fmt: skip
    listed = a.cli("intermediaries", "list")
    assert listed.count("active") >= 2, listed

    token = a.token("system/*.rs")
    async with httpx.AsyncClient(timeout=30) as http:
        url = f"{a.base}/Patient/{a_pid}/$everything"
        r = await http.get(url, headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200, r.text
        bundle = r.json()
        sources = {e["fullUrl"].rsplit("/", 2)[0] for e in bundle["entry"] if "fullUrl" in e}
        assert {a.base, b.base, c.base} <= sources, sources
        codes = {
            e["resource"]["code"]["coding"][0]["code"]
            for e in bundle["entry"]
            if e["resource"]["resourceType"] == "Observation"
        }
        assert codes == {"4548-4", "2345-7", "2093-3", "718-7"}  # nothing of M-8's
        provenance = [e for e in bundle["entry"] if e["resource"]["resourceType"] == "Provenance"]
        assert len(provenance) == 2
        remote_meta = {
            e["resource"]["meta"]["source"]
            for e in bundle["entry"]
            if not e.get("fullUrl", a.base).startswith(a.base)
            and e["resource"]["resourceType"] not in ("Provenance", "OperationOutcome")
        }
        assert remote_meta == {b.base, c.base}

        c.stop()
        started = time.monotonic()
        r = await http.get(url, headers={"Authorization": f"Bearer {token}"})
        elapsed = time.monotonic() - started
    assert r.status_code == 200, r.text
    bundle = r.json()
    sources = {e["fullUrl"].rsplit("/", 2)[0] for e in bundle["entry"] if "fullUrl" in e}
    assert a.base in sources and b.base in sources and c.base not in sources
    outcome = [e for e in bundle["entry"] if e["resource"]["resourceType"] == "OperationOutcome"]
    assert outcome and any("qhio-c" in (i.get("diagnostics") or "") for i in _issues(outcome))
    assert elapsed < DEADLINE + 1.0, elapsed


def _issues(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [i for e in entries for i in e["resource"]["issue"]]
