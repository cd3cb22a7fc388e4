"""Server-assigned ids are UUIDv7 (RFC 9562 §5.7): time-ordered, unique, well-formed."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from app import ids
from app.ids import time_ordered_uuid
from tests.conftest import FHIR_JSON
from tests.factories import patient


def _millis(value: uuid.UUID) -> int:
    return value.int >> 80


def test_layout_is_version_7_with_the_rfc_variant_and_the_current_time():
    before = time.time_ns() // 1_000_000
    value = time_ordered_uuid()
    after = time.time_ns() // 1_000_000
    assert value.version == 7
    assert value.variant == uuid.RFC_4122
    assert before <= _millis(value) <= after + 1
    assert uuid.UUID(str(value)) == value  # the canonical text form round-trips


def test_ids_increase_strictly_and_never_repeat_within_a_millisecond():
    made = [time_ordered_uuid() for _ in range(20_000)]
    assert made == sorted(made)
    assert len(set(made)) == len(made)
    assert len({_millis(v) for v in made}) < len(made)  # several ids shared a millisecond
    assert [str(v) for v in made] == sorted(str(v) for v in made)  # as text too


def test_threads_get_distinct_ids():
    out: list[list[uuid.UUID]] = [[] for _ in range(4)]

    def make(bucket: list[uuid.UUID]) -> None:
        bucket.extend(time_ordered_uuid() for _ in range(5_000))

    workers = [threading.Thread(target=make, args=(b,)) for b in out]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    every = [v for bucket in out for v in bucket]
    assert len(set(every)) == len(every)
    assert all(bucket == sorted(bucket) for bucket in out)


def test_a_clock_that_steps_back_does_not_break_the_order(monkeypatch: pytest.MonkeyPatch):
    now = [1_800_000_000_000_000_000]
    monkeypatch.setattr(ids.time, "time_ns", lambda: now[0])
    first = time_ordered_uuid()
    now[0] -= 5_000_000_000  # five seconds back
    second = time_ordered_uuid()
    assert second > first
    assert _millis(second) == _millis(first)


def test_a_spent_counter_borrows_the_next_millisecond(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(ids.time, "time_ns", lambda: 1_800_000_000_000_000_000)
    made = [time_ordered_uuid() for _ in range(5_000)]  # more than 4,096 in one millisecond
    assert made == sorted(made) and len(set(made)) == len(made)
    assert _millis(made[-1]) > 1_800_000_000_000


async def test_created_resources_get_time_ordered_ids(client, auth):
    created = []
    for n in range(5):
        r = await client.post("/Patient", json=patient(f"70{n}"), headers={**auth, **FHIR_JSON})
        assert r.status_code == 201, r.text
        created.append(uuid.UUID(r.json()["id"]))
    assert all(v.version == 7 for v in created)
    assert created == sorted(created)


async def test_transaction_entries_get_time_ordered_ids(client, auth):
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": f"urn:uuid:{uuid.uuid4()}",
                "resource": patient(f"71{n}"),
                "request": {"method": "POST", "url": "Patient"},
            }
            for n in range(3)
        ],
    }
    r = await client.post("/", json=bundle, headers={**auth, **FHIR_JSON})
    assert r.status_code == 200, r.text
    made = [uuid.UUID(e["response"]["location"].split("/")[1]) for e in r.json()["entry"]]
    assert all(v.version == 7 for v in made)
    assert made == sorted(made)
