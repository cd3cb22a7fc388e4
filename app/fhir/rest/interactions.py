"""The FHIR interactions, independent of HTTP framing so routes and Bundles share them.

Each function takes the caller's repository (already bound to its AccessPolicy) or, inside a
transaction Bundle, its open WriteSession, and returns an `Outcome` that
`negotiation`/`router` turn into a response or a Bundle entry.
https://hl7.org/fhir/R4/http.html
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import urlencode

import orjson

from app.errors import Invalid, Issue, NotFound, Unprocessable, operation_outcome
from app.federation.admission import RecordFilter
from app.federation.federator import Federator
from app.federation.merge import FederatedPart
from app.federation.person import person_from_search
from app.federation.reads import Pending, start_locate, start_locate_patient, start_record
from app.fhir.matching import MATCH_GRADE, score_match
from app.fhir.models import RESOURCE_TYPES, validate_resource
from app.fhir.search.criteria import Criteria, parse_criteria
from app.fhir.search.dates import date_range
from app.fhir.search.query import parse_search
from app.fhir.search.shape import shape
from app.store.everything import EverythingRequest
from app.store.repository import (
    FhirRepository,
    HistoryPage,
    StoredResource,
    WriteResult,
    format_instant,
)

__all__ = [
    "FEDERATE",
    "ID_PATTERN",
    "Outcome",
    "Writer",
    "check_id",
    "check_type",
    "create",
    "delete",
    "history",
    "match",
    "read",
    "search",
    "update",
    "vread",
]

ID_PATTERN = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
HISTORY_CONTROL = {"_count", "_cursor", "_since", "_format", "_pretty"}
FEDERATE = "_federate"  # ask the intermediaries too (app/federation; docs/adapters.md)


class Writer(Protocol):
    """What create/update/delete need: a FhirRepository or an open WriteSession."""

    async def create(
        self, resource_type: str, body: dict[str, Any], *, if_none_exist: Criteria | None = None
    ) -> WriteResult: ...

    async def update(
        self, resource_type: str, resource_id: str, body: dict[str, Any], *, if_match: int | None
    ) -> WriteResult: ...

    async def conditional_update(
        self, criteria: Criteria, body: dict[str, Any], *, if_match: int | None
    ) -> WriteResult: ...

    async def delete(self, resource_type: str, resource_id: str) -> StoredResource | None: ...


@dataclass(frozen=True, slots=True)
class Outcome:
    """The result of one interaction, before HTTP or Bundle framing."""

    status: int
    resource: StoredResource | None = None
    bundle: dict[str, Any] | None = None
    location: str | None = None
    message: str = ""
    headers: dict[str, str] = field(default_factory=dict)


def check_type(resource_type: str) -> str:
    if resource_type not in RESOURCE_TYPES:
        raise NotFound(f"unknown resource type '{resource_type}'", code="not-supported")
    return resource_type


def check_id(resource_id: str) -> str:
    if not ID_PATTERN.match(resource_id):
        raise Invalid(f"'{resource_id[:80]}' is not a valid FHIR id ([A-Za-z0-9-.]{{1,64}})")
    return resource_id


def parse_version(value: str) -> int:
    if not (value.isascii() and value.isdigit()) or len(value) > 9:
        raise NotFound(f"version '{value[:20]}' is not known")
    return int(value)


async def read(repo: FhirRepository, resource_type: str, resource_id: str) -> Outcome:
    return Outcome(200, await repo.read(check_type(resource_type), check_id(resource_id)))


async def vread(repo: FhirRepository, resource_type: str, resource_id: str, vid: str) -> Outcome:
    stored = await repo.vread(check_type(resource_type), check_id(resource_id), parse_version(vid))
    return Outcome(200, stored)


async def create(
    writer: Writer, resource_type: str, body: dict[str, Any], *, if_none_exist: str | None
) -> Outcome:
    check_type(resource_type)
    criteria = (
        parse_criteria(resource_type, if_none_exist, require_some=True)
        if if_none_exist is not None
        else None
    )
    body = {k: v for k, v in body.items() if k != "id"}  # the server assigns ids on create
    result = await writer.create(resource_type, body, if_none_exist=criteria)
    if not result.created:
        return Outcome(200, result.resource, message="an existing resource matched If-None-Exist")
    return Outcome(201, result.resource, location=result.resource.location, message="created")


async def update(
    writer: Writer,
    resource_type: str,
    resource_id: str,
    body: dict[str, Any],
    *,
    if_match: int | None,
) -> Outcome:
    check_type(resource_type)
    check_id(resource_id)
    result = await writer.update(resource_type, resource_id, body, if_match=if_match)
    return _written(result)


async def conditional_update(
    writer: Writer,
    resource_type: str,
    query: list[tuple[str, str]],
    body: dict[str, Any],
    *,
    if_match: int | None,
) -> Outcome:
    check_type(resource_type)
    criteria = parse_criteria(resource_type, query, require_some=True)
    return _written(await writer.conditional_update(criteria, body, if_match=if_match))


def _written(result: WriteResult) -> Outcome:
    if result.created:
        return Outcome(201, result.resource, location=result.resource.location, message="created")
    return Outcome(200, result.resource, message="updated")


async def delete(writer: Writer, resource_type: str, resource_id: str) -> Outcome:
    check_type(resource_type)
    check_id(resource_id)
    stored = await writer.delete(resource_type, resource_id)
    headers = {"ETag": stored.etag} if stored else {}
    message = "deleted" if stored else "already deleted; nothing changed"
    return Outcome(204, None, message=message, headers=headers)


async def search(
    repo: FhirRepository,
    resource_type: str,
    query: list[tuple[str, str]],
    *,
    fhir_base: str,
    default_count: int,
    max_count: int,
    lenient: bool = False,
    federator: Federator | None = None,
) -> Outcome:
    """Type-level search; a Patient search with `_federate=true` also returns the Patients the
    intermediaries locate for the person the query describes (first page only)."""
    check_type(resource_type)
    federate = _federate(query, default=False)
    if federate and resource_type != "Patient":
        raise Invalid(f"{FEDERATE}=true applies to Patient search only", code="not-supported")
    criteria_query = [(k, v) for k, v in query if k != FEDERATE]
    request = parse_search(
        resource_type,
        criteria_query,
        default_count=default_count,
        max_count=max_count,
        base_url=fhir_base,
        lenient=lenient,
    )
    page = await repo.search(request)
    part = FederatedPart()
    if federate and federator is not None and request.cursor is None and request.count:
        part = await _federated_search(repo, federator, criteria_query, page.resources)
    url = f"{fhir_base}/{resource_type}"
    base_query = [*request.echo, ("_count", str(request.count))]
    if federate:
        base_query.insert(0, (FEDERATE, "true"))
    this = [("_cursor", request.cursor.encode())] if request.cursor else []
    links = [_link("self", url, [*base_query, *this])]
    if page.next_cursor is not None:
        links.append(_link("next", url, [*base_query, ("_cursor", page.next_cursor.encode())]))
    if page.prev_cursor is not None:
        links.append(_link("previous", url, [*base_query, ("_cursor", page.prev_cursor.encode())]))
    entries = [
        _search_entry(
            fhir_base, s, "match", shape(s.content or b"{}", request.summary, request.elements)
        )
        for s in page.resources
    ]
    entries += [
        {**e, "resource": _shaped(e["resource"], request.summary, request.elements)}
        for e in part.entries
        if e["resource"]["resourceType"] == "Patient"
    ]
    entries += [_search_entry(fhir_base, s, "include", s.content or b"{}") for s in page.included]
    entries += [e for e in part.entries if e["resource"]["resourceType"] != "Patient"]
    notes = [*request.ignored, *page.notes]
    issues = [Issue(code="informational", diagnostics=n, severity="warning") for n in notes]
    issues += part.issues
    if issues:
        entries.append({"resource": operation_outcome(issues), "search": {"mode": "outcome"}})
    bundle = _bundle("searchset", links, entries)
    if page.total is not None:
        bundle["total"] = page.total
    return Outcome(200, bundle=bundle)


async def _federated_search(
    repo: FhirRepository,
    federator: Federator,
    query: list[tuple[str, str]],
    matches: list[StoredResource],
) -> FederatedPart:
    """The intermediaries' Patients for the person the search describes. A patient-confined
    token only ever looks for its own Patient, and only when the search found it here."""
    own = repo.policy.restriction("Patient", "s")
    if own is not None:
        if not any(s.id == own for s in matches):
            return FederatedPart()
        pending = await start_locate_patient(federator, repo, own)
    else:
        person = person_from_search(query)
        if person is None:
            note = Issue(
                code="informational",
                severity="information",
                diagnostics=(
                    f"{FEDERATE}=true: the search names no identifier, name, birthdate, phone or "
                    "email to locate the patient by; only local results are returned"
                ),
            )
            return FederatedPart(issues=[note])
        pending = start_locate(federator, person, None)
    return await pending.finish(repo, matches)


def _shaped(body: dict[str, Any], summary: str | None, elements: tuple[str, ...]) -> Any:
    if summary in (None, "false") and not elements:
        return body
    return orjson.Fragment(shape(orjson.dumps(body), summary, elements))


def _federate(query: list[tuple[str, str]], *, default: bool) -> bool:
    values = [v for k, v in query if k == FEDERATE]
    if not values:
        return default
    if len(values) > 1 or values[0] not in ("true", "false"):
        raise Invalid(f"{FEDERATE} takes true or false, once")
    return values[0] == "true"


def _search_entry(fhir_base: str, s: StoredResource, mode: str, content: bytes) -> dict[str, Any]:
    return {
        "fullUrl": f"{fhir_base}/{s.resource_type}/{s.id}",
        "resource": orjson.Fragment(content),
        "search": {"mode": mode},
    }


EVERYTHING_PARAMS = {
    "_since",
    "_type",
    "_count",
    "_cursor",
    "start",
    "end",
    "_format",
    "_pretty",
    FEDERATE,
}


async def everything(
    repo: FhirRepository,
    patient_id: str | None,
    query: list[tuple[str, str]],
    *,
    fhir_base: str,
    default_count: int,
    max_count: int,
    federator: Federator | None = None,
    federate_default: bool = False,
) -> Outcome:
    """Patient/$everything at instance or type level
    (https://hl7.org/fhir/R4/patient-operation-everything.html), as a paged searchset.

    Federated (`_federate`, default `federate_default`), the first page also holds what each
    active intermediary has for the same person; later pages are local only. Type level
    federates only for a token confined to one Patient (its record is that Patient's)."""
    if patient_id is not None:
        check_id(patient_id)
    control = _control(query, EVERYTHING_PARAMS, operation="$everything")
    types: tuple[str, ...] = ()
    if "_type" in control:
        types = tuple(t.strip() for t in control["_type"].split(",") if t.strip())
        bad = [t for t in types if t not in RESOURCE_TYPES]
        if bad or not types:
            raise Invalid(f"_type names an unknown resource type: {(bad or [''])[0][:40]!r}")
    start = _care_date(control, "start", high=False)
    end = _care_date(control, "end", high=True)
    request = EverythingRequest(
        patient_id=patient_id,
        count=_count(control.get("_count"), default_count, max_count),
        types=types,
        since=_instant(control["_since"]) if "_since" in control else None,
        start=start,
        end=end,
        cursor=_everything_cursor(control.get("_cursor")),
    )
    pending: Pending | None = None
    federate = _federate(query, default=federate_default)
    if federator is not None and request.cursor is None and federate:
        subject = patient_id or repo.policy.restriction("Patient", "r")
        if subject is not None:
            filters = RecordFilter(types, request.since, start, end)
            pending = await start_record(federator, repo, subject, filters)
    try:
        page = await repo.everything(request)
    except BaseException:
        if pending is not None:
            pending.cancel()
        raise
    part = await pending.finish(repo, page.resources) if pending else FederatedPart()
    path = f"Patient/{patient_id}/$everything" if patient_id else "Patient/$everything"
    url = f"{fhir_base}/{path}"
    keep = ("_since", "_type", "start", "end", FEDERATE)
    base_query = [(k, v) for k, v in query if k in keep]
    base_query.append(("_count", str(request.count)))
    links = [_link("self", url, [*base_query, *_cursor(control)])]
    if page.next_cursor is not None:
        token = base64.urlsafe_b64encode(orjson.dumps(page.next_cursor)).decode()
        links.append(_link("next", url, [*base_query, ("_cursor", token)]))
    entries = [_search_entry(fhir_base, s, "match", s.content or b"{}") for s in page.resources]
    entries += part.entries
    if part.issues:
        outcome = operation_outcome(part.issues)
        entries.append({"resource": outcome, "search": {"mode": "outcome"}})
    return Outcome(200, bundle=_bundle("searchset", links, entries))


MATCH_DEFAULT_COUNT = 10


async def match(
    repo: FhirRepository, body: dict[str, Any], *, fhir_base: str, max_count: int
) -> Outcome:
    """Patient/$match (https://hl7.org/fhir/R4/patient-operation-match.html): the stored
    Patients most like the one given, best first, each with `search.score` and the match-grade
    extension; candidates come from the index (app/store/matching.py), scores from
    app/fhir/matching.py. Certainly-not matches and those below every grade are left out."""
    wanted, only_certain, count = _match_input(body, max_count)
    scored = []
    for stored in await repo.match_candidates(wanted):
        found = score_match(wanted, orjson.loads(stored.content or b"{}"))
        if found.grade is not None and found.grade != "certainly-not":
            scored.append((found, stored))
    scored.sort(key=lambda pair: (-pair[0].score, pair[1].id))
    issues = []
    if only_certain:
        scored = [pair for pair in scored if pair[0].grade == "certain"]
        if len(scored) > 1:
            issues.append(
                Issue(
                    code="multiple-matches",
                    severity="information",
                    diagnostics=(
                        f"{len(scored)} Patients match with certainty; with onlyCertainMatches "
                        "none is returned"
                    ),
                )
            )
            scored = []
    entries: list[dict[str, Any]] = []
    for found, stored in scored[:count]:
        entry = _search_entry(fhir_base, stored, "match", stored.content or b"{}")
        entry["search"] = {
            "extension": [{"url": MATCH_GRADE, "valueCode": found.grade}],
            "mode": "match",
            "score": found.score,
        }
        entries.append(entry)
    total = len(entries)
    if issues:
        entries.append({"resource": operation_outcome(issues), "search": {"mode": "outcome"}})
    links = [{"relation": "self", "url": f"{fhir_base}/Patient/$match"}]
    bundle = _bundle("searchset", links, entries)
    bundle["total"] = total
    return Outcome(200, bundle=bundle)


def _match_input(body: dict[str, Any], max_count: int) -> tuple[dict[str, Any], bool, int]:
    """The Parameters of $match: `resource` (a Patient, required), `onlyCertainMatches`
    (boolean, default false), `count` (positive integer; default MATCH_DEFAULT_COUNT)."""
    if body.get("resourceType") != "Parameters" or not isinstance(body.get("parameter"), list):
        raise Invalid("Patient/$match takes a Parameters resource with a 'resource' parameter")
    wanted: dict[str, Any] | None = None
    only_certain, count = False, min(MATCH_DEFAULT_COUNT, max_count)
    seen: set[str] = set()
    for param in body["parameter"]:
        name = param.get("name") if isinstance(param, dict) else None
        if name in seen:
            raise Invalid(f"$match parameter '{name}' may appear only once")
        seen.add(str(name))
        if name == "resource":
            wanted = param.get("resource")
            if not isinstance(wanted, dict) or wanted.get("resourceType") != "Patient":
                raise Invalid("$match parameter 'resource' must hold a Patient")
        elif name == "onlyCertainMatches":
            if not isinstance(param.get("valueBoolean"), bool):
                raise Invalid("$match parameter 'onlyCertainMatches' takes a valueBoolean")
            only_certain = param["valueBoolean"]
        elif name == "count":
            value = param.get("valueInteger")
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise Invalid("$match parameter 'count' takes a positive valueInteger")
            count = min(value, max_count)
        else:
            raise Invalid(f"unknown $match parameter {str(name)[:40]!r}", code="not-supported")
    if wanted is None:
        raise Invalid("$match needs the parameter 'resource' (the Patient to match)")
    validate_resource(wanted)
    names = [n for n in wanted.get("name") or [] if isinstance(n, dict)]
    if not (
        wanted.get("identifier")
        or any(n.get("family") for n in names)
        or wanted.get("birthDate")
        or wanted.get("telecom")
    ):
        raise Unprocessable(
            "$match needs an identifier, a family name, a birth date or a telecom to match on",
            code="incomplete",
        )
    return wanted, only_certain, count


def _care_date(control: dict[str, str], name: str, *, high: bool) -> datetime | None:
    if name not in control:
        return None
    found = date_range(control[name])
    if found is None:
        raise Invalid(f"{name} must be a date, such as 2024-01-31")
    return found[1] if high else found[0]


def _everything_cursor(text: str | None) -> tuple[str, str, str] | None:
    if text is None:
        return None
    try:
        value = orjson.loads(base64.urlsafe_b64decode(text.encode()))
    except (ValueError, binascii.Error, orjson.JSONDecodeError):
        value = None
    if not (isinstance(value, list) and len(value) == 3 and all(isinstance(v, str) for v in value)):
        raise Invalid("_cursor is not a valid paging cursor")
    return (value[0], value[1], value[2])


async def history(
    repo: FhirRepository,
    resource_type: str | None,
    resource_id: str | None,
    query: list[tuple[str, str]],
    *,
    fhir_base: str,
    default_count: int,
    max_count: int,
) -> Outcome:
    if resource_type is not None:
        check_type(resource_type)
    if resource_id is not None:
        check_id(resource_id)
    control = _control(query, HISTORY_CONTROL, operation="history")
    count = _count(control.get("_count"), default_count, max_count)
    since = _instant(control["_since"]) if "_since" in control else None
    cursor_text = control.get("_cursor")
    if cursor_text is not None and not (
        cursor_text.isascii() and cursor_text.isdigit() and len(cursor_text) <= 18
    ):
        raise Invalid("_cursor is not a valid paging cursor")
    page: HistoryPage = await repo.history(
        resource_type,
        resource_id,
        count=count,
        since=since,
        cursor=int(cursor_text) if cursor_text else None,
    )
    path = "/".join(p for p in (resource_type, resource_id) if p)
    url = f"{fhir_base}/{path}/_history" if path else f"{fhir_base}/_history"
    base_query = [(k, v) for k, v in query if k in ("_since",)] + [("_count", str(count))]
    links = [_link("self", url, [*base_query, *_cursor(control)])]
    if page.next_cursor is not None:
        links.append(_link("next", url, [*base_query, ("_cursor", str(page.next_cursor))]))
    entries = []
    for entry in page.entries:
        s = entry.resource
        item: dict[str, Any] = {"fullUrl": f"{fhir_base}/{s.resource_type}/{s.id}"}
        if s.content is not None:
            item["resource"] = orjson.Fragment(s.content)
        target = f"{s.resource_type}/{s.id}" if entry.method != "POST" else s.resource_type
        item["request"] = {"method": entry.method, "url": target}
        item["response"] = {
            "status": {"POST": "201 Created", "PUT": "200 OK", "DELETE": "204 No Content"}[
                entry.method
            ],
            "etag": s.etag,
            "lastModified": format_instant(s.last_updated),
        }
        entries.append(item)
    return Outcome(200, bundle=_bundle("history", links, entries))


def outcome_resource(message: str, severity: str = "information") -> dict[str, Any]:
    return operation_outcome([Issue(code="informational", diagnostics=message, severity=severity)])


def _bundle(
    kind: str, links: list[dict[str, str]], entries: list[dict[str, Any]]
) -> dict[str, Any]:
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": kind, "link": links}
    if entries:
        bundle["entry"] = entries
    return bundle


def _link(relation: str, url: str, query: list[tuple[str, str]]) -> dict[str, str]:
    return {"relation": relation, "url": f"{url}?{urlencode(query)}" if query else url}


def _cursor(control: dict[str, str]) -> list[tuple[str, str]]:
    return [("_cursor", control["_cursor"])] if "_cursor" in control else []


def _control(query: list[tuple[str, str]], allowed: set[str], *, operation: str) -> dict[str, str]:
    """The query of an interaction that takes only `allowed` parameters, each at most once."""
    out: dict[str, str] = {}
    for key, value in query:
        if key not in allowed:
            raise Invalid(f"unknown {operation} parameter '{key}'", code="not-supported")
        if key in out:
            raise Invalid(f"parameter '{key}' may appear only once")
        out[key] = value
    return out


def _count(value: str | None, default: int, maximum: int, *, allow_zero: bool = False) -> int:
    if value is None:
        return default
    if not (value.isascii() and value.isdigit()) or len(value) > 9:
        raise Invalid(f"_count must be a non-negative integer, not {value[:20]!r}")
    return max(0 if allow_zero else 1, min(int(value), maximum))


def _instant(value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise Invalid(f"_since {value[:40]!r} is not a FHIR instant") from None
    if moment.tzinfo is None:
        raise Invalid("_since must carry a time zone (for example 2026-01-01T00:00:00Z)")
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise Invalid(f"_since {value[:40]!r} is out of range") from None
