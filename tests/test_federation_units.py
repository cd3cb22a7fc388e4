"""The parts of federated reads without HTTP: the circuit breaker, the fan-out, admission of
remote resources, duplicates, and the person a search describes."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from app.adapters.base import AdapterError, FailureKind, PersonQuery
from app.adapters.deadline import remaining
from app.auth.policy import AccessPolicy, ScopeGrant
from app.federation.admission import RecordFilter, admit
from app.federation.breaker import BreakerState, CircuitBreaker
from app.federation.directory import NoIntermediaries, StaticDirectory
from app.federation.federator import MAX_PATIENTS_PER_SOURCE, Federator
from app.federation.merge import fingerprint
from app.federation.person import person_from_search
from tests.federation_kit import (
    MRN,
    Clock,
    FakeAdapter,
    located,
    remote_observation,
    remote_patient,
)

QA = "https://qhio-a.example.test/fhir"
QB = "https://qhio-b.example.test/fhir"
PERSON = PersonQuery(identifiers=((MRN, "M1"),))
EVERYONE = AccessPolicy((ScopeGrant("system", "*", frozenset("rs")),))


# ---- circuit breaker ----------------------------------------------------------------------------


def test_breaker_opens_after_consecutive_failures_only():
    clock = Clock()
    b = CircuitBreaker(failures=3, cooldown=10, clock=clock)
    for _ in range(2):
        assert b.allow()
        b.failure()
    b.success()  # a success in between starts the count again
    for _ in range(2):
        b.failure()
    assert b.state is BreakerState.CLOSED and b.allow()
    b.failure()
    assert b.state is BreakerState.OPEN and not b.allow()
    assert b.retry_in() == 10


def test_breaker_half_opens_after_the_cooldown_with_one_trial():
    clock = Clock()
    b = CircuitBreaker(failures=1, cooldown=10, clock=clock)
    b.failure()
    clock.advance(9.9)
    assert not b.allow()
    clock.advance(0.1)
    assert b.state is BreakerState.HALF_OPEN
    assert b.allow()  # the trial
    assert not b.allow()  # only one at a time
    b.failure()  # the trial failed: open for another cool-down
    assert b.state is BreakerState.OPEN and not b.allow()
    clock.advance(10)
    assert b.allow()
    b.success()
    assert b.state is BreakerState.CLOSED and b.allow() and b.allow()


def test_breaker_release_gives_the_trial_back():
    clock = Clock()
    b = CircuitBreaker(failures=1, cooldown=1, clock=clock)
    b.failure()
    clock.advance(1)
    assert b.allow() and not b.allow()
    b.release()
    assert b.state is BreakerState.HALF_OPEN and b.allow()
    with pytest.raises(ValueError):
        CircuitBreaker(failures=0, cooldown=1)


# ---- fan-out -----------------------------------------------------------------------------------


async def test_calls_run_in_parallel_under_one_deadline():
    started: list[float] = []
    release = asyncio.Event()
    loop = asyncio.get_running_loop()

    class Waits(FakeAdapter):
        async def locate(self, person):
            started.append(loop.time())
            if len(started) == 3:
                release.set()
            await release.wait()  # returns only once all three have started
            self.seen_deadline = remaining()
            return await super().locate(person)

    adapters = [Waits(f"Q{i}", f"https://q{i}.example.test/fhir") for i in range(3)]
    for i, a in enumerate(adapters):
        a.patients = [located(f"r{i}")]
    fed = Federator(StaticDirectory(adapters), deadline=5)
    results = await fed.record(PERSON, types=("Observation",))
    assert [r.ok for r in results] == [True, True, True]
    assert all(0 < a.seen_deadline <= 5 for a in adapters)  # the deadline reached the adapter
    assert [a.fetched[0][1] for a in adapters] == [("Observation",)] * 3


async def test_a_timed_out_call_is_cancelled_and_reported():
    hanging = FakeAdapter("Slow", QB, hang=True)
    fed = Federator(StaticDirectory([hanging]), deadline=0.05)
    [result] = await fed.record(PERSON)
    assert result.error is not None and result.error.kind is FailureKind.TIMEOUT
    assert result.error.endpoint == QB and result.records == []
    await asyncio.wait_for(hanging.cancelled.wait(), 5)
    assert fed.breaker(QB).consecutive_failures == 1


async def test_cancelling_the_request_cancels_the_remote_calls():
    hanging = FakeAdapter("Slow", QB, hang=True)
    fed = Federator(StaticDirectory([hanging]), deadline=60)
    task = asyncio.create_task(fed.record(PERSON))
    for _ in range(1000):  # let the fan-out start the call
        if hanging.located:
            break
        await asyncio.sleep(0)
    assert hanging.located
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.wait_for(hanging.cancelled.wait(), 5)


async def test_only_confident_matches_are_fetched():
    a = FakeAdapter(
        "A",
        QA,
        patients=[located(f"p{i}", score=0.95) for i in range(MAX_PATIENTS_PER_SOURCE + 1)]
        + [located("weak", score=0.5)],
    )
    fed = Federator(StaticDirectory([a]), min_match_score=0.9)
    [result] = await fed.record(PERSON)
    assert len(a.fetched) == MAX_PATIENTS_PER_SOURCE and "weak" not in {f[0] for f in a.fetched}
    assert result.set_aside == 2


async def test_unsupported_does_not_count_against_the_breaker():
    a = FakeAdapter("A", QA, error=AdapterError(FailureKind.UNSUPPORTED, "no lookup"))
    fed = Federator(StaticDirectory([a]), breaker_failures=1)
    for _ in range(3):
        [result] = await fed.locate(PERSON)
        assert result.error is not None and result.error.kind is FailureKind.UNSUPPORTED
    assert fed.breaker(QA).state is BreakerState.CLOSED and len(a.located) == 3


async def test_no_intermediaries_no_calls():
    assert await Federator(NoIntermediaries()).record(PERSON) == []


# ---- admission ---------------------------------------------------------------------------------


def test_binaries_only_as_attachments_of_the_record():
    doc = {
        "resourceType": "DocumentReference",
        "id": "d1",
        "status": "current",
        "subject": {"reference": "Patient/p1"},
        "content": [{"attachment": {"url": f"{QA}/Binary/b1"}}],
    }
    got = admit(
        [
            doc,
            {"resourceType": "Binary", "id": "b1", "contentType": "text/plain"},
            {"resourceType": "Binary", "id": "b2", "contentType": "text/plain"},
        ],
        base=QA,
        located={"p1"},
        policy=EVERYONE,
    )
    assert [r["id"] for r in got.resources] == ["d1", "b1"] and got.other_patient == 1


def test_since_filter_uses_last_updated():
    old = remote_observation("old", "Patient/p1", meta={"lastUpdated": "2020-01-01T00:00:00Z"})
    new = remote_observation("new", "Patient/p1", meta={"lastUpdated": "2025-01-01T00:00:00Z"})
    since = datetime(2024, 1, 1, tzinfo=UTC)
    got = admit(
        [old, new], base=QA, located={"p1"}, policy=EVERYONE, filters=RecordFilter(since=since)
    )
    assert [r["id"] for r in got.resources] == ["new"] and got.filtered == 1


def test_fingerprint_ignores_ids_meta_text_and_whose_server_the_patient_is_on():
    a = remote_observation("x", "Patient/p1", meta={"versionId": "1"}, text={"status": "empty"})
    b = remote_observation("y", f"{QB}/Patient/p9")
    assert fingerprint(a, {"p1"}, QA) == fingerprint(b, {"p9"}, QB)
    assert fingerprint(a, {"p1"}, QA) != fingerprint(
        remote_observation("x", "Patient/p1", code="718-7"), {"p1"}, QA
    )
    assert fingerprint(remote_patient("a"), set(), QA) != fingerprint(
        remote_patient("a", mrn="M2"), set(), QA
    )


# ---- the person a search describes ---------------------------------------------------------------


def test_person_from_search_parameters():
    person = person_from_search(
        [
            ("identifier", f"{MRN}|M1,plain"),
            ("name:exact", "Testperson"),
            ("given", "Alex"),
            ("birthdate", "eq1980-02-29"),
            ("gender", "unknown"),
            ("phone", "555-0101"),
            ("_count", "10"),
        ]
    )
    assert person is not None
    assert person.identifiers == ((MRN, "M1"), ("", "plain"))
    assert (person.family, person.given, person.birth_date) == (
        "Testperson",
        ("Alex",),
        "1980-02-29",
    )
    assert person.telecom == ("555-0101",)
    assert person_from_search([("birthdate", "ge1980")]) is None
    assert person_from_search([("gender", "male"), ("active", "true")]) is None


async def test_event_only_channels_are_not_asked():
    class MllpOnly(FakeAdapter):
        def capabilities(self):
            from app.adapters.base import AdapterCapabilities

            return AdapterCapabilities(
                identifier_search=False, patient_match=False, everything=False
            )

    class LookupOnly(FakeAdapter):
        def capabilities(self):
            from app.adapters.base import AdapterCapabilities

            return AdapterCapabilities(everything=False)

    mllp, lookup = MllpOnly("feed", QA), LookupOnly("lookup", QB, patients=[located("p")])
    fed = Federator(StaticDirectory([mllp, lookup]))
    assert await fed.record(PERSON) == [] and mllp.located == [] and lookup.located == []
    [found] = await fed.locate(PERSON)
    assert found.endpoint == QB and [p.id for p in found.patients] == ["p"]


async def test_this_server_is_never_asked():
    me = FakeAdapter("myself", QA + "/", patients=[located("p")])
    fed = Federator(StaticDirectory([me]), own_base=QA)
    assert await fed.record(PERSON) == [] and me.located == []


def test_absurdly_nested_resources_are_malformed():
    deep: dict = {"valueString": "x"}
    for _ in range(500):
        deep = {"extension": [deep]}
    bad = remote_observation("deep", "Patient/p1", **deep)
    got = admit(
        [bad, remote_observation("ok", "Patient/p1")], base=QA, located={"p1"}, policy=EVERYONE
    )
    assert [r["id"] for r in got.resources] == ["ok"] and got.malformed == 1


def test_an_answer_in_an_unexpected_shape_is_one_issue():
    from app.adapters.base import RemoteRecord
    from app.federation.federator import SourceResult
    from app.federation.merge import record_entries

    broken = SourceResult("B", QB, patients=[located("p")], records=[RemoteRecord(QB, None)])  # type: ignore[arg-type]
    fine = SourceResult(
        "A",
        QA,
        patients=[located("p")],
        records=[RemoteRecord(QA, [remote_patient("p"), remote_observation("o", "Patient/p")])],
    )
    seen: set[str] = set()
    part = record_entries(
        [broken, fine], policy=EVERYONE, filters=RecordFilter(), seen=seen, now=datetime.now(UTC)
    )
    assert [i.code for i in part.issues] == ["structure"] and "TypeError" in part.issues[
        0
    ].diagnostics
    assert {
        e["fullUrl"] for e in part.entries if "search" in e and e["search"]["mode"] == "match"
    } == {
        f"{QA}/Patient/p",
        f"{QA}/Observation/o",
    }
    assert len(seen) == 2
