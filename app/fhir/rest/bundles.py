"""`batch` and `transaction` Bundles: https://hl7.org/fhir/R4/http.html#transaction

A batch runs each entry on its own; a failing entry reports its OperationOutcome in its response
entry and the others still apply. A transaction runs every entry in one database transaction,
in the order the spec prescribes (DELETE, POST, PUT, GET), resolves conditional creates and
updates first so `urn:uuid:` and conditional references (`Patient?identifier=...`) can be
rewritten to the ids they will have, and commits all or nothing: the first failing entry aborts
it, and the whole request is answered with that entry's error.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl

import orjson

from app.errors import Conflict, FhirError, Invalid, Issue, PayloadTooLarge, PreconditionFailed
from app.fhir.models import check_resource
from app.fhir.rest import interactions
from app.fhir.rest.interactions import Outcome, outcome_resource
from app.fhir.rest.negotiation import parse_if_match
from app.fhir.search.criteria import parse_criteria
from app.store.base import new_id
from app.store.repository import FhirRepository, WriteSession, format_instant

__all__ = ["process_bundle"]

log = logging.getLogger("dxf.http")

_ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "GET": 3, "HEAD": 3}


@dataclass(slots=True)
class _Entry:
    index: int
    method: str
    path: list[str]
    query: list[tuple[str, str]]
    url: str
    full_url: str | None
    body: dict[str, Any] | None
    if_match: int | None
    if_none_exist: str | None
    assigned_id: str | None = None
    existing: bool = False


async def process_bundle(
    repo: FhirRepository,
    bundle: dict[str, Any],
    *,
    fhir_base: str,
    max_entries: int,
    prefer: str,
    default_count: int,
    max_count: int,
) -> dict[str, Any]:
    if bundle.get("resourceType") != "Bundle":
        raise Invalid("POST to the base URL takes a Bundle of type batch or transaction")
    kind = bundle.get("type")
    if kind not in ("batch", "transaction"):
        raise Invalid(f"Bundle.type must be batch or transaction, not {kind!r}")
    raw_entries = bundle.get("entry") or []
    if not isinstance(raw_entries, list):
        raise Invalid("Bundle.entry must be a list", code="structure")
    if len(raw_entries) > max_entries:
        raise PayloadTooLarge(
            f"the Bundle has {len(raw_entries)} entries; this server takes at most {max_entries}"
        )
    ctx = _Context(repo, fhir_base, prefer, default_count, max_count)
    if kind == "batch":
        entries_out = []
        for i, raw in enumerate(raw_entries):
            try:
                entry = _parse_entry(i, raw, fhir_base)
                outcome = await ctx.run(entry, repo)
                entries_out.append(ctx.render(entry, outcome))
            except FhirError as err:
                entries_out.append(_error_entry(_located(err, i)))
            except Exception as exc:  # noqa: BLE001 - one entry's failure must not sink the batch
                log.error("batch entry failed", extra={"error": type(exc).__name__})
                entries_out.append(_error_entry(_located(FhirError("internal error"), i)))
        return {"resourceType": "Bundle", "type": "batch-response", "entry": entries_out}

    entries = [_parse_entry_located(i, raw, fhir_base) for i, raw in enumerate(raw_entries)]
    _check_unique_full_urls(entries)
    # Validation is most of a write's CPU and needs no database: done before the transaction
    # opens, it does not hold the write lock (SQLite) or a connection (PostgreSQL).
    for e in entries:
        if e.body is not None and e.method in ("POST", "PUT"):
            try:
                check_resource(e.body)
            except FhirError as err:
                raise _located(err, e.index) from None
    async with repo.transaction() as tx:
        tx.validated = True  # rewriting references below keeps every body valid
        outcomes = await ctx.transaction(entries, tx)
    return {
        "resourceType": "Bundle",
        "type": "transaction-response",
        "entry": [ctx.render(e, outcomes[e.index]) for e in entries],
    }


class _Context:
    def __init__(
        self, repo: FhirRepository, fhir_base: str, prefer: str, default_count: int, max_count: int
    ) -> None:
        self.repo = repo
        self.fhir_base = fhir_base
        self.prefer = prefer
        self.default_count = default_count
        self.max_count = max_count

    async def run(self, e: _Entry, writer: FhirRepository) -> Outcome:
        """One batch entry (each write is its own transaction)."""
        p = e.path
        if e.method in ("GET", "HEAD"):
            return await self._get(e)
        if e.method == "POST" and len(p) == 1:
            return await interactions.create(writer, p[0], _body(e), if_none_exist=e.if_none_exist)
        if e.method == "PUT" and len(p) == 2:
            return await interactions.update(writer, p[0], p[1], _body(e), if_match=e.if_match)
        if e.method == "PUT" and len(p) == 1 and e.query:
            return await interactions.conditional_update(
                writer, p[0], e.query, _body(e), if_match=e.if_match
            )
        if e.method == "DELETE" and len(p) == 2:
            return await interactions.delete(writer, p[0], p[1])
        raise Invalid(f"{e.method} {e.url} is not an interaction this server supports in a Bundle")

    async def _get(self, e: _Entry) -> Outcome:
        p, repo = e.path, self.repo
        paging = {
            "fhir_base": self.fhir_base,
            "default_count": self.default_count,
            "max_count": self.max_count,
        }
        if p == ["_history"]:
            return await interactions.history(repo, None, None, e.query, **paging)
        if len(p) == 1:
            return await interactions.search(repo, p[0], e.query, **paging)
        if len(p) == 2 and p[1] == "_history":
            return await interactions.history(repo, p[0], None, e.query, **paging)
        if len(p) == 2:
            return await interactions.read(repo, p[0], p[1])
        if len(p) == 3 and p[2] == "_history":
            return await interactions.history(repo, p[0], p[1], e.query, **paging)
        if len(p) == 4 and p[2] == "_history":
            return await interactions.vread(repo, p[0], p[1], p[3])
        raise Invalid(f"GET {e.url} is not an interaction this server supports in a Bundle")

    async def transaction(self, entries: list[_Entry], tx: WriteSession) -> dict[int, Outcome]:
        outcomes: dict[int, Outcome] = {}
        ordered = sorted(entries, key=lambda e: (_ORDER.get(e.method, 9), e.index))
        for e in ordered:
            if e.method not in _ORDER:
                raise _located(Invalid(f"method {e.method} is not supported"), e.index)
        refs = await self._assign_ids(entries, tx)
        for e in entries:
            if e.body is not None:
                try:
                    e.body = await _rewrite(e.body, refs, tx, e.index)
                except FhirError as err:
                    raise _located(err, e.index) from None
        for e in ordered:
            try:
                outcomes[e.index] = await self._tx_entry(e, tx)
            except FhirError as err:
                raise _located(err, e.index) from None
        return outcomes

    async def _assign_ids(self, entries: list[_Entry], tx: WriteSession) -> dict[str, str]:
        refs: dict[str, str] = {}
        for e in entries:
            if e.method not in ("POST", "PUT") or not e.path:
                continue
            rtype = e.path[0]
            interactions.check_type(rtype)
            try:
                if e.method == "POST" and len(e.path) == 1:
                    e.assigned_id = new_id()
                    if e.if_none_exist is not None:
                        criteria = parse_criteria(rtype, e.if_none_exist, require_some=True)
                        found = await _unique(tx, criteria, "If-None-Exist")
                        if found:
                            e.assigned_id, e.existing = found, True
                elif e.method == "PUT" and len(e.path) == 1 and e.query:
                    criteria = parse_criteria(rtype, e.query, require_some=True)
                    found = await _unique(tx, criteria, "conditional update")
                    body_id = (e.body or {}).get("id")
                    e.assigned_id = found or (body_id if isinstance(body_id, str) else None)
                    if e.assigned_id is None:
                        e.assigned_id = new_id()
                        e.body = {**(e.body or {}), "id": e.assigned_id}
                elif e.method == "PUT" and len(e.path) == 2:
                    e.assigned_id = e.path[1]
            except FhirError as err:
                raise _located(err, e.index) from None
            if e.full_url and e.assigned_id:
                refs[e.full_url] = f"{rtype}/{e.assigned_id}"
        return refs

    async def _tx_entry(self, e: _Entry, tx: WriteSession) -> Outcome:
        p = e.path
        if e.method == "DELETE" and len(p) == 2:
            return await interactions.delete(tx, p[0], p[1])
        if e.method == "POST" and len(p) == 1:
            if e.existing and e.assigned_id:
                return Outcome(
                    200,
                    await tx.read(p[0], e.assigned_id),
                    message="an existing resource matched If-None-Exist",
                )
            criteria = (
                parse_criteria(p[0], e.if_none_exist, require_some=True)
                if e.if_none_exist is not None
                else None
            )
            body = {k: v for k, v in _body(e).items() if k != "id"}
            result = await tx.create(
                p[0], body, if_none_exist=criteria, resource_id=e.assigned_id, minted=True
            )
            if result.resource.id != e.assigned_id:
                raise Conflict("a concurrent request created a matching resource; retry")
            status = 201 if result.created else 200
            return Outcome(status, result.resource, location=result.resource.location)
        if e.method == "PUT" and len(p) == 2:
            return await interactions.update(tx, p[0], p[1], _body(e), if_match=e.if_match)
        if e.method == "PUT" and len(p) == 1 and e.query:
            return await interactions.conditional_update(
                tx, p[0], e.query, _body(e), if_match=e.if_match
            )
        if e.method in ("GET", "HEAD") and len(p) == 2:
            return Outcome(
                200, await tx.read(interactions.check_type(p[0]), interactions.check_id(p[1]))
            )
        raise Invalid(f"{e.method} {e.url} is not supported inside a transaction")

    def render(self, e: _Entry, outcome: Outcome) -> dict[str, Any]:
        stored = outcome.resource
        response: dict[str, Any] = {"status": _status(outcome.status)}
        entry: dict[str, Any] = {}
        if stored is not None:
            response["etag"] = stored.etag
            response["lastModified"] = format_instant(stored.last_updated)
            if outcome.location:
                response["location"] = outcome.location
            entry["fullUrl"] = f"{self.fhir_base}/{stored.resource_type}/{stored.id}"
        elif "ETag" in outcome.headers:
            response["etag"] = outcome.headers["ETag"]
        write = e.method in ("POST", "PUT", "DELETE")
        if outcome.bundle is not None:
            entry["resource"] = outcome.bundle
        elif (
            stored is not None
            and stored.content
            and not (write and self.prefer != "representation")
        ):
            entry["resource"] = orjson.Fragment(stored.content)
        if write and self.prefer == "OperationOutcome":
            response["outcome"] = outcome_resource(outcome.message or "ok")
        entry["response"] = response
        return entry


async def _unique(tx: WriteSession, criteria: Any, what: str) -> str | None:
    ids = await tx.match(criteria)
    if len(ids) > 1:
        raise PreconditionFailed(f"{what} criteria matched more than one resource")
    return ids[0] if ids else None


async def _rewrite(node: Any, refs: dict[str, str], tx: WriteSession, index: int) -> Any:
    if isinstance(node, list):
        return [await _rewrite(item, refs, tx, index) for item in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key == "reference" and isinstance(value, str):
            out[key] = await _resolve_reference(value, refs, tx)
        else:
            out[key] = await _rewrite(value, refs, tx, index)
    return out


async def _resolve_reference(value: str, refs: dict[str, str], tx: WriteSession) -> str:
    if value in refs:
        return refs[value]
    if value.startswith("urn:uuid:") or value.startswith("urn:oid:"):
        raise Invalid(f"reference {value!r} names no entry of this transaction")
    head, sep, query = value.partition("?")
    if sep and "/" not in head and "://" not in head:
        criteria = parse_criteria(interactions.check_type(head), query, require_some=True)
        ids = await tx.match(criteria)
        if len(ids) != 1:
            raise PreconditionFailed(
                f"conditional reference {value!r} matched {len(ids)} resources; it must match one"
            )
        return f"{head}/{ids[0]}"
    return value


def _parse_entry_located(index: int, raw: Any, fhir_base: str) -> _Entry:
    try:
        return _parse_entry(index, raw, fhir_base)
    except FhirError as err:
        raise _located(err, index) from None


def _parse_entry(index: int, raw: Any, fhir_base: str) -> _Entry:
    if not isinstance(raw, dict) or not isinstance(raw.get("request"), dict):
        raise Invalid("each entry needs a request (method and url)", code="structure")
    request = raw["request"]
    method = str(request.get("method", "")).upper()
    url = request.get("url")
    if method not in _ORDER or not isinstance(url, str) or not url:
        raise Invalid("entry.request needs a method (GET, POST, PUT, DELETE) and a url")
    relative = url[len(fhir_base) :] if url.startswith(fhir_base) else url
    path_part, _, query_part = relative.lstrip("/").partition("?")
    path = [p for p in path_part.split("/") if p]
    body = raw.get("resource")
    if method in ("POST", "PUT"):
        if not isinstance(body, dict):
            raise Invalid(f"a {method} entry needs a resource")
    else:
        body = None
    full_url = raw.get("fullUrl") if isinstance(raw.get("fullUrl"), str) else None
    for key in ("ifMatch", "ifNoneExist"):
        if key in request and not isinstance(request[key], str):
            raise Invalid(f"entry.request.{key} must be a string", code="structure")
    return _Entry(
        index=index,
        method=method,
        path=path,
        query=parse_qsl(query_part, keep_blank_values=True),
        url=url,
        full_url=full_url,
        body=body,
        if_match=parse_if_match(request.get("ifMatch")),
        if_none_exist=request.get("ifNoneExist"),
    )


def _check_unique_full_urls(entries: list[_Entry]) -> None:
    seen: set[str] = set()
    for e in entries:
        if e.full_url and e.method in ("POST", "PUT"):
            if e.full_url in seen:
                raise _located(Invalid(f"fullUrl {e.full_url!r} appears twice"), e.index)
            seen.add(e.full_url)


def _body(e: _Entry) -> dict[str, Any]:
    if e.body is None:
        raise Invalid(f"a {e.method} entry needs a resource")
    return e.body


def _located(err: FhirError, index: int) -> FhirError:
    if getattr(err, "entry_index", None) is not None:
        return err
    err.entry_index = index  # type: ignore[attr-defined]
    err.extra_issues = tuple(
        Issue(
            code=i.code,
            diagnostics=f"Bundle.entry[{index}]: {i.diagnostics}",
            severity=i.severity,
            expression=(f"Bundle.entry[{index}]", *i.expression),
        )
        for i in err.issues
    )
    return err


def _error_entry(err: FhirError) -> dict[str, Any]:
    return {"response": {"status": _status(err.status), "outcome": err.outcome()}}


def _status(code: int) -> str:
    try:
        return f"{code} {HTTPStatus(code).phrase}"
    except ValueError:
        return str(code)
