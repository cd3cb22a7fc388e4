"""The ADT encounter topic: which HL7v2 trigger events become notification events, of which kind,
and the topic's canonical URL and filters (Subscriptions R5 Backport IG STU 1.1, "Topic-Based
Subscription Components": a topic is named by a canonical URL; R4 has no SubscriptionTopic
resource, so the definition below is documented in docs/events.md and declared in the
CapabilityStatement, and subscriptions name it in `Subscription.criteria`).

| trigger | kind |
|---|---|
| A01 | admit |
| A04 | registration |
| A05 | preadmit |
| A02 A06 A07 | transfer (A06/A07: change of patient class) |
| A03 | discharge |
| A08 | update |
| A11 A12 A13 | cancel (admit, transfer, discharge) |
| A40 | merge |

A28 and A31 carry no visit and make no event. The topic's focus is the Encounter (the Patient for
a merge). Filters (`backport-filter-criteria`, e.g. `Encounter?patient:in=Group/panel-7`):
`patient` (a Patient reference, or `:in` a Group whose members are Patients), `event` (kinds).
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "KINDS",
    "TOPIC_URL",
    "kind_of",
    "topic_definition",
]

TOPIC_URL = "https://dxf-bridge.org/fhir/SubscriptionTopic/encounter-adt"

_TRIGGERS: dict[str, str] = {
    "A01": "admit",
    "A04": "registration",
    "A05": "preadmit",
    "A02": "transfer",
    "A06": "transfer",
    "A07": "transfer",
    "A03": "discharge",
    "A08": "update",
    "A11": "cancel",
    "A12": "cancel",
    "A13": "cancel",
    "A40": "merge",
}

KINDS: tuple[str, ...] = (
    "admit",
    "registration",
    "preadmit",
    "transfer",
    "discharge",
    "update",
    "cancel",
    "merge",
)


def kind_of(trigger: str) -> str | None:
    """The event kind of an ADT trigger event, None when it makes no notification event."""
    return _TRIGGERS.get(trigger.upper())


def topic_definition() -> dict[str, Any]:
    """The topic as an R4B/R5-shaped SubscriptionTopic (for documentation and discovery)."""
    return {
        "resourceType": "SubscriptionTopic",
        "id": "encounter-adt",
        "url": TOPIC_URL,
        "title": "Encounter ADT events from the HL7v2 feed",
        "status": "active",
        "description": (
            "An HL7v2 ADT event was processed: admit (A01), registration (A04), preadmit "
            "(A05), transfer (A02, A06, A07), discharge (A03), update (A08), cancel (A11, A12, "
            "A13), merge (A40). The focus is the Encounter (the surviving Patient for a merge)."
        ),
        "eventTrigger": [
            {
                "description": f"ADT^{trigger}: {kind}",
                "event": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/v2-0003",
                            "code": trigger,
                        }
                    ]
                },
                "resource": "Patient" if kind == "merge" else "Encounter",
            }
            for trigger, kind in _TRIGGERS.items()
        ],
        "canFilterBy": [
            {
                "description": "the Patient, or :in a Group of Patients (a panel)",
                "resource": "Encounter",
                "filterParameter": "patient",
                "modifier": ["=", "in"],
            },
            {
                "description": f"the event kind: {', '.join(KINDS)}",
                "resource": "Encounter",
                "filterParameter": "event",
            },
        ],
        "notificationShape": [
            {"resource": "Encounter", "include": ["Encounter:patient"]},
        ],
    }
