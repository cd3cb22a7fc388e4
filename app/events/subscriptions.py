"""Topic-based Subscriptions in R4 (Subscriptions R5 Backport IG STU 1.1,
http://hl7.org/fhir/uv/subscriptions-backport/; profiles backport-subscription,
backport-subscription-notification-r4, backport-subscription-status-r4; "Notifications" and
"Channels: rest-hook" pages):

- `Subscription.criteria` is the topic canonical (app/events/topic.py);
- `criteria` may carry `backport-filter-criteria` extensions (valueString, e.g.
  `Encounter?patient:in=Group/panel-7&event=admit,discharge`): several are ANDed, `&` ANDs
  parameters, `,` ORs values. A patient filter (`patient=Patient/x` or `patient:in=Group/y`) is
  required: no subscription receives every patient's events;
- `channel.type` rest-hook, `channel.endpoint` an absolute http(s) URL, `channel.payload` the
  MIME type (application/fhir+json or application/json), `channel.header` "Name: value" lines
  sent with every notification, and `channel._payload` the `backport-payload-content` extension:
  `empty`, `id-only` or `full-resource` (default `id-only`);
- a notification is a `history` Bundle whose first entry is a Parameters with the subscription
  status (`subscription`, `topic`, `status`, `type`, `events-since-subscription-start`,
  `notification-event` with `event-number`, `timestamp`, `focus`, `additional-context`), then
  the Encounter and Patient (as full resources for full-resource, fullUrl and request only for
  id-only, nothing for empty); a handshake is the same Bundle with type `handshake` and no event.

`check_subscription` is the write-time rule (a Subscription the server cannot serve is refused
with 422 instead of being stored and silently ignored). Nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from app.errors import Issue, Unprocessable
from app.events.topic import KINDS, TOPIC_URL
from app.store.base import format_instant

__all__ = [
    "FILTER_URL",
    "PAYLOAD_URL",
    "SubscriptionSpec",
    "check_subscription",
    "group_members",
    "notification_bundle",
    "parse_subscription",
]

_BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
FILTER_URL = _BACKPORT + "backport-filter-criteria"
PAYLOAD_URL = _BACKPORT + "backport-payload-content"
_CONTENTS = ("empty", "id-only", "full-resource")
_MIME = ("application/fhir+json", "application/json")


@dataclass(frozen=True, slots=True)
class SubscriptionSpec:
    id: str
    status: str
    endpoint: str
    headers: tuple[tuple[str, str], ...]
    content: str  # empty | id-only | full-resource
    mime: str
    kinds: frozenset[str] | None  # None: every kind
    patients: frozenset[str]  # Patient ids named directly
    groups: tuple[str, ...]  # Group ids (panels): their Patient members
    end: str | None  # Subscription.end, as written

    def wants(self, kind: str) -> bool:
        return self.kinds is None or kind in self.kinds


def _problem(text: str, where: str) -> Issue:
    return Issue(code="value", diagnostics=f"{where}: {text}", expression=(where,))


def _reference_id(value: str, rtype: str, fhir_base: str) -> str | None:
    """`Type/id` or `<our base>/Type/id` -> id; anything else -> None."""
    value = value.strip()
    for prefix in (f"{fhir_base.rstrip('/')}/{rtype}/", f"{rtype}/"):
        if value.startswith(prefix):
            rest = value[len(prefix) :]
            if rest and "/" not in rest and len(rest) <= 64:
                return rest
    return None


def _filters(
    criteria: list[str], fhir_base: str, issues: list[Issue]
) -> tuple[frozenset[str] | None, frozenset[str], tuple[str, ...]]:
    kinds: set[str] | None = None
    patients: set[str] = set()
    groups: list[str] = []
    patient_filters = 0
    for n, text in enumerate(criteria):
        where = f"Subscription.criteria.extension[{n}]"
        query = text.split("?", 1)[1] if "?" in text else text
        resource = text.split("?", 1)[0] if "?" in text else "Encounter"
        if resource != "Encounter":
            issues.append(_problem("filters apply to Encounter (the topic's focus)", where))
            continue
        for name, value in parse_qsl(query, keep_blank_values=True):
            values = [v for v in value.split(",") if v]
            if name == "event":
                wanted = {v.strip() for v in values}
                unknown = sorted(wanted - set(KINDS))
                if unknown or not wanted:
                    issues.append(_problem(f"event must be among {', '.join(KINDS)}", where))
                kinds = wanted if kinds is None else kinds & wanted
            elif name in ("patient", "patient:in"):
                rtype = "Group" if name == "patient:in" else "Patient"
                ids = [_reference_id(v, rtype, fhir_base) for v in values]
                if not ids or any(i is None for i in ids):
                    issues.append(
                        _problem(f"{name} takes {rtype}/id references (of this server)", where)
                    )
                    continue
                patient_filters += 1
                if rtype == "Group":
                    groups.extend(i for i in ids if i)
                else:
                    patients.update(i for i in ids if i)
            else:
                issues.append(
                    _problem(f"unknown filter {name[:40]!r} (patient, patient:in, event)", where)
                )
    if patient_filters == 0:
        issues.append(
            _problem(
                "a patient filter is required, e.g. Encounter?patient:in=Group/<panel id>",
                "Subscription.criteria",
            )
        )
    return (frozenset(kinds) if kinds is not None else None), frozenset(patients), tuple(groups)


def parse_subscription(body: dict[str, Any], fhir_base: str) -> SubscriptionSpec:
    """The subscription as the dispatcher needs it; Unprocessable (422) naming every problem."""
    issues: list[Issue] = []
    if body.get("criteria") != TOPIC_URL:
        issues.append(
            _problem(
                f"only topic-based subscriptions to {TOPIC_URL} are served (R4 query criteria "
                "are not supported)",
                "Subscription.criteria",
            )
        )
    extensions = (body.get("_criteria") or {}).get("extension") or []
    criteria = [e.get("valueString", "") for e in extensions if e.get("url") == FILTER_URL]
    kinds, patients, groups = _filters(criteria, fhir_base, issues)
    channel = body.get("channel") or {}
    if channel.get("type") != "rest-hook":
        issues.append(_problem("only the rest-hook channel is served", "Subscription.channel.type"))
    endpoint = channel.get("endpoint") or ""
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        issues.append(
            _problem("an absolute http(s) URL is required", "Subscription.channel.endpoint")
        )
    mime = channel.get("payload") or "application/fhir+json"
    if mime not in _MIME:
        issues.append(
            _problem(f"payload must be one of {', '.join(_MIME)}", "Subscription.channel.payload")
        )
    content = "id-only"
    for ext in (channel.get("_payload") or {}).get("extension") or []:
        if ext.get("url") == PAYLOAD_URL:
            content = ext.get("valueCode") or ""
    if content not in _CONTENTS:
        issues.append(
            _problem(
                f"payload content must be one of {', '.join(_CONTENTS)}",
                "Subscription.channel.payload",
            )
        )
    headers: list[tuple[str, str]] = []
    for n, line in enumerate(channel.get("header") or []):
        name, sep, value = str(line).partition(":")
        if not sep or not name.strip() or any(c in name for c in " \r\n\t") or "\n" in value:
            issues.append(
                _problem('a header is "Name: value"', f"Subscription.channel.header[{n}]")
            )
            continue
        headers.append((name.strip(), value.strip()))
    if issues:
        raise Unprocessable(
            f"the Subscription cannot be served ({len(issues)} problem(s))", issues=issues
        )
    return SubscriptionSpec(
        id=str(body.get("id") or ""),
        status=str(body.get("status") or ""),
        endpoint=endpoint,
        headers=tuple(headers),
        content=content,
        mime=mime,
        kinds=kinds,
        patients=patients,
        groups=groups,
        end=body.get("end"),
    )


def check_subscription(body: dict[str, Any], fhir_base: str = "") -> None:
    """Write-time rule for Subscription: refuse (422) what the dispatcher could not serve. An
    `off` or `error` subscription is stored as is (it is not delivered to)."""
    if body.get("status") in ("off", "error"):
        return
    parse_subscription(body, fhir_base)


def group_members(group: dict[str, Any], fhir_base: str) -> frozenset[str]:
    """The Patient ids of a Group's active members (`member.inactive` not true)."""
    out: set[str] = set()
    for member in group.get("member") or []:
        if member.get("inactive") is True:
            continue
        ref = (member.get("entity") or {}).get("reference") or ""
        pid = _reference_id(ref, "Patient", fhir_base)
        if pid:
            out.add(pid)
    return frozenset(out)


def notification_bundle(
    spec: SubscriptionSpec,
    *,
    fhir_base: str,
    bundle_id: str,
    kind: str = "event-notification",
    status: str = "active",
    event_number: int = 0,
    timestamp: datetime,
    focus: tuple[str, str] | None = None,
    context: list[tuple[str, str]] | None = None,
    resources: dict[tuple[str, str], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A notification (or, with kind="handshake", a handshake) Bundle for one subscription.

    `focus` and `context` are (type, id); `resources` holds their bodies for full-resource."""
    base = fhir_base.rstrip("/")
    sub_url = f"{base}/Subscription/{spec.id}"
    parameters: list[dict[str, Any]] = [
        {"name": "subscription", "valueReference": {"reference": sub_url}},
        {"name": "topic", "valueCanonical": TOPIC_URL},
        {"name": "status", "valueCode": status},
        {"name": "type", "valueCode": kind},
        {"name": "events-since-subscription-start", "valueString": str(event_number)},
    ]
    entries: list[dict[str, Any]] = []
    if kind == "event-notification":
        parts: list[dict[str, Any]] = [
            {"name": "event-number", "valueString": str(event_number)},
            {"name": "timestamp", "valueInstant": format_instant(timestamp)},
        ]
        shown = [focus, *(context or [])] if focus else []
        if spec.content != "empty" and focus is not None:
            parts.append(
                {"name": "focus", "valueReference": {"reference": f"{base}/{focus[0]}/{focus[1]}"}}
            )
            for rtype, rid in context or []:
                parts.append(
                    {
                        "name": "additional-context",
                        "valueReference": {"reference": f"{base}/{rtype}/{rid}"},
                    }
                )
            for item in shown:
                assert item is not None
                rtype, rid = item
                entry: dict[str, Any] = {"fullUrl": f"{base}/{rtype}/{rid}"}
                body = (resources or {}).get((rtype, rid))
                if spec.content == "full-resource" and body is not None:
                    entry["resource"] = body
                entry["request"] = {"method": "GET", "url": f"{rtype}/{rid}"}
                entry["response"] = {"status": "200"}
                entries.append(entry)
        parameters.append({"name": "notification-event", "part": parts})
    status_entry = {
        "fullUrl": f"urn:uuid:{bundle_id}",
        "resource": {
            "resourceType": "Parameters",
            "id": bundle_id,
            "meta": {"profile": [_BACKPORT + "backport-subscription-status-r4"]},
            "parameter": parameters,
        },
        "request": {"method": "GET", "url": f"{sub_url}/$status"},
        "response": {"status": "200"},
    }
    return {
        "resourceType": "Bundle",
        "id": bundle_id,
        "meta": {"profile": [_BACKPORT + "backport-subscription-notification-r4"]},
        "type": "history",
        "timestamp": format_instant(timestamp),
        "entry": [status_entry, *entries],
    }
