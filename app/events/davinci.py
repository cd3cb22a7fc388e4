"""Da Vinci Unsolicited Notifications: the FHIR message Bundle for an ADT event (DXF-23).

Implements the notification message of the Da Vinci Unsolicited Notifications IG (STU 1.1,
http://hl7.org/fhir/us/davinci-alerts/; "Framework" and "Admit/Transfer/Discharge Use Case"
pages; FHIR R4 messaging, https://hl7.org/fhir/R4/messaging.html):

- a Bundle of type `message` (profile notifications-bundle) with `identifier` and `timestamp`;
- first entry a MessageHeader (profile notifications-messageheader; the admit and discharge
  profiles where the IG defines them) whose `eventCoding` is from
  http://hl7.org/fhir/us/davinci-alerts/CodeSystem/notification-event: `notification-admit`
  (A01; A04 registration, as the ADT/CMS rules count an ED registration as an admission),
  `notification-transfer` (A02, A06, A07), `notification-discharge` (A03); `focus` the
  Encounter; `source.endpoint` our FHIR base; `destination.endpoint` the receiver's address;
- then the Encounter (the focus) and the Patient, as full resources with their absolute URLs as
  `fullUrl`, so the Encounter's `subject` resolves inside the Bundle.

The idempotency key of the event (as a UUID, see `event_uuid`) is the Bundle's `id`, its
`identifier` (`urn:uuid:<key>`) and the MessageHeader's `id`: a receiver that sees the same key
twice has seen the same event.
Events without a Da Vinci code (update, merge, cancellations) raise AdapterError `unsupported`;
callers can ask `event_code(kind)` first.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from app import __version__
from app.adapters.base import AdapterError, AdtEvent, FailureKind

__all__ = [
    "DAVINCI_EVENT_SYSTEM",
    "build_notification_bundle",
    "event_code",
    "event_uuid",
]

DAVINCI_EVENT_SYSTEM = "http://hl7.org/fhir/us/davinci-alerts/CodeSystem/notification-event"
_SD = "http://hl7.org/fhir/us/davinci-alerts/StructureDefinition/"

# event kind -> (code, display, MessageHeader profile)
_CODES: dict[str, tuple[str, str, str]] = {
    "admit": ("notification-admit", "Admit Notification", "admit-notification-messageheader"),
    "registration": (
        "notification-admit",
        "Admit Notification",
        "admit-notification-messageheader",
    ),
    "transfer": (
        "notification-transfer",
        "Transfer Notification",
        "notifications-messageheader",
    ),
    "discharge": (
        "notification-discharge",
        "Discharge Notification",
        "discharge-notification-messageheader",
    ),
}


def event_code(kind: str) -> str | None:
    """The notification-event code for an event kind, None when the IG has none for it."""
    entry = _CODES.get(kind)
    return entry[0] if entry else None


def event_uuid(key: str) -> str:
    """The event's key as a UUID: itself when it is one, else a name-based UUID of it (so a
    `urn:uuid:` and a FHIR id can always be made from it, and stay stable)."""
    try:
        return str(uuid.UUID(key))
    except ValueError:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"urn:dxf-bridge:event:{key}"))


def _instant(value: datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def build_notification_bundle(
    event: AdtEvent,
    *,
    fhir_base: str,
    destination: str | None = None,
    destination_name: str | None = None,
    source_name: str = "dxf-bridge",
    timestamp: datetime | None = None,
) -> dict[str, Any]:
    """The Da Vinci notification message Bundle for `event` (see the module docstring).

    `fhir_base` is our FHIR base URL (MessageHeader.source.endpoint, and the base of the
    entries' fullUrls); `destination` the receiver's endpoint address."""
    entry = _CODES.get(event.kind)
    if entry is None:
        raise AdapterError(
            FailureKind.UNSUPPORTED,
            f"no Da Vinci notification event for a {event.kind!r} event",
            endpoint=destination or "",
            retryable=False,
        )
    if event.encounter is None or not event.encounter.get("id"):
        raise AdapterError(
            FailureKind.UNSUPPORTED,
            "a Da Vinci notification needs the event's Encounter",
            endpoint=destination or "",
            retryable=False,
        )
    code, display, profile = entry
    key = event_uuid(event.id)
    base = fhir_base.rstrip("/")
    encounter = event.encounter
    patient = event.patient
    encounter_url = f"{base}/Encounter/{encounter['id']}"
    patient_url = f"{base}/Patient/{patient['id']}"
    header: dict[str, Any] = {
        "resourceType": "MessageHeader",
        "id": key,
        "meta": {"profile": [_SD + profile]},
        "eventCoding": {"system": DAVINCI_EVENT_SYSTEM, "code": code, "display": display},
    }
    if destination:
        target: dict[str, Any] = {"endpoint": destination}
        if destination_name:
            target["name"] = destination_name
        header["destination"] = [target]
    facility = event.sender.partition("|")[2] or event.sender.partition("|")[0]
    if facility:
        header["sender"] = {"display": facility}  # the sending facility, MSH-4 (DXF-21)
    provider = encounter.get("serviceProvider")
    if isinstance(provider, dict) and (provider.get("reference") or provider.get("display")):
        header["responsible"] = provider
    header["source"] = {
        "name": source_name,
        "software": "dxf-bridge",
        "version": __version__,
        "endpoint": base,
    }
    header["focus"] = [{"reference": encounter_url}]
    return {
        "resourceType": "Bundle",
        "id": key,
        "meta": {"profile": [_SD + "notifications-bundle"]},
        "identifier": {"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{key}"},
        "type": "message",
        "timestamp": _instant(timestamp or datetime.now(UTC)),
        "entry": [
            {"fullUrl": f"urn:uuid:{key}", "resource": header},
            {"fullUrl": encounter_url, "resource": encounter},
            {"fullUrl": patient_url, "resource": patient},
        ],
    }
