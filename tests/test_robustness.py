"""Nothing a client sends produces a 500: malformed input gets a 4xx OperationOutcome."""

from __future__ import annotations

import pytest

from tests.conftest import FHIR_JSON
from tests.factories import patient


def _tx(*entries):
    return {"resourceType": "Bundle", "type": "transaction", "entry": list(entries)}


BAD_REQUESTS = [
    ("POST", "/Patient", b'{"resourceType":"Patient","name":[{"family":"a\\u0000b"}]}'),
    ("POST", "/Patient", b'{"resourceType":"Patient","meta":[1,2]}'),
    ("POST", "/Patient", b'{"resourceType":"Patient","id":5}'),
    ("POST", "/Patient", b'{"resourceType":5}'),
    ("POST", "/Patient", b"[" * 5000 + b"]" * 5000),
    ("POST", "/Patient", b'{"resourceType":"Patient","identifier":{"value":1}}'),
    ("POST", "/Patient", '{"resourceType":"Patient","name":[{"family":"\xff"}]}'.encode("latin-1")),
    ("PUT", "/Patient/" + "a" * 65, b'{"resourceType":"Patient"}'),
    ("PUT", "/Patient/x", b'{"resourceType":"Patient","id":["x"]}'),
    ("PUT", "/Patient?identifier=", b'{"resourceType":"Patient"}'),
    ("PUT", "/Patient?_id=a&_id=b", b'{"resourceType":"Patient"}'),
    ("GET", "/Patient/x/_history/99999999999999999999", None),
    ("GET", "/Patient/x/_history/-1", None),
    ("GET", "/_history?_cursor=999999999999999999999999", None),
    ("GET", "/_history?_count=abc", None),
    ("GET", "/_history?_count=1&_count=2", None),
    ("GET", "/Patient?_id=" + "z" * 500, None),
    ("GET", "/Patient?identifier:missing=true", None),
    ("DELETE", "/Patient/%00", None),
    ("POST", "", b'{"resourceType":"Bundle","type":"transaction","entry":[null]}'),
    ("POST", "", b'{"resourceType":"Bundle","type":"transaction","entry":{"a":1}}'),
    (
        "POST",
        "",
        b'{"resourceType":"Bundle","type":"transaction","entry":[{"request":{"method":"PUT","url":"Patient/1","ifMatch":7},"resource":{"resourceType":"Patient","id":"1"}}]}',
    ),
    (
        "POST",
        "",
        b'{"resourceType":"Bundle","type":"batch","entry":[{"request":{"method":"POST","url":"Patient","ifNoneExist":{"x":1}},"resource":{"resourceType":"Patient"}}]}',
    ),
    (
        "POST",
        "",
        b'{"resourceType":"Bundle","type":"transaction","entry":[{"request":{"method":"PATCH","url":"Patient/1"}}]}',
    ),
    (
        "POST",
        "",
        b'{"resourceType":"Bundle","type":"transaction","entry":[{"request":{"method":"GET","url":"Nope/1"}}]}',
    ),
    (
        "POST",
        "",
        b'{"resourceType":"Bundle","type":"transaction","entry":[{"fullUrl":"urn:uuid:a","request":{"method":"POST","url":"Patient"},"resource":{"resourceType":"Patient","link":[{"other":{"reference":"urn:uuid:zzz"},"type":"seealso"}]}}]}',
    ),
]


@pytest.mark.parametrize(("method", "path", "body"), BAD_REQUESTS)
async def test_odd_input_never_gets_a_500(client, auth, method, path, body):
    r = await client.request(method, path, content=body, headers={**auth, **FHIR_JSON})
    assert r.status_code < 500, (r.status_code, r.text[:300])
    if r.status_code >= 400:
        assert r.json()["resourceType"] == "OperationOutcome"


async def test_unicode_round_trips(client, auth):
    body = patient("u1", name=[{"family": "Nguyễn", "given": ["Zoë", "山田"]}])
    r = await client.post("/Patient", json=body, headers={**auth, **FHIR_JSON})
    assert r.status_code == 201
    got = (await client.get(f"/Patient/{r.json()['id']}", headers=auth)).json()
    assert got["name"][0]["given"] == ["Zoë", "山田"]


async def test_unexpected_error_is_500_outcome_without_phi_in_logs(
    client, auth, monkeypatch, caplog
):
    from app.store import repository

    async def broken(*_args, **_kwargs):
        raise RuntimeError("Jane Doe, MRN 12345")  # what an exception message might quote

    monkeypatch.setattr(repository.FhirRepository, "read", broken)
    with caplog.at_level("INFO", logger="dxf"):
        r = await client.get("/Patient/abc", headers=auth)
    assert r.status_code == 500
    body = r.json()
    assert body["issue"][0]["code"] == "exception"
    assert r.headers["x-request-id"] in body["issue"][0]["diagnostics"]
    assert "Jane Doe" not in r.text
    logged = " ".join(str(rec.__dict__) for rec in caplog.records)
    assert "Jane Doe" not in logged and "12345" not in logged
    assert any(getattr(rec, "error", None) == "RuntimeError" for rec in caplog.records)


async def test_database_outage_is_503(client, auth, monkeypatch):
    from sqlalchemy.exc import OperationalError

    from app.store import repository

    async def down(*_args, **_kwargs):
        raise OperationalError("SELECT 1", {}, ConnectionRefusedError("refused"))

    monkeypatch.setattr(repository.FhirRepository, "read", down)
    r = await client.get("/Patient/abc", headers=auth)
    assert r.status_code == 503
    assert r.json()["issue"][0]["code"] == "transient"


async def test_point_read_pool_outage_is_503(client, auth, monkeypatch):
    import asyncpg

    from app.db import Database

    async def down(*_args, **_kwargs):
        raise asyncpg.exceptions.CannotConnectNowError("the database system is starting up")

    monkeypatch.setattr(Database, "fetch_one", down)
    r = await client.get("/Patient/abc", headers=auth)
    assert r.status_code == 503
