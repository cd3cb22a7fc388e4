"""Three real dxf-bridge servers on loopback; B and C act as intermediaries (QHIOs) for A.

A registers B and C with `dxf-bridge intermediaries add` (SMART backend services: A's key is a
client of B's and C's authorization servers), the registry's check makes them active, and a
federated `Patient/$everything` on A merges all three records. With C stopped, the answer still
comes, within the federation deadline, with an OperationOutcome issue about C.

Events: an A01 sent to A over MLLP reaches a care team's rest-hook (a Subscription filtered by
a patient panel Group) and an MLLP receiver registered as an ADT-network intermediary exactly
once each, also when both receivers were down when the event happened.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from joserfc.jwk import ECKey

from app.hl7.mapping import resource_id
from tests.event_receivers import HttpReceiver, MllpReceiver, free_port
from tests.hl7_messages import adt
from tests.live import LiveServer

MRN = "urn:oid:2.16.840.1.113883.3.dxf.mrn"
DEADLINE = 2.0
MLLP_PORT = free_port()
A_ENV = {
    "DXF_FEDERATION_DEADLINE_SECONDS": str(DEADLINE),
    "DXF_MLLP_ENABLED": "true",
    "DXF_MLLP_PORT": str(MLLP_PORT),
    "DXF_EVENTS_BACKOFF_BASE_SECONDS": "0.2",  # retries come quickly once receivers are back
    "DXF_EVENTS_BACKOFF_MAX_SECONDS": "0.5",
    "DXF_EVENTS_POLL_SECONDS": "0.2",
}


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
            extra_env=A_ENV if name == "a" else {},
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


# ---- events ------------------------------------------------------------------------------------

TOPIC = "https://dxf-bridge.org/fhir/SubscriptionTopic/encounter-adt"
BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"


def _deliveries(server: LiveServer) -> list[tuple[str, str, int]]:
    with sqlite3.connect(server.home / "dxf.db") as db:
        return db.execute(
            "SELECT target_kind, status, attempts FROM event_delivery ORDER BY id"
        ).fetchall()


async def _until(condition, what: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)  # polling a condition, with a deadline


async def _send(port: int, message: bytes) -> str:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"\x0b" + message + b"\x1c\r")
    await writer.drain()
    ack = await asyncio.wait_for(reader.readuntil(b"\x1c\r"), 30)
    writer.close()
    await writer.wait_closed()
    return ack.decode()


async def test_an_a01_reaches_a_rest_hook_and_an_mllp_network_once_each(three) -> None:
    a = three["a"]
    hook = await HttpReceiver().start()
    network = await MllpReceiver().start()
    try:
        a.cli(
            "intermediaries", "add", "adt-network", "--kind", "manifest-medex",
            "--base-url", network.url,
        )  # fmt: skip
        assert "active" in a.cli("intermediaries", "list")
        token = a.token()
        patient = resource_id(
            "Patient", "urn:dxf-bridge:v2:assigning-authority:GOODHOSP", "MRN1001"
        )
        panel = {
            "resourceType": "Group",
            "type": "person",
            "actual": True,
            "member": [{"entity": {"reference": f"Patient/{patient}"}}],
        }
        group = (await a.post("/Group", panel, token))["id"]
        subscription = {
            "resourceType": "Subscription",
            "status": "requested",
            "reason": "care team ADT alerts",
            "criteria": TOPIC,
            "_criteria": {
                "extension": [
                    {
                        "url": BACKPORT + "backport-filter-criteria",
                        "valueString": f"Encounter?patient:in=Group/{group}",
                    }
                ]
            },
            "channel": {
                "type": "rest-hook",
                "endpoint": hook.url,
                "payload": "application/fhir+json",
                "_payload": {
                    "extension": [
                        {"url": BACKPORT + "backport-payload-content", "valueCode": "full-resource"}
                    ]
                },
            },
        }
        await a.post("/Subscription", subscription, token)
        await _until(lambda: len(hook.requests) == 1, "the subscription's handshake")

        # both receivers go down; the A01 arrives meanwhile
        await hook.close()
        await network.close()
        ack = await _send(MLLP_PORT, adt("A01", "ADM-77", "20260301101500-0800"))
        assert "MSA|AA|ADM-77" in ack
        await _until(
            lambda: (
                len(_deliveries(a)) == 2 and all(attempts >= 1 for _, _, attempts in _deliveries(a))
            ),
            "a failed attempt at each delivery",
        )
        assert {status for _, status, _ in _deliveries(a)} == {"pending"}

        # back up, on the same ports: each gets the event once
        await hook.start()
        await network.start()
        await _until(
            lambda: {status for _, status, _ in _deliveries(a)} == {"delivered"},
            "both deliveries",
        )
        notes = [r for r in hook.requests[1:] if b"event-notification" in r.body]
        assert len(notes) == 1
        assert notes[0].headers["idempotency-key"]
        assert [m for m in network.messages if b"ADT^A01" in m] == [
            adt("A01", "ADM-77", "20260301101500-0800")
        ]
    finally:
        await hook.close()
        await network.close()
