"""Audit: every FHIR access and every denial is recorded before the answer goes out (no record,
no answer), and the log is searchable as AuditEvent with system/AuditEvent.rs."""

from __future__ import annotations

import orjson
import pytest
from sqlalchemy import func, select

from app.audit.recorder import AuditEntry, AuditRecorder
from app.fhir.models import validate_resource
from app.store.tables import audit_event
from tests.conftest import FHIR_JSON, bearer
from tests.factories import observation, patient


async def _rows(db):
    async with db.read() as conn:
        return (await conn.execute(select(audit_event).order_by(audit_event.c.seq))).all()


@pytest.fixture
async def pid(client, auth):
    return (
        await client.post("/Patient", json=patient("mrn-a"), headers={**auth, **FHIR_JSON})
    ).json()["id"]


async def test_reads_searches_and_writes_are_audited(client, db, make_token, pid, auth):
    token = bearer(make_token("patient/*.rs", patient=pid, subject="dr-who", client_id="ehr"))
    await client.get(f"/Patient/{pid}", headers={**token, "X-Purpose-Of-Use": "TREAT"})
    await client.get(f"/Observation?subject=Patient/{pid}&code=8867-4", headers=token)
    await client.post("/Observation", json=observation(pid), headers={**auth, **FHIR_JSON})
    rows = await _rows(db)
    create, read, search, write = rows[-4:]
    assert create.interaction == "create" and create.action == "C"
    assert (read.interaction, read.action, read.outcome, read.status) == ("read", "R", "0", 200)
    assert read.client_id == "ehr" and read.subject == "dr-who" and read.patient == pid
    assert read.purpose == "TREAT"
    assert search.interaction == "search-type" and search.search_params == "code,subject"
    assert search.patient == pid
    assert write.action == "C" and write.res_type == "Observation" and write.status == 201
    # no search values (possible PHI) are kept
    assert not any("8867-4" in str(tuple(r)) for r in rows)


async def test_denials_are_audited(client, db, make_token, pid):
    await client.get(f"/Patient/{pid}")
    await client.get(f"/Patient/{pid}", headers=bearer("garbage.token.here"))
    await client.get("/Observation", headers=bearer(make_token("patient/Patient.rs", patient=pid)))
    no_token, bad_token, out_of_scope = (await _rows(db))[-3:]
    assert (no_token.status, no_token.outcome, no_token.client_id) == (401, "4", None)
    assert no_token.patient == pid  # the patient the caller tried to reach
    assert bad_token.status == 401
    assert (out_of_scope.status, out_of_scope.outcome) == (403, "4")


async def test_no_audit_record_no_answer(client, container, pid, auth, monkeypatch):
    async def broken(entry, body=None):
        raise RuntimeError("audit table unwritable")

    monkeypatch.setattr(container.audit, "record", broken)
    r = await client.get(f"/Patient/{pid}", headers=auth)
    assert r.status_code == 503
    assert "Testperson" not in r.text and pid not in r.text
    r = await client.get("/Patient", headers=auth)
    assert r.status_code == 503 and "Testperson" not in r.text


async def test_audit_events_are_searchable_with_system_scope(client, make_token, pid, auth):
    await client.get(f"/Patient/{pid}", headers=auth)
    await client.get("/Patient/does-not-exist", headers=auth)
    reader = bearer(make_token("system/AuditEvent.rs"))
    r = await client.get(f"/AuditEvent?patient=Patient/{pid}", headers=reader)
    assert r.status_code == 200, r.text
    events = [e["resource"] for e in r.json()["entry"]]
    assert events and all(
        any(ent.get("what", {}).get("reference") == f"Patient/{pid}" for ent in ev["entity"])
        for ev in events
    )
    for event in events:
        validate_resource(event)
    failed = (await client.get("/AuditEvent?outcome=4", headers=reader)).json()["entry"]
    assert any(e["resource"]["outcomeDesc"] == "HTTP 404" for e in failed)
    one = events[0]
    r = await client.get(f"/AuditEvent/{one['id']}", headers=reader)
    assert r.status_code == 200 and r.json()["id"] == one["id"]
    page = (await client.get("/AuditEvent?_count=1", headers=reader)).json()
    assert len(page["entry"]) == 1
    nxt = next(link["url"] for link in page["link"] if link["relation"] == "next")
    second = (await client.get(nxt, headers=reader)).json()["entry"][0]["resource"]["id"]
    assert second != page["entry"][0]["resource"]["id"]
    r = await client.get("/AuditEvent?date=ge2000-01-01&action=R", headers=reader)
    assert r.status_code == 200 and all(e["resource"]["action"] == "R" for e in r.json()["entry"])
    assert (await client.get("/AuditEvent?name=x", headers=reader)).status_code == 400


async def test_audit_events_are_not_for_patient_tokens_and_never_writable(client, make_token, pid):
    patient_token = bearer(make_token("patient/*.cruds", patient=pid))
    assert (await client.get("/AuditEvent", headers=patient_token)).status_code == 403
    assert (
        await client.get("/AuditEvent", headers=bearer(make_token("system/Patient.rs")))
    ).status_code == 403
    full = bearer(make_token("system/*.cruds"))
    forged = {
        "resourceType": "AuditEvent",
        "type": {"code": "rest"},
        "recorded": "2020-01-01T00:00:00Z",
        "agent": [{"requestor": True}],
        "source": {"observer": {"display": "x"}},
    }
    r = await client.post("/AuditEvent", json=forged, headers={**full, **FHIR_JSON})
    assert r.status_code == 403


async def test_token_decisions_are_audited(client, db):
    await client.post("http://testserver/auth/token", data={"grant_type": "client_credentials"})
    row = (await _rows(db))[-1]
    assert row.interaction == "token" and row.status == 400 and row.outcome == "4"
    async with db.read() as conn:
        assert await conn.scalar(select(func.count()).select_from(audit_event)) >= 1


async def test_a_search_over_several_patients_is_audited_for_each(client, db, auth, pid):
    other = (
        await client.post("/Patient", json=patient("mrn-b"), headers={**auth, **FHIR_JSON})
    ).json()["id"]
    for who in (pid, other):
        await client.post("/Observation", json=observation(who), headers={**auth, **FHIR_JSON})
    r = await client.get("/Observation", headers=auth)
    request_id = r.headers["x-request-id"]
    rows = [row for row in await _rows(db) if row.request_id == request_id]
    assert sorted(row.patient for row in rows) == sorted([pid, other])
    assert {row.interaction for row in rows} == {"search-type"}
    # a read of a non-Patient resource names the patient whose record it is
    obs_id = r.json()["entry"][0]["resource"]["id"]
    owner = r.json()["entry"][0]["resource"]["subject"]["reference"].split("/")[1]
    read = await client.get(f"/Observation/{obs_id}", headers=auth)
    [row] = [row for row in await _rows(db) if row.request_id == read.headers["x-request-id"]]
    assert row.patient == owner and row.res_id == obs_id


def _of(rows, response):
    return [row for row in rows if row.request_id == response.headers["x-request-id"]]


async def test_a_create_or_update_is_audited_once_in_its_own_transaction(client, db, auth, pid):
    created = await client.post(
        "/Observation",
        json=observation(pid),
        headers={**auth, **FHIR_JSON, "Prefer": "return=minimal"},
    )
    assert created.status_code == 201 and not created.content
    obs_id = created.headers["location"].split("/Observation/")[1].split("/")[0]
    [row] = _of(await _rows(db), created)
    # the resource's id and its patient are recorded even though the answer carried neither
    assert (row.interaction, row.status, row.res_type, row.res_id) == (
        "create",
        201,
        "Observation",
        obs_id,
    )
    assert row.patient == pid and row.action == "C"
    body = {**observation(pid, value=80.0), "id": obs_id}
    updated = await client.put(f"/Observation/{obs_id}", json=body, headers={**auth, **FHIR_JSON})
    [row] = _of(await _rows(db), updated)
    assert (row.interaction, row.status, row.res_id, row.patient) == ("update", 200, obs_id, pid)
    made = await client.put(
        f"/Patient/{pid}-new",
        json={**patient("mrn-c"), "id": f"{pid}-new"},
        headers={**auth, **FHIR_JSON},
    )
    [row] = _of(await _rows(db), made)
    assert (made.status_code, row.status, row.patient) == (201, 201, f"{pid}-new")


async def test_a_write_whose_audit_row_fails_is_not_committed(client, db, auth, pid, monkeypatch):
    from app.audit.recorder import AuditRecorder

    def broken(self, entry, patients):
        raise RuntimeError("audit table unwritable")

    before = (await client.get("/Observation?_summary=count", headers=auth)).json()["total"]
    monkeypatch.setattr(AuditRecorder, "rows", broken)
    r = await client.post("/Observation", json=observation(pid), headers={**auth, **FHIR_JSON})
    assert r.status_code >= 500 and "Location" not in r.headers
    monkeypatch.undo()
    after = (await client.get("/Observation?_summary=count", headers=auth)).json()["total"]
    assert after == before


async def test_a_conditional_create_that_writes_nothing_is_audited_by_the_router(
    client, db, auth, pid
):
    headers = {**auth, **FHIR_JSON, "If-None-Exist": "identifier=mrn-a"}
    r = await client.post("/Patient", json=patient("mrn-a"), headers=headers)
    assert r.status_code == 200 and r.json()["id"] == pid
    [row] = _of(await _rows(db), r)
    assert (row.interaction, row.status, row.patient) == ("create", 200, pid)


@pytest.mark.parametrize("patients", [1, 3])
async def test_audit_rows_that_do_not_wait_for_the_flush_are_still_committed(db, patients):
    """DXF_AUDIT_WAIT_FOR_FLUSH=false: on PostgreSQL the rows go through sessions whose commits
    skip the WAL-flush wait (one round trip for a row, not BEGIN, SET LOCAL, INSERT and
    COMMIT); they are committed all the same, and the point pool keeps waiting for the flush."""
    recorder = AuditRecorder(db, wait_for_flush=False)
    entry = AuditEntry(interaction="search-type", status=200, client_id="ehr", res_type="Patient")
    answer = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [
            {"resource": {"resourceType": "Patient", "id": f"p{n}"}} for n in range(patients)
        ],
    }
    ids = await recorder.record(entry, orjson.dumps(answer))
    stored = await _rows(db)
    assert len(ids) == len(stored) == patients
    assert sorted(r.patient for r in stored) == [f"p{n}" for n in range(patients)]
    assert all(r.client_id == "ehr" and r.status == 200 for r in stored)
    if not db.is_sqlite:
        unflushed = await db._pool(flushed=False)
        assert await unflushed.fetchval("SHOW synchronous_commit") == "off"
        assert await (await db._pool()).fetchval("SHOW synchronous_commit") == "on"
