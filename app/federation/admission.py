"""What of an intermediary's answer may enter the caller's Bundle, whatever the intermediary sent.

The same rules as local `$everything` (app/store/everything.py, after
https://hl7.org/fhir/R4/patient-operation-everything.html and the Patient compartment,
https://hl7.org/fhir/R4/compartmentdefinition-patient.html), applied to resources that never
touched our database. References are resolved against the intermediary's base URL.

A resource is admitted only when all of these hold:

1. it is a JSON object of a resource type this server knows, with a valid id, nested at most
   MAX_DEPTH levels deep (so it can be walked and serialised safely);
2. the caller's token may read its type (`AccessPolicy.restriction(type, "r")`);
3. it is the located patient's record:
   - a Patient: one of the located remote Patients (another Patient never enters);
   - a type of the Patient compartment: in a located Patient's compartment, and referring to
     no other Patient anywhere in it (contained resources included), so a remote answer that
     mixes in another person's data loses those resources;
   - a supporting type (SUPPORTING_TYPES): referenced by an admitted resource, and only when
     the token reads that type unconfined; a patient-confined token gets none, as locally;
   - a Binary: the attachment (`attachment.url`) of an admitted resource, such as the
     document of a DocumentReference from a DocumentReference-style intermediary;
   - any other type: never;
4. it passes the request's `_type`, `_since` (meta.lastUpdated, when given) and `start`/`end`
   (care dates; resources without one are kept) filters.

Withheld resources are only counted, by reason, so the Bundle can say how many were dropped
without saying anything about them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from app.auth.policy import AccessPolicy
from app.errors import Forbidden
from app.fhir.compartments import PATIENT_COMPARTMENT, patient_ids_of, reference_target
from app.fhir.models import RESOURCE_TYPES
from app.fhir.search.extract import date_rows
from app.store.base import aware
from app.store.everything import SUPPORTING_TYPES

__all__ = ["Admitted", "RecordFilter", "admit"]

_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
MAX_DEPTH = 100  # JSON nesting of one remote resource; real resources stay far below
_FOREIGN = "\x00foreign"  # a Patient reference to another server: never a located patient


@dataclass(frozen=True, slots=True)
class RecordFilter:
    """The request's own filters ($everything `_type`, `_since`, `start`, `end`)."""

    types: tuple[str, ...] = ()
    since: datetime | None = None
    start: datetime | None = None
    end: datetime | None = None


@dataclass(slots=True)
class Admitted:
    resources: list[dict[str, Any]] = field(default_factory=list)
    not_permitted: int = 0  # types the token may not read
    other_patient: int = 0  # another patient's data, or not part of the patient's record
    malformed: int = 0  # not a resource this server could serve
    filtered: int = 0  # outside the request's _type / _since / start / end

    @property
    def withheld(self) -> int:
        return self.not_permitted + self.other_patient + self.malformed


def admit(
    resources: list[Any],
    *,
    base: str,
    located: set[str],
    policy: AccessPolicy,
    filters: RecordFilter = RecordFilter(),
) -> Admitted:
    """The resources of one intermediary's record the caller may see (see module docstring)."""
    out = Admitted()
    base = base.rstrip("/")
    core: list[dict[str, Any]] = []
    supporting: list[dict[str, Any]] = []
    attached: list[dict[str, Any]] = []
    for item in resources:
        if not _well_formed(item):
            out.malformed += 1
            continue
        rtype = item["resourceType"]
        if filters.types and rtype not in filters.types:
            out.filtered += 1
            continue
        try:
            confined = policy.restriction(rtype, "r")
        except Forbidden:
            out.not_permitted += 1
            continue
        if rtype == "Patient":
            if item["id"] in located:
                core.append(item)
            else:
                out.other_patient += 1
        elif rtype in PATIENT_COMPARTMENT:
            members = patient_ids_of(item, base)
            if members & located and set(_patient_refs(item, base)) <= located:
                core.append(item)
            else:
                out.other_patient += 1
        elif rtype in SUPPORTING_TYPES:
            if confined is not None:
                out.not_permitted += 1
            else:
                supporting.append(item)
        elif rtype == "Binary":
            attached.append(item)
        else:
            out.other_patient += 1
    referenced = {t for r in core for t in _targets(r, base)}
    attachments = {t for r in core for t in _attachments(r, base)}
    for item in supporting:
        if (item["resourceType"], item["id"]) in referenced and not set(_patient_refs(item, base)):
            core.append(item)
        else:
            out.other_patient += 1
    for item in attached:
        if ("Binary", item["id"]) in attachments:
            core.append(item)
        else:
            out.other_patient += 1
    for item in core:
        if _passes(item, filters):
            out.resources.append(item)
        else:
            out.filtered += 1
    return out


def _well_formed(item: Any) -> bool:
    return (
        isinstance(item, dict)
        and item.get("resourceType") in RESOURCE_TYPES
        and isinstance(item.get("id"), str)
        and _ID.match(item["id"]) is not None
        and _shallow(item, MAX_DEPTH)
    )


def _shallow(node: Any, limit: int) -> bool:
    """Is `node` nested at most `limit` levels deep? (Iterative: no recursion to exhaust.)"""
    stack = [(node, 1)]
    while stack:
        current, depth = stack.pop()
        if depth > limit:
            return False
        if isinstance(current, dict):
            stack.extend((v, depth + 1) for v in current.values() if isinstance(v, dict | list))
        elif isinstance(current, list):
            stack.extend((v, depth + 1) for v in current if isinstance(v, dict | list))
    return True


def _references(node: Any) -> Iterator[str]:
    if isinstance(node, list):
        for item in node:
            yield from _references(item)
    elif isinstance(node, dict):
        for key, value in node.items():
            if key == "reference" and isinstance(value, str):
                yield value
            else:
                yield from _references(value)


def _targets(resource: dict[str, Any], base: str) -> Iterator[tuple[str, str]]:
    for ref in _references(resource):
        target = reference_target(ref, base)
        if target is not None:
            yield target


def _attachments(node: Any, base: str) -> Iterator[tuple[str, str]]:
    """The resources the attachments under `node` point at (`attachment.url`)."""
    if isinstance(node, list):
        for item in node:
            yield from _attachments(item, base)
    elif isinstance(node, dict):
        for key, value in node.items():
            if key == "attachment" and isinstance(value, dict):
                url = value.get("url")
                target = reference_target(url, base) if isinstance(url, str) else None
                if target is not None:
                    yield target
            else:
                yield from _attachments(value, base)


def _patient_refs(resource: dict[str, Any], base: str) -> Iterator[str]:
    """The ids of every Patient the resource refers to; a Patient on another server (an
    absolute URL outside `base`) counts as a foreign one."""
    for ref in _references(resource):
        target = reference_target(ref, base)
        if target is not None:
            if target[0] == "Patient":
                yield target[1]
        elif "://" in ref and "/Patient/" in ref:
            yield _FOREIGN


def _passes(resource: dict[str, Any], filters: RecordFilter) -> bool:
    if filters.since is not None:
        updated = _instant((resource.get("meta") or {}).get("lastUpdated"))
        if updated is not None and updated < filters.since:
            return False
    if filters.start is None and filters.end is None:
        return True
    if resource["resourceType"] in ("Patient", *SUPPORTING_TYPES):
        return True
    dated = [(low, high) for param, low, high in date_rows(resource) if param != "_lastUpdated"]
    if not dated:
        return True
    start, end = filters.start, filters.end
    return any(
        (start is None or high > start) and (end is None or low < end) for low, high in dated
    )


def _instant(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return aware(datetime.fromisoformat(value.replace("Z", "+00:00")))
    except ValueError:
        return None
