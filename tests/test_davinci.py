"""The Da Vinci notification message Bundle: shape, codes, idempotency key, validation."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from app.adapters.base import AdapterError, AdtEvent, FailureKind
from app.events.davinci import DAVINCI_EVENT_SYSTEM, build_notification_bundle, event_code
from app.fhir.models import validate_resource

PATIENT = {"resourceType": "Patient", "id": "p1", "name": [{"family": "Nguyen"}]}
ENCOUNTER = {
    "resourceType": "Encounter",
    "id": "e1",
    "status": "in-progress",
    "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
    "subject": {"reference": "Patient/p1"},
    "serviceProvider": {"display": "Good Hospital"},
}
KEY = "5b0f6c1e-8e2a-5d8e-9a53-3f1f6f1c2a10"


def event(kind: str = "admit", trigger: str = "A01", **kw) -> AdtEvent:
    values = {
        "id": KEY,
        "trigger": trigger,
        "kind": kind,
        "occurred_at": datetime(2026, 3, 1, 18, 15, tzinfo=UTC),
        "patient": PATIENT,
        "encounter": ENCOUNTER,
        "sender": "EPIC|GOODHOSP",
    }
    values.update(kw)
    return AdtEvent(**values)


@pytest.mark.parametrize(
    ("kind", "code"),
    [
        ("admit", "notification-admit"),
        ("registration", "notification-admit"),
        ("transfer", "notification-transfer"),
        ("discharge", "notification-discharge"),
    ],
)
def test_message_bundle_shape(kind: str, code: str):
    bundle = build_notification_bundle(
        event(kind),
        fhir_base="https://bridge.example.org/fhir",
        destination="https://hie.example.org/fhir/$process-message",
        timestamp=datetime(2026, 3, 1, 18, 16, tzinfo=UTC),
    )
    validate_resource(bundle)  # the R4 models accept it
    assert bundle["type"] == "message" and bundle["timestamp"] == "2026-03-01T18:16:00.000Z"
    assert bundle["id"] == KEY and bundle["identifier"]["value"] == f"urn:uuid:{KEY}"
    header, enc, pat = (e["resource"] for e in bundle["entry"])
    assert header["resourceType"] == "MessageHeader" and header["id"] == KEY
    assert header["eventCoding"] == {
        "system": DAVINCI_EVENT_SYSTEM,
        "code": code,
        "display": header["eventCoding"]["display"],
    }
    assert header["focus"] == [{"reference": "https://bridge.example.org/fhir/Encounter/e1"}]
    assert bundle["entry"][1]["fullUrl"] == "https://bridge.example.org/fhir/Encounter/e1"
    assert bundle["entry"][2]["fullUrl"] == "https://bridge.example.org/fhir/Patient/p1"
    assert header["source"]["endpoint"] == "https://bridge.example.org/fhir"
    assert header["destination"][0]["endpoint"].endswith("$process-message")
    assert header["sender"] == {"display": "GOODHOSP"}
    assert header["responsible"] == {"display": "Good Hospital"}
    assert enc is ENCOUNTER and pat is PATIENT


def test_same_event_same_key_any_time():
    first = build_notification_bundle(event(), fhir_base="https://b/fhir")
    again = build_notification_bundle(event(), fhir_base="https://b/fhir")
    assert first["id"] == again["id"] == first["entry"][0]["resource"]["id"]


def test_a_key_that_is_not_a_uuid_is_made_one_stably():
    a = build_notification_bundle(event(id="journal-17"), fhir_base="https://b/fhir")
    b = build_notification_bundle(event(id="journal-17"), fhir_base="https://b/fhir")
    validate_resource(a)
    assert a["id"] == b["id"] and a["identifier"]["value"] == f"urn:uuid:{a['id']}"


@pytest.mark.parametrize("kind", ["merge", "update", "cancel"])
def test_events_without_a_davinci_code_are_unsupported(kind: str):
    assert event_code(kind) is None
    with pytest.raises(AdapterError) as caught:
        build_notification_bundle(event(kind), fhir_base="https://b/fhir")
    assert caught.value.kind is FailureKind.UNSUPPORTED and not caught.value.retryable


def test_needs_an_encounter():
    with pytest.raises(AdapterError):
        build_notification_bundle(event(encounter=None), fhir_base="https://b/fhir")
