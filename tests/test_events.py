"""ADT event notifications end to end: an ADT message ingested over a real MLLP socket (or the
HL7 service) reaches a subscriber's rest-hook and a registered MLLP receiver, both real loopback
servers, exactly once; retries with backoff on an injected clock (no real waiting), dead letter
with its reason, panel filtering, the outbox committed with the resources, restart recovery."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import httpx
import orjson
import pytest
from sqlalchemy import func, select, update

from app.adapters.base import AdapterCapabilities, AdtEvent, DeliveryReceipt
from app.container import Container
from app.db import Database
from app.events import admin
from app.events.dispatcher import Dispatcher
from app.events.subscriptions import FILTER_URL, PAYLOAD_URL
from app.events.topic import TOPIC_URL
from app.hl7.mapping import resource_id
from app.hl7.mllp import MllpServer
from app.store.base import utc_now_ms
from app.store.tables import event_delivery, event_outbox, hl7_message, resource
from tests.conftest import FHIR_BASE, FHIR_JSON, bearer
from tests.event_receivers import FS_CR, VT, HttpReceiver, MllpReceiver, free_port
from tests.hl7_messages import adt, er7, msh, pid, pv1

SYSTEM = "urn:dxf-bridge:v2:assigning-authority:GOODHOSP"
PATIENT = resource_id("Patient", SYSTEM, "MRN1001")
OTHER = resource_id("Patient", SYSTEM, "MRN2002")


class Clock:
    def __init__(self) -> None:
        self.now = utc_now_ms()

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def hook() -> AsyncIterator[HttpReceiver]:
    receiver = await HttpReceiver().start()
    yield receiver
    await receiver.close()


@pytest.fixture
async def mllp_rx() -> AsyncIterator[MllpReceiver]:
    receiver = await MllpReceiver().start()
    yield receiver
    await receiver.close()


def make_dispatcher(container: Container, clock: Clock, **overrides: object) -> Dispatcher:
    settings = container.settings.model_copy(update=overrides) if overrides else container.settings
    return Dispatcher(container.db, settings, clock=clock, rng=lambda: 1.0)


@pytest.fixture
async def dispatcher(container: Container, clock: Clock) -> AsyncIterator[Dispatcher]:
    built = make_dispatcher(container, clock, events_max_attempts=4)
    yield built
    await built.stop()


def subscription(
    endpoint: str,
    *filters: str,
    content: str = "full-resource",
    status: str = "requested",
    headers: tuple[str, ...] = ("Authorization: Bearer subscriber-secret",),
) -> dict:
    return {
        "resourceType": "Subscription",
        "status": status,
        "reason": "care team ADT alerts",
        "criteria": TOPIC_URL,
        "_criteria": {
            "extension": [
                {"url": FILTER_URL, "valueString": f}
                for f in (filters or ("Encounter?patient:in=Group/panel-1",))
            ]
        },
        "channel": {
            "type": "rest-hook",
            "endpoint": endpoint,
            "payload": "application/fhir+json",
            "_payload": {"extension": [{"url": PAYLOAD_URL, "valueCode": content}]},
            "header": list(headers),
        },
    }


async def put_panel(client: httpx.AsyncClient, auth: dict, *members: str, gid="panel-1") -> None:
    group = {
        "resourceType": "Group",
        "id": gid,
        "type": "person",
        "actual": True,
        "member": [{"entity": {"reference": f"Patient/{m}"}} for m in members],
    }
    response = await client.put(f"/Group/{gid}", json=group, headers={**auth, **FHIR_JSON})
    assert response.status_code in (200, 201), response.text


async def subscribe(client: httpx.AsyncClient, auth: dict, body: dict) -> str:
    response = await client.post("/Subscription", json=body, headers={**auth, **FHIR_JSON})
    assert response.status_code == 201, response.text
    return response.json()["id"]


async def deliveries(db: Database) -> list:
    async with db.read() as conn:
        return list(await conn.execute(select(event_delivery).order_by(event_delivery.c.id)))


async def outbox_count(db: Database) -> int:
    async with db.read() as conn:
        return int(await conn.scalar(select(func.count()).select_from(event_outbox)))


def notifications(hook: HttpReceiver) -> list[dict]:
    """The event notifications the hook received (handshakes left out)."""
    out = []
    for request in hook.requests:
        body = orjson.loads(request.body)
        params = {p["name"]: p for p in body["entry"][0]["resource"]["parameter"]}
        if params["type"]["valueCode"] == "event-notification":
            out.append(body)
    return out


async def send_mllp(port: int, message: bytes) -> str:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(VT + message + FS_CR)
    await writer.drain()
    data = await asyncio.wait_for(reader.readuntil(FS_CR), 10)
    writer.close()
    await writer.wait_closed()
    return data[1:-2].decode()


# ---- the whole path -----------------------------------------------------------------------------


async def test_a01_over_mllp_reaches_rest_hook_and_mllp_receiver_exactly_once(
    container: Container,
    client: httpx.AsyncClient,
    auth: dict,
    dispatcher: Dispatcher,
    hook: HttpReceiver,
    mllp_rx: MllpReceiver,
    db: Database,
):
    await put_panel(client, auth, PATIENT)
    sid = await subscribe(client, auth, subscription(hook.url))
    await admin.add_receiver(db, "adt-network", "hl7v2-mllp", mllp_rx.url)

    # requested -> handshake -> active
    result = await dispatcher.run_once()
    assert result.activated == 1
    assert len(hook.requests) == 1
    handshake = orjson.loads(hook.requests[0].body)
    status = {p["name"]: p for p in handshake["entry"][0]["resource"]["parameter"]}
    assert handshake["type"] == "history" and status["type"]["valueCode"] == "handshake"
    stored = (await client.get(f"/Subscription/{sid}", headers=auth)).json()
    assert stored["status"] == "active"

    listener = MllpServer(container.hl7(), container.settings)
    await listener.start("127.0.0.1", 0)
    try:
        message = adt("A01", "ADM1", "20260301101500-0800")
        ack = await send_mllp(listener.port, message)
        assert "MSA|AA|ADM1" in ack
    finally:
        await listener.close()

    result = await dispatcher.run_once()
    assert (result.routed, result.delivered, result.dead) == (1, 2, 0)
    again = await dispatcher.run_once()
    assert again.attempted == 0 and again.routed == 0

    # the rest-hook: one notification, history Bundle, status Parameters first, then
    # Encounter and Patient as they were at the event
    sent = notifications(hook)
    assert len(sent) == 1
    bundle = sent[0]
    request = hook.requests[-1]
    assert request.headers["authorization"] == "Bearer subscriber-secret"
    assert request.headers["content-type"] == "application/fhir+json"
    assert request.headers["idempotency-key"] == bundle["id"]
    params = {p["name"]: p for p in bundle["entry"][0]["resource"]["parameter"]}
    assert params["subscription"]["valueReference"]["reference"] == (
        f"{FHIR_BASE}/Subscription/{sid}"
    )
    assert params["topic"]["valueCanonical"] == TOPIC_URL
    assert params["events-since-subscription-start"]["valueString"] == "1"
    event = {p["name"]: p for p in params["notification-event"]["part"]}
    assert event["event-number"]["valueString"] == "1"
    encounter_url = event["focus"]["valueReference"]["reference"]
    assert encounter_url.startswith(f"{FHIR_BASE}/Encounter/")
    assert event["additional-context"]["valueReference"]["reference"] == (
        f"{FHIR_BASE}/Patient/{PATIENT}"
    )
    kinds = [e["resource"]["resourceType"] for e in bundle["entry"]]
    assert kinds == ["Parameters", "Encounter", "Patient"]
    assert bundle["entry"][1]["fullUrl"] == encounter_url
    assert bundle["entry"][1]["resource"]["status"] == "in-progress"
    assert bundle["entry"][2]["resource"]["id"] == PATIENT

    # the MLLP receiver: the original message, byte for byte (MSH-10 unchanged)
    assert mllp_rx.messages == [message]

    rows = await deliveries(db)
    assert {(r.target_kind, r.status) for r in rows} == {
        ("subscription", "delivered"),
        ("receiver", "delivered"),
    }
    assert all(r.attempts == 1 and r.delay_ms is not None and r.delay_ms >= 0 for r in rows)


async def test_receivers_down_for_a_while_get_it_once_after_retries(
    container: Container,
    client: httpx.AsyncClient,
    auth: dict,
    dispatcher: Dispatcher,
    clock: Clock,
    db: Database,
):
    hook = HttpReceiver(port=free_port())  # not started: connection refused
    mllp_rx = MllpReceiver(port=free_port())
    await put_panel(client, auth, PATIENT)
    await subscribe(client, auth, subscription(hook.url, status="active"))
    await admin.add_receiver(db, "adt-network", "hl7v2-mllp", mllp_rx.url)
    result = await container.hl7().handle(adt("A01", "DOWN1", "20260301101500-0800"), "http")
    assert result.code == "AA"

    first = await dispatcher.run_once()
    assert (first.delivered, first.retried) == (0, 2)
    rows = await deliveries(db)
    assert all(r.status == "pending" and "unreachable" in (r.last_error or "") for r in rows)
    # backoff: base 2 s * 2^0 * jitter factor 1.0 -> due 2 s later, not before
    clock.advance(1.5)
    assert (await dispatcher.run_once()).attempted == 0
    clock.advance(1)
    second = await dispatcher.run_once()
    assert second.retried == 2
    rows = await deliveries(db)
    assert all(r.attempts == 2 for r in rows)

    await hook.start()
    await mllp_rx.start()
    try:
        clock.advance(3.9)  # the second backoff is 4 s
        assert (await dispatcher.run_once()).attempted == 0
        clock.advance(0.2)
        third = await dispatcher.run_once()
        assert third.delivered == 2
        assert (await dispatcher.run_once()).attempted == 0
        assert len(notifications(hook)) == 1
        assert len(mllp_rx.messages) == 1
        rows = await deliveries(db)
        assert all(r.status == "delivered" and r.attempts == 3 for r in rows)
        assert all(r.last_error is None for r in rows)
        assert all(r.delay_ms >= 6400 for r in rows)  # the clock moved 6.6 s
    finally:
        await hook.close()
        await mllp_rx.close()


async def test_dead_letter_after_the_limit_with_its_reason_then_retry(
    container: Container,
    client: httpx.AsyncClient,
    auth: dict,
    dispatcher: Dispatcher,
    hook: HttpReceiver,
    clock: Clock,
    db: Database,
):
    hook.status = 503
    await put_panel(client, auth, PATIENT)
    await subscribe(client, auth, subscription(hook.url, status="active"))
    await container.hl7().handle(adt("A01", "DEAD1", "20260301101500-0800"), "http")
    outcomes = []
    for _ in range(4):  # events_max_attempts=4
        result = await dispatcher.run_once()
        outcomes.append((result.retried, result.dead))
        clock.advance(3600)
    assert outcomes == [(1, 0), (1, 0), (1, 0), (0, 1)]
    assert (await dispatcher.run_once()).attempted == 0
    assert len(notifications(hook)) == 4
    keys = {r.headers["idempotency-key"] for r in hook.requests}
    assert len(keys) == 1  # the same key on every attempt
    [row] = await deliveries(db)
    assert row.status == "dead" and row.attempts == 4
    assert "HTTP 503" in row.last_error and "gave up after 4 attempts" in row.last_error
    assert "Nguyen" not in row.last_error.lower() and "MRN1001" not in row.last_error

    listed = await admin.list_deliveries(db, status="dead")
    assert [r.id for r in listed] == [row.id]
    hook.status = 200
    assert await admin.retry(db, all_dead=True) == 1
    clock.advance(1)
    assert (await dispatcher.run_once()).delivered == 1
    [row] = await deliveries(db)
    assert row.status == "delivered" and row.attempts == 1


async def test_a_refusal_that_resending_cannot_fix_is_dead_at_once(
    container: Container,
    client: httpx.AsyncClient,
    auth: dict,
    dispatcher: Dispatcher,
    hook: HttpReceiver,
    db: Database,
):
    hook.status = 404
    await put_panel(client, auth, PATIENT)
    await subscribe(client, auth, subscription(hook.url, status="active"))
    await container.hl7().handle(adt("A01", "GONE1", "20260301101500-0800"), "http")
    assert (await dispatcher.run_once()).dead == 1
    [row] = await deliveries(db)
    assert "HTTP 404" in row.last_error and "not retried" in row.last_error


async def test_panel_filtering(
    container: Container,
    client: httpx.AsyncClient,
    auth: dict,
    dispatcher: Dispatcher,
    hook: HttpReceiver,
    db: Database,
):
    await put_panel(client, auth, OTHER)  # our patient is not on the panel
    await subscribe(client, auth, subscription(hook.url, status="active"))
    await container.hl7().handle(adt("A01", "PNL1", "20260301101500-0800"), "http")
    result = await dispatcher.run_once()
    assert result.routed == 1 and result.attempted == 0
    assert await deliveries(db) == [] and hook.requests == []

    # an inactive membership does not count either
    group = {
        "resourceType": "Group",
        "id": "panel-1",
        "type": "person",
        "actual": True,
        "member": [{"entity": {"reference": f"Patient/{PATIENT}"}, "inactive": True}],
    }
    await client.put("/Group/panel-1", json=group, headers={**auth, **FHIR_JSON})
    await container.hl7().handle(adt("A08", "PNL2", "20260301111500-0800"), "http")
    assert (await dispatcher.run_once()).attempted == 0

    # once a member, the next event is delivered (and only that one)
    await put_panel(client, auth, OTHER, PATIENT)
    await container.hl7().handle(adt("A03", "PNL3", "20260302101500-0800"), "http")
    result = await dispatcher.run_once()
    assert result.delivered == 1
    [bundle] = notifications(hook)
    assert bundle["entry"][1]["resource"]["status"] == "finished"


async def test_event_kind_filter_and_direct_patient_filter(
    container: Container,
    client: httpx.AsyncClient,
    auth: dict,
    dispatcher: Dispatcher,
    hook: HttpReceiver,
):
    await subscribe(
        client,
        auth,
        subscription(
            hook.url, f"Encounter?patient=Patient/{PATIENT}&event=discharge", status="active"
        ),
    )
    await container.hl7().handle(adt("A01", "K1", "20260301101500-0800"), "http")
    await container.hl7().handle(adt("A03", "K2", "20260302101500-0800"), "http")
    result = await dispatcher.run_once()
    assert result.routed == 2 and result.delivered == 1
    [bundle] = notifications(hook)
    assert bundle["entry"][1]["resource"]["status"] == "finished"


# ---- the outbox ---------------------------------------------------------------------------------


async def test_outbox_row_commits_with_the_resources_and_not_without(
    container: Container, db: Database
):
    service = container.hl7()
    bad = er7(msh("ADT^A01", "BAD1"), "EVN|A01|20260301101500", pid(sex="2"), pv1())
    result = await service.handle(bad, "http")
    assert result.code == "AE"  # the mapping refused PID-8: nothing committed
    async with db.read() as conn:
        patients = await conn.scalar(
            select(func.count()).select_from(resource).where(resource.c.res_type == "Patient")
        )
    assert patients == 0 and await outbox_count(db) == 0

    ok = await service.handle(adt("A01", "OK1", "20260301101500-0800"), "http")
    assert ok.code == "AA"
    async with db.read() as conn:
        [event] = (await conn.execute(select(event_outbox))).all()
        journal = (
            await conn.execute(select(hl7_message).where(hl7_message.c.id == ok.journal_id))
        ).one()
    assert (event.trigger, event.kind, event.patient_id) == ("A01", "admit", PATIENT)
    assert event.journal_id == ok.journal_id and event.routed is False
    assert event.created_at == journal.processed_at  # the same transaction's instant

    # the same message again (a sender that missed the ACK), and a reprocess: no second event
    assert (await service.handle(adt("A01", "OK1", "20260301101500-0800"), "http")).duplicate
    assert (await service.reprocess(ok.journal_id)).code == "AA"
    assert await outbox_count(db) == 1


async def test_an_outbox_failure_rolls_the_message_back(
    container: Container, db: Database, monkeypatch: pytest.MonkeyPatch
):
    service = container.hl7()
    assert service.events is not None

    async def broken(*args, **kwargs):
        raise RuntimeError("outbox unavailable")

    monkeypatch.setattr(service.events, "record", broken)
    result = await service.handle(adt("A01", "OBX1", "20260301101500-0800"), "http")
    assert result.code == "AE"  # not acknowledged as stored
    async with db.read() as conn:
        patients = await conn.scalar(
            select(func.count()).select_from(resource).where(resource.c.res_type == "Patient")
        )
    assert patients == 0 and await outbox_count(db) == 0


async def test_non_events_make_no_outbox_rows(container: Container, db: Database):
    service = container.hl7()
    a28 = er7(msh("ADT^A28", "P1"), "EVN|A28|20260301101500", pid(), pv1())
    assert (await service.handle(a28, "http")).code == "AA"
    assert await outbox_count(db) == 0


async def test_crash_after_commit_is_delivered_after_restart(
    container: Container,
    client: httpx.AsyncClient,
    auth: dict,
    hook: HttpReceiver,
    clock: Clock,
    db: Database,
):
    """The event committed while no dispatcher ran (the process died right after the commit);
    a dispatcher that starts later delivers it. A delivery claimed by a process that then
    died is delivered by another once its lease ends, once."""
    await put_panel(client, auth, PATIENT)
    await subscribe(client, auth, subscription(hook.url, status="active"))
    await container.hl7().handle(adt("A01", "CR1", "20260301101500-0800"), "http")
    await container.hl7().handle(adt("A03", "CR2", "20260302101500-0800"), "http")

    crashed = make_dispatcher(container, clock)
    assert await crashed.route() == 2
    claimed = await crashed.claim(1)  # ... and the process dies mid-delivery
    assert len(claimed) == 1
    await crashed.stop()

    restarted = make_dispatcher(container, clock)
    try:
        result = await restarted.run_once()
        assert result.delivered == 1  # the unclaimed one; the other is leased
        clock.advance(restarted.lease.total_seconds() + 1)
        result = await restarted.run_once()
        assert result.delivered == 1
        assert (await restarted.run_once()).attempted == 0
    finally:
        await restarted.stop()
    sent = notifications(hook)
    assert len(sent) == 2 and len({b["id"] for b in sent}) == 2
    rows = await deliveries(db)
    assert sorted(r.attempts for r in rows) == [1, 2]


# ---- subscriptions through the API --------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"criteria": "Encounter?patient=Patient/x"}, "topic-based"),
        ({"_criteria": {"extension": []}}, "patient filter is required"),
        (
            {"_criteria": {"extension": [{"url": FILTER_URL, "valueString": "Encounter?x=1"}]}},
            "unknown filter",
        ),
        ({"channel": {"type": "email", "endpoint": "mailto:x@example.org"}}, "rest-hook"),
        (
            {
                "channel": {
                    "type": "rest-hook",
                    "endpoint": "https://example.org/hook",
                    "_payload": {"extension": [{"url": PAYLOAD_URL, "valueCode": "everything"}]},
                }
            },
            "payload content",
        ),
    ],
)
async def test_subscriptions_the_server_cannot_serve_are_refused(
    client: httpx.AsyncClient, auth: dict, change: dict, expected: str
):
    body = {**subscription("https://example.org/hook"), **change}
    response = await client.post("/Subscription", json=body, headers={**auth, **FHIR_JSON})
    assert response.status_code == 422
    assert expected in response.text


async def test_patient_tokens_cannot_subscribe(client: httpx.AsyncClient, make_token):
    token = make_token("patient/*.cruds", patient=PATIENT)
    response = await client.post(
        "/Subscription",
        json=subscription("https://example.org/hook"),
        headers={**bearer(token), **FHIR_JSON},
    )
    assert response.status_code == 403


async def test_failed_handshake_puts_the_subscription_in_error(
    client: httpx.AsyncClient, auth: dict, dispatcher: Dispatcher
):
    sid = await subscribe(client, auth, subscription(f"http://127.0.0.1:{free_port()}/hook"))
    await dispatcher.run_once()
    stored = (await client.get(f"/Subscription/{sid}", headers=auth)).json()
    assert stored["status"] == "error"
    assert "handshake failed" in stored["error"] and "unreachable" in stored["error"]


async def test_plain_http_endpoints_elsewhere_than_loopback_are_refused(
    client: httpx.AsyncClient, auth: dict, dispatcher: Dispatcher
):
    sid = await subscribe(client, auth, subscription("http://subscriber.example.org/hook"))
    await dispatcher.run_once()  # no request leaves the machine: refused before connecting
    stored = (await client.get(f"/Subscription/{sid}", headers=auth)).json()
    assert stored["status"] == "error" and "https required" in stored["error"]


@pytest.mark.parametrize("content", ["id-only", "empty"])
async def test_payload_content(
    container: Container,
    client: httpx.AsyncClient,
    auth: dict,
    dispatcher: Dispatcher,
    hook: HttpReceiver,
    content: str,
):
    await put_panel(client, auth, PATIENT)
    await subscribe(client, auth, subscription(hook.url, content=content, status="active"))
    await container.hl7().handle(adt("A01", "PC1", "20260301101500-0800"), "http")
    assert (await dispatcher.run_once()).delivered == 1
    [bundle] = notifications(hook)
    assert not any("resource" in e for e in bundle["entry"][1:])
    params = {p["name"]: p for p in bundle["entry"][0]["resource"]["parameter"]}
    parts = {p["name"] for p in params["notification-event"]["part"]}
    if content == "id-only":
        assert [e["fullUrl"].split("/")[-2] for e in bundle["entry"][1:]] == [
            "Encounter",
            "Patient",
        ]
        assert "focus" in parts
    else:
        assert len(bundle["entry"]) == 1 and "focus" not in parts


async def test_a_subscription_turned_off_gets_nothing_more(
    container: Container,
    client: httpx.AsyncClient,
    auth: dict,
    dispatcher: Dispatcher,
    hook: HttpReceiver,
    db: Database,
):
    hook.status = 503
    await put_panel(client, auth, PATIENT)
    sid = await subscribe(client, auth, subscription(hook.url, status="active"))
    await container.hl7().handle(adt("A01", "OFF1", "20260301101500-0800"), "http")
    assert (await dispatcher.run_once()).retried == 1
    body = (await client.get(f"/Subscription/{sid}", headers=auth)).json()
    body["status"] = "off"
    await client.put(f"/Subscription/{sid}", json=body, headers={**auth, **FHIR_JSON})
    dispatcher.clock.advance(60)  # type: ignore[attr-defined]
    assert (await dispatcher.run_once()).dead == 1
    [row] = await deliveries(db)
    assert "no longer active" in row.last_error


# ---- forwarding to intermediaries ---------------------------------------------------------------


async def test_da_vinci_message_to_a_fhir_message_receiver(
    container: Container, dispatcher: Dispatcher, hook: HttpReceiver, db: Database
):
    await admin.add_receiver(
        db, "hie", "fhir-message", hook.url, headers=["Authorization: Bearer hie-token"]
    )
    await container.hl7().handle(adt("A01", "DV1", "20260301101500-0800"), "http")
    a40 = er7(
        msh("ADT^A40", "DV2"),
        "EVN|A40|20260303101500",
        pid("MRN1001"),
        "MRG|MRN2002^^^GOODHOSP^MR",
    )
    await container.hl7().handle(a40, "http")
    result = await dispatcher.run_once()
    assert result.routed == 2 and result.delivered == 1  # no Da Vinci code for a merge
    [request] = hook.requests
    bundle = orjson.loads(request.body)
    assert request.headers["authorization"] == "Bearer hie-token"
    assert request.headers["idempotency-key"] == bundle["id"]
    header = bundle["entry"][0]["resource"]
    assert bundle["type"] == "message" and header["resourceType"] == "MessageHeader"
    assert header["eventCoding"]["code"] == "notification-admit"
    assert header["focus"][0]["reference"] == bundle["entry"][1]["fullUrl"]
    async with db.read() as conn:
        key = await conn.scalar(select(event_outbox.c.event_key).order_by(event_outbox.c.id))
    assert bundle["id"] == header["id"] == key


class FakeAdapter:
    """A registered intermediary that takes HL7v2 events (what the registry's adapters do)."""

    def __init__(self) -> None:
        self.events: list[AdtEvent] = []

    @property
    def name(self) -> str:
        return "qhio-a"

    @property
    def endpoint(self) -> str:
        return "mllp://qhio-a.example.org:2575"

    def capabilities(self) -> AdapterCapabilities:
        return AdapterCapabilities(event_channels=frozenset({"hl7v2-mllp"}))

    async def deliver(self, event: AdtEvent) -> DeliveryReceipt:
        self.events.append(event)
        return DeliveryReceipt(True, "AA")


class Directory:
    def __init__(self, *adapters: object) -> None:
        self.adapters = list(adapters)

    async def active(self) -> list:
        return self.adapters


async def test_adapters_that_take_events_get_each_once(
    container: Container, clock: Clock, db: Database
):
    adapter = FakeAdapter()
    dispatcher = Dispatcher(
        container.db, container.settings, directory=Directory(adapter), clock=clock
    )
    try:
        ok = await container.hl7().handle(adt("A01", "AD1", "20260301101500-0800"), "http")
        assert (await dispatcher.run_once()).delivered == 1
        assert (await dispatcher.run_once()).attempted == 0
    finally:
        await dispatcher.stop()
    [event] = adapter.events
    assert (event.trigger, event.kind) == ("A01", "admit")
    assert event.patient["id"] == PATIENT and event.encounter is not None
    async with db.read() as conn:
        raw = await conn.scalar(select(hl7_message.c.raw).where(hl7_message.c.id == ok.journal_id))
    assert event.message == raw and event.sender.endswith("|GOODHOSP")


# ---- the background task ------------------------------------------------------------------------


async def test_the_running_dispatcher_is_woken_by_the_commit(
    container: Container,
    client: httpx.AsyncClient,
    auth: dict,
    hook: HttpReceiver,
    make_token,
    db: Database,
):
    """POST /hl7v2 with the dispatcher running in the background (poll interval one hour):
    the notification arrives without any run_once, woken by the commit."""
    container.settings = container.settings.model_copy(update={"events_poll_seconds": 3600})
    await put_panel(client, auth, PATIENT)
    await subscribe(client, auth, subscription(hook.url, status="active"))
    dispatcher = container.events()
    dispatcher.start()
    try:
        await asyncio.sleep(0)
        response = await client.post(
            f"{FHIR_BASE.removesuffix('/fhir')}/hl7v2",
            content=adt("A01", "BG1", "20260301101500-0800"),
            headers=bearer(make_token("system/*.cruds")),
        )
        assert "MSA|AA|BG1" in response.text
        await asyncio.wait_for(_until(lambda: len(hook.requests) >= 1, hook), 10)
        await asyncio.wait_for(_until_delivered(db), 10)
    finally:
        await dispatcher.stop()
    assert len(notifications(hook)) == 1


async def _until(condition, hook: HttpReceiver) -> None:
    while not condition():
        hook.changed.clear()
        await hook.changed.wait()


async def _until_delivered(db: Database) -> None:
    while True:
        rows = await deliveries(db)
        if rows and all(r.status == "delivered" for r in rows):
            return
        await asyncio.sleep(0.01)


async def test_stats_report_the_delay(
    container: Container,
    client: httpx.AsyncClient,
    auth: dict,
    dispatcher: Dispatcher,
    hook: HttpReceiver,
    clock: Clock,
    db: Database,
):
    await put_panel(client, auth, PATIENT)
    await subscribe(client, auth, subscription(hook.url, status="active"))
    await container.hl7().handle(adt("A01", "ST1", "20260301101500-0800"), "http")
    async with db.write() as conn:  # the message arrived 250 ms before the dispatcher's now
        await conn.execute(
            update(event_outbox).values(received_at=clock.now - timedelta(milliseconds=250))
        )
    await dispatcher.run_once()
    stats = await admin.delay_stats(db)
    assert stats.counts == {"delivered": 1}
    assert stats.median_ms == stats.p99_ms == stats.max_ms == 250


async def test_two_dispatchers_share_the_work_without_doubling_it(
    container: Container,
    client: httpx.AsyncClient,
    auth: dict,
    hook: HttpReceiver,
    clock: Clock,
    db: Database,
):
    """Two dispatchers on one database (two server workers, or a server and a listener): each
    event is routed once and each delivery attempted once (PostgreSQL: SKIP LOCKED)."""
    await put_panel(client, auth, PATIENT)
    await subscribe(client, auth, subscription(hook.url, status="active"))
    for n in range(12):
        message = adt("A08", f"TWO{n}", f"2026030110{n:02d}00-0800")
        assert (await container.hl7().handle(message, "http")).code == "AA"
    first, second = make_dispatcher(container, clock), make_dispatcher(container, clock)
    try:
        results = await asyncio.gather(first.run_once(), second.run_once())
        for _ in range(3):  # whatever one skipped because the other held it
            results += await asyncio.gather(first.run_once(), second.run_once())
    finally:
        await first.stop()
        await second.stop()
    assert sum(r.routed for r in results) == 12
    assert sum(r.delivered for r in results) == 12
    assert sum(r.attempted for r in results) == 12
    sent = notifications(hook)
    assert len(sent) == 12 and len({b["id"] for b in sent}) == 12
    numbers = sorted(
        int(p["valueString"])
        for b in sent
        for p in b["entry"][0]["resource"]["parameter"]
        if p["name"] == "events-since-subscription-start"
    )
    assert numbers == list(range(1, 13))
