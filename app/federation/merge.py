"""Remote resources made into Bundle entries next to local ones
(https://hl7.org/fhir/R4/bundle.html#references, https://hl7.org/fhir/R4/provenance.html).

- **Identity.** A remote resource keeps its own id; its entry's `fullUrl` is its absolute URL
  at the intermediary (`{endpoint}/{type}/{id}`), so it can never collide with a local entry
  (whose fullUrl is under our base) and its relative references resolve, by the Bundle rules,
  to the other entries from the same intermediary. `meta.source` is set to the endpoint.
- **Provenance.** One Provenance per intermediary that contributed entries: `target` lists
  those entries' fullUrls, `recorded` is when we received them, the agent is the intermediary
  (US Core participant type `transmitter`), the entity its endpoint. It is generated per
  answer (fullUrl `urn:uuid:`), never stored, and left out when the token may not read
  Provenance.
- **Duplicates.** Two resources are exact duplicates when their type and content are equal
  once `id`, `meta` and `text` are set aside and every reference to the record's own patient
  (the local id for local resources, the located ids for remote ones) is read as the same
  subject; identifiers are part of the content. The first copy stays: local entries first,
  then intermediaries in the directory's order. Within one intermediary, only the same
  `type/id` twice is a duplicate. The located remote Patient is always kept, even when equal
  to the local one: the intermediary's other entries refer to it.
- **Issues.** Every intermediary that failed, found no one, or had resources withheld or
  dropped gets an OperationOutcome issue naming it, its endpoint and counts, never the patient.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from app.adapters.base import FailureKind
from app.auth.policy import AccessPolicy
from app.errors import Issue
from app.federation.admission import Admitted, RecordFilter, admit
from app.federation.federator import SourceResult
from app.fhir.compartments import reference_target
from app.store.base import format_instant

__all__ = ["FederatedPart", "fingerprint", "patient_entries", "record_entries"]

TRANSMITTER = {
    "system": "http://hl7.org/fhir/us/core/CodeSystem/us-core-provenance-participant-type",
    "code": "transmitter",
    "display": "Transmitter",
}
_SUBJECT = "Patient/$subject"
log = logging.getLogger("dxf.federation")
# OperationOutcome issue type (https://hl7.org/fhir/R4/valueset-issue-type.html) per failure
ISSUE_CODES = {
    FailureKind.UNREACHABLE: "transient",
    FailureKind.TIMEOUT: "timeout",
    FailureKind.AUTH: "security",
    FailureKind.HTTP: "exception",
    FailureKind.OUTCOME: "exception",
    FailureKind.OVERSIZED: "too-costly",
    FailureKind.MALFORMED: "structure",
    FailureKind.UNSUPPORTED: "not-supported",
    FailureKind.CIRCUIT_OPEN: "transient",
}


@dataclass(slots=True)
class FederatedPart:
    """What the intermediaries add to one Bundle: entries (resources, then Provenances) and
    issues for its OperationOutcome entry."""

    entries: list[dict[str, Any]] = field(default_factory=list)
    issues: list[Issue] = field(default_factory=list)
    asked: int = 0  # intermediaries asked (or skipped for an open breaker)


def fingerprint(resource: dict[str, Any], subjects: set[str], base: str) -> str:
    """The content hash two exact duplicates share (see the module docstring)."""
    body = {k: v for k, v in resource.items() if k not in ("id", "meta", "text")}
    canonical = _subject_refs(body, subjects, base.rstrip("/"))
    return hashlib.sha256(orjson.dumps(canonical, option=orjson.OPT_SORT_KEYS)).hexdigest()


def record_entries(
    results: list[SourceResult],
    *,
    policy: AccessPolicy,
    filters: RecordFilter,
    seen: set[str],
    now: datetime,
) -> FederatedPart:
    """$everything: each intermediary's admitted record. `seen` holds the fingerprints of the
    local entries already in the Bundle and gains those of the remote ones."""
    part = FederatedPart(asked=len(results))
    for result in results:
        _guarded(part, result, seen, lambda o, r, m: _record(o, r, policy, filters, m, now))
    return part


def _record(
    part: FederatedPart,
    result: SourceResult,
    policy: AccessPolicy,
    filters: RecordFilter,
    seen: set[str],
    now: datetime,
) -> None:
    if _failed(part, result):
        return
    located = {p.id for p in result.patients}
    admitted = Admitted()
    for record in result.records:
        got = admit(
            record.resources,
            base=result.endpoint,
            located=located,
            policy=policy,
            filters=filters,
        )
        admitted.resources += got.resources
        admitted.not_permitted += got.not_permitted
        admitted.other_patient += got.other_patient
        admitted.malformed += got.malformed
        admitted.filtered += got.filtered
        if not record.complete:
            part.issues.append(
                _info(
                    result,
                    "the record is incomplete (the intermediary's paging or "
                    "size limit stopped it early)",
                    code="incomplete",
                )
            )
        part.issues += [_info(result, str(note)) for note in record.notes]
    _add(part, result, admitted, located, seen, policy, now, scores={})


def patient_entries(
    results: list[SourceResult],
    *,
    policy: AccessPolicy,
    seen: set[str],
    now: datetime,
) -> FederatedPart:
    """A federated Patient search: the Patients each intermediary located for the person."""
    part = FederatedPart(asked=len(results))
    for result in results:
        _guarded(part, result, seen, lambda o, r, m: _patients(o, r, policy, m, now))
    return part


def _patients(
    part: FederatedPart,
    result: SourceResult,
    policy: AccessPolicy,
    seen: set[str],
    now: datetime,
) -> None:
    if _failed(part, result):
        return
    located = {p.id for p in result.patients}
    bodies = [
        p.resource
        for p in result.patients
        if isinstance(p.resource, dict) and p.resource.get("id") == p.id
    ]
    admitted = admit(bodies, base=result.endpoint, located=located, policy=policy)
    admitted.malformed += len(result.patients) - len(bodies)
    scores = {p.id: float(p.score) for p in result.patients}
    _add(part, result, admitted, located, seen, policy, now, scores=scores)


def _guarded(
    part: FederatedPart,
    result: SourceResult,
    seen: set[str],
    merge: Callable[[FederatedPart, SourceResult, set[str]], None],
) -> None:
    """Merge one intermediary's answer all or nothing: an answer the adapter handed over in a
    shape nobody expected becomes one issue instead of failing the read."""
    own, mine = FederatedPart(), set(seen)
    try:
        merge(own, result, mine)
    except Exception as exc:  # noqa: BLE001 - one intermediary's answer must not fail the read
        log.error(
            "intermediary answer not merged",
            extra={"endpoint": result.endpoint, "error": type(exc).__name__},
        )
        part.issues.append(
            Issue(
                code="structure",
                severity="warning",
                diagnostics=(
                    f"intermediary {result.name} ({result.endpoint}) is missing from this "
                    f"answer: its answer could not be read ({type(exc).__name__})"
                ),
            )
        )
        return
    part.entries += own.entries
    part.issues += own.issues
    seen |= mine


def _failed(part: FederatedPart, result: SourceResult) -> bool:
    if result.error is not None:
        err = result.error
        status = f" (HTTP {err.status})" if err.status is not None else ""
        part.issues.append(
            Issue(
                code=ISSUE_CODES.get(err.kind, "exception"),
                severity="warning",
                diagnostics=(
                    f"intermediary {result.name} ({result.endpoint}) is missing from this "
                    f"answer: {err.kind.value}{status}: {err.detail}"
                ),
            )
        )
        return True
    if result.set_aside:
        part.issues.append(
            _info(
                result,
                f"{result.set_aside} candidate patient(s) were not used (match score below the "
                "threshold, or more than the per-intermediary limit)",
            )
        )
    if not result.patients:
        part.issues.append(_info(result, "found no patient matching this one", code="not-found"))
        return True
    return False


def _add(
    part: FederatedPart,
    result: SourceResult,
    admitted: Admitted,
    located: set[str],
    seen: set[str],
    policy: AccessPolicy,
    now: datetime,
    *,
    scores: dict[str, float],
) -> None:
    base = result.endpoint.rstrip("/")
    mine: set[tuple[str, str]] = set()
    targets: list[str] = []
    duplicates = 0
    for resource in admitted.resources:
        key = (resource["resourceType"], resource["id"])
        digest = fingerprint(resource, located, base)
        anchor = key[0] == "Patient" and key[1] in located  # what the remote entries refer to
        if key in mine or (digest in seen and not anchor):
            duplicates += 1
            continue
        mine.add(key)
        seen.add(digest)
        full_url = f"{base}/{key[0]}/{key[1]}"
        body = dict(resource)
        body["meta"] = {**(resource.get("meta") or {}), "source": result.endpoint}
        search: dict[str, Any] = {"mode": "match"}
        if key[0] == "Patient" and key[1] in scores:
            search["score"] = round(scores[key[1]], 4)
        part.entries.append({"fullUrl": full_url, "resource": body, "search": search})
        targets.append(full_url)
    if admitted.withheld:
        part.issues.append(
            _info(
                result,
                f"{admitted.withheld} resource(s) were withheld: {admitted.not_permitted} of "
                f"types the access token may not read, {admitted.other_patient} not part of "
                f"this patient's record, {admitted.malformed} not valid resources",
                code="suppressed",
            )
        )
    if duplicates:
        part.issues.append(
            _info(
                result,
                f"{duplicates} resource(s) duplicated entries already in the Bundle "
                "and appear once",
            )
        )
    if targets and policy.allows("Provenance", "r"):
        part.entries.append(_provenance(result, targets, now))


def _provenance(result: SourceResult, targets: list[str], now: datetime) -> dict[str, Any]:
    pid = str(uuid.uuid4())
    endpoint = {"system": "urn:ietf:rfc:3986", "value": result.endpoint}
    body = {
        "resourceType": "Provenance",
        "id": pid,
        "target": [{"reference": t} for t in targets],
        "recorded": format_instant(now),
        "agent": [
            {
                "type": {"coding": [TRANSMITTER]},
                "who": {"identifier": endpoint, "display": result.name},
            }
        ],
        "entity": [{"role": "source", "what": {"identifier": endpoint, "display": result.name}}],
    }
    return {"fullUrl": f"urn:uuid:{pid}", "resource": body, "search": {"mode": "include"}}


def _info(result: SourceResult, text: str, *, code: str = "informational") -> Issue:
    return Issue(
        code=code,
        severity="information",
        diagnostics=f"intermediary {result.name} ({result.endpoint}): {text}",
    )


def _subject_refs(node: Any, subjects: set[str], base: str) -> Any:
    if isinstance(node, list):
        return [_subject_refs(item, subjects, base) for item in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key == "reference" and isinstance(value, str):
            target = reference_target(value, base)
            if target is not None and target[0] == "Patient" and target[1] in subjects:
                value = _SUBJECT
            out[key] = value
        else:
            out[key] = _subject_refs(value, subjects, base)
    return out
