"""Routes of the FHIR API under /fhir, served from one table that the CapabilityStatement reads.

The FHIR API is its own small ASGI application (`FhirRouter`) rather than a set of FastAPI
routes: matching a path by segments and calling the handler directly costs a fraction of
FastAPI's routing and dependency solving, which measured as most of a read's server time.
Every route but /metadata authenticates before anything else happens, so an unauthenticated
caller learns nothing (not even whether a resource type exists), and every such request,
answered or refused, is written to the audit log (app/audit) before its answer is sent.

Handlers are thin: parse, call an interaction, frame the response. Adding a route here is the
only way to make the server claim an interaction in /metadata.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from app.adapters.base import FEDERATED_HOP_HEADER
from app.audit import api as audit_api
from app.audit.recorder import InWriteAudit, entry_for_request
from app.container import Container
from app.errors import (
    FhirError,
    Invalid,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    Unavailable,
)
from app.federation.federator import Federator
from app.fhir.rest import interactions
from app.fhir.rest.bundles import process_bundle
from app.fhir.rest.interactions import Outcome, outcome_resource
from app.fhir.rest.metadata import capability_statement
from app.fhir.rest.negotiation import (
    check_format,
    fhir_response,
    parse_if_match,
    parse_json_body,
    prefer_lenient,
    prefer_return,
    resource_headers,
    wants_pretty,
)
from app.store.repository import FhirRepository

__all__ = ["ROUTES", "FhirRouter", "RouteSpec", "render_error"]

PREFIX = "/fhir"
log = logging.getLogger("dxf.audit")


@dataclass(slots=True)
class Ctx:
    """One request: the HTTP request, the long-lived components, the caller's repository."""

    request: Request
    container: Container
    repo: FhirRepository

    def query(self) -> list[tuple[str, str]]:
        pairs = parse_qsl(self.request.url.query, keep_blank_values=True)
        if any("\x00" in k or "\x00" in v for k, v in pairs):
            raise Invalid("query parameters may not contain the NUL character")
        return pairs

    def paging(self) -> dict[str, Any]:
        s = self.container.settings
        return {
            "fhir_base": s.fhir_base_url,
            "default_count": s.default_page_size,
            "max_count": s.max_page_size,
        }

    def federator(self) -> Federator | None:
        """None for a request that is itself a federated call (FEDERATED_HOP_HEADER): two
        dxf-bridge servers registered with each other must not ask each other in a loop."""
        if self.request.headers.get(FEDERATED_HOP_HEADER):
            return None
        return self.container.federator

    def federation(self) -> dict[str, Any]:
        return {
            "federator": self.federator(),
            "federate_default": self.container.settings.federate_default,
        }

    async def body(self) -> bytes:
        limit = self.container.settings.max_body_bytes
        declared = self.request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise PayloadTooLarge(f"the request body exceeds the {limit}-byte limit")
        chunks, size = [], 0
        async for chunk in self.request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"the request body exceeds the {limit}-byte limit")
            chunks.append(chunk)
        return b"".join(chunks)

    async def json(self) -> dict[str, Any]:
        return parse_json_body(self.request.headers.get("content-type"), await self.body())

    def respond(self, outcome: Outcome, *, write: bool = False) -> Response:
        pretty = wants_pretty(self.request.query_params.get("_pretty"))
        headers: dict[str, str] = {}
        stored = outcome.resource
        if stored is not None:
            headers.update(resource_headers(stored))
        if outcome.location:
            headers["Location"] = f"{self.container.settings.fhir_base_url}/{outcome.location}"
        headers.update(outcome.headers)
        if outcome.bundle is not None:
            return fhir_response(outcome.status, outcome.bundle, headers=headers, pretty=pretty)
        if write:
            prefer = prefer_return(self.request.headers.get("prefer"))
            if prefer == "OperationOutcome":
                status = 200 if outcome.status == 204 else outcome.status
                body = outcome_resource(outcome.message or "ok")
                return fhir_response(status, body, headers=headers, pretty=pretty)
            if prefer == "minimal" or stored is None:
                return fhir_response(outcome.status, None, headers=headers)
        if stored is None or stored.content is None:
            return fhir_response(outcome.status, None, headers=headers)
        return fhir_response(outcome.status, stored.content, headers=headers, pretty=pretty)


# ---- handlers --------------------------------------------------------------------------------


async def read(ctx: Ctx, type: str, id: str) -> Response:
    outcome = await interactions.read(ctx.repo, type, id)
    stored = outcome.resource
    if stored is not None and ctx.request.headers.get("if-none-match") == stored.etag:
        return fhir_response(304, None, headers=resource_headers(stored))
    return ctx.respond(outcome)


async def vread(ctx: Ctx, type: str, id: str, vid: str) -> Response:
    return ctx.respond(await interactions.vread(ctx.repo, type, id, vid))


async def create(ctx: Ctx, type: str) -> Response:
    interactions.check_type(type)
    body = await ctx.json()
    if_none_exist = ctx.request.headers.get("if-none-exist")
    outcome = await interactions.create(ctx.repo, type, body, if_none_exist=if_none_exist)
    return ctx.respond(outcome, write=True)


async def update(ctx: Ctx, type: str, id: str) -> Response:
    interactions.check_type(type)
    body = await ctx.json()
    if_match = parse_if_match(ctx.request.headers.get("if-match"))
    outcome = await interactions.update(ctx.repo, type, id, body, if_match=if_match)
    return ctx.respond(outcome, write=True)


async def conditional_update(ctx: Ctx, type: str) -> Response:
    interactions.check_type(type)
    query = [(k, v) for k, v in ctx.query() if k not in ("_format", "_pretty")]
    if not query:
        raise Invalid("PUT on a type needs search criteria (conditional update)")
    body = await ctx.json()
    if_match = parse_if_match(ctx.request.headers.get("if-match"))
    outcome = await interactions.conditional_update(ctx.repo, type, query, body, if_match=if_match)
    return ctx.respond(outcome, write=True)


async def delete(ctx: Ctx, type: str, id: str) -> Response:
    return ctx.respond(await interactions.delete(ctx.repo, type, id), write=True)


async def search(ctx: Ctx, type: str) -> Response:
    lenient = prefer_lenient(ctx.request.headers.get("prefer"))
    outcome = await interactions.search(
        ctx.repo, type, ctx.query(), lenient=lenient, federator=ctx.federator(), **ctx.paging()
    )
    return ctx.respond(outcome)


async def search_post(ctx: Ctx, type: str) -> Response:
    media = (ctx.request.headers.get("content-type") or "").split(";")[0].strip().lower()
    if media != "application/x-www-form-urlencoded":
        raise Invalid("POST _search takes an application/x-www-form-urlencoded body")
    try:
        form = parse_qsl((await ctx.body()).decode(), keep_blank_values=True)
    except UnicodeDecodeError:
        raise Invalid("the form body is not UTF-8") from None
    lenient = prefer_lenient(ctx.request.headers.get("prefer"))
    outcome = await interactions.search(
        ctx.repo,
        type,
        ctx.query() + form,
        lenient=lenient,
        federator=ctx.federator(),
        **ctx.paging(),
    )
    return ctx.respond(outcome)


async def everything_instance(ctx: Ctx, id: str) -> Response:
    outcome = await interactions.everything(
        ctx.repo, id, ctx.query(), **ctx.federation(), **ctx.paging()
    )
    return ctx.respond(outcome)


async def everything_type(ctx: Ctx) -> Response:
    outcome = await interactions.everything(
        ctx.repo, None, ctx.query(), **ctx.federation(), **ctx.paging()
    )
    return ctx.respond(outcome)


async def match(ctx: Ctx) -> Response:
    body = await ctx.json()
    outcome = await interactions.match(
        ctx.repo,
        body,
        fhir_base=ctx.container.settings.fhir_base_url,
        max_count=ctx.container.settings.max_page_size,
    )
    return ctx.respond(outcome)


async def history_instance(ctx: Ctx, type: str, id: str) -> Response:
    return ctx.respond(await interactions.history(ctx.repo, type, id, ctx.query(), **ctx.paging()))


async def history_type(ctx: Ctx, type: str) -> Response:
    outcome = await interactions.history(ctx.repo, type, None, ctx.query(), **ctx.paging())
    return ctx.respond(outcome)


async def history_system(ctx: Ctx) -> Response:
    outcome = await interactions.history(ctx.repo, None, None, ctx.query(), **ctx.paging())
    return ctx.respond(outcome)


async def bundle(ctx: Ctx) -> Response:
    body = await ctx.json()
    s = ctx.container.settings
    result = await process_bundle(
        ctx.repo,
        body,
        fhir_base=s.fhir_base_url,
        max_entries=s.max_bundle_entries,
        prefer=prefer_return(ctx.request.headers.get("prefer")),
        default_count=s.default_page_size,
        max_count=s.max_page_size,
    )
    pretty = wants_pretty(ctx.request.query_params.get("_pretty"))
    return fhir_response(200, result, pretty=pretty)


async def audit_read(ctx: Ctx, id: str) -> Response:
    event = await audit_api.read_audit_event(ctx.container.db, ctx.repo.policy, id)
    return fhir_response(200, event, pretty=wants_pretty(ctx.request.query_params.get("_pretty")))


async def audit_search(ctx: Ctx) -> Response:
    bundle = await audit_api.search_audit_events(
        ctx.container.db, ctx.repo.policy, ctx.query(), **ctx.paging()
    )
    return fhir_response(200, bundle, pretty=wants_pretty(ctx.request.query_params.get("_pretty")))


async def metadata(request: Request, container: Container) -> Response:
    check_format(request.query_params.get("_format"), request.headers.get("accept"))
    statement = capability_statement(ROUTES, container.settings)
    return fhir_response(200, statement, pretty=wants_pretty(request.query_params.get("_pretty")))


# ---- the route table -------------------------------------------------------------------------


# single-resource writes whose audit record goes into the write's transaction (InWriteAudit)
_WRITES_AUDITED_IN_WRITE = frozenset({"create", "update"})


@dataclass(frozen=True, slots=True)
class RouteSpec:
    method: str
    path: str
    endpoint: Callable[..., Awaitable[Response]]
    interaction: str | None  # CapabilityStatement interaction code
    level: str  # "system", "type" or "instance"
    operation: str | None = None  # e.g. "everything", for Patient/$everything

    @property
    def segments(self) -> tuple[str, ...]:
        return tuple(p for p in self.path.split("/") if p)


# Order matters: literal segments (_history, _search, metadata) before {id}.
ROUTES: tuple[RouteSpec, ...] = (
    RouteSpec("GET", "/metadata", metadata, "capabilities", "system"),
    RouteSpec("POST", "", bundle, "transaction", "system"),
    RouteSpec("POST", "", bundle, "batch", "system"),
    RouteSpec("GET", "/_history", history_system, "history-system", "system"),
    # AuditEvents come from the audit log (app/audit), not from the resource store
    RouteSpec("GET", "/AuditEvent", audit_search, "search-type", "type"),
    RouteSpec("GET", "/AuditEvent/{id}", audit_read, "read", "instance"),
    RouteSpec("GET", "/{type}/_history", history_type, "history-type", "type"),
    RouteSpec("GET", "/Patient/$everything", everything_type, None, "type", "everything"),
    RouteSpec(
        "GET", "/Patient/{id}/$everything", everything_instance, None, "instance", "everything"
    ),
    RouteSpec("POST", "/Patient/$match", match, None, "type", "match"),
    RouteSpec("POST", "/{type}/_search", search_post, "search-type", "type"),
    RouteSpec("GET", "/{type}/{id}/_history/{vid}", vread, "vread", "instance"),
    RouteSpec("GET", "/{type}/{id}/_history", history_instance, "history-instance", "instance"),
    RouteSpec("GET", "/{type}", search, "search-type", "type"),
    RouteSpec("POST", "/{type}", create, "create", "type"),
    RouteSpec("PUT", "/{type}", conditional_update, "update", "type"),
    RouteSpec("GET", "/{type}/{id}", read, "read", "instance"),
    RouteSpec("PUT", "/{type}/{id}", update, "update", "instance"),
    RouteSpec("DELETE", "/{type}/{id}", delete, "delete", "instance"),
)


def _match(segments: tuple[str, ...], parts: list[str]) -> dict[str, str] | None:
    if len(segments) != len(parts):
        return None
    params: dict[str, str] = {}
    for pattern, part in zip(segments, parts, strict=True):
        if pattern.startswith("{"):
            if part.startswith(("_", "$")):
                return None  # reserved words are never a type or an id
            params[pattern[1:-1]] = part
        elif pattern != part:
            return None
    return params


def render_error(error: FhirError) -> Response:
    return fhir_response(error.status, error.outcome(), headers=error.headers)


class FhirRouter:
    """ASGI application serving the FHIR API under /fhir."""

    def __init__(self, container: Callable[[], Container]) -> None:
        self._container = container
        self._routes = [(spec, spec.segments) for spec in ROUTES]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            response = await self._dispatch(scope, receive)
        except FhirError as error:
            response = render_error(error)
        if "dxf.audit" in scope:
            response = await self._audited(scope, response)
        await response(scope, receive, send)

    async def _audited(self, scope: Scope, response: Response) -> Response:
        """Record the request in the audit log before answering; no record, no answer (503)."""
        interaction, params, principal = scope["dxf.audit"]
        in_write: InWriteAudit | None = scope.get("dxf.audit.in_write")
        if in_write is not None and in_write.recorded == response.status_code:
            return response  # recorded in the write's own transaction
        entry = entry_for_request(
            scope,
            interaction=interaction,
            params=params,
            principal=principal,
            status=response.status_code,
        )
        try:
            await self._container().audit.record(entry, body=bytes(response.body))
        except Exception as exc:  # noqa: BLE001 - any failure to audit withholds the answer
            log.error("audit record not written", extra={"error": type(exc).__name__})
            return render_error(Unavailable("the audit record could not be written; retry later"))
        return response

    async def _dispatch(self, scope: Scope, receive: Receive) -> Response:
        path: str = scope["path"][len(PREFIX) :]
        parts = [unquote(p) for p in path.split("/") if p]
        method = scope["method"]
        if method == "HEAD":
            method = "GET"
        allowed = False
        for spec, segments in self._routes:
            params = _match(segments, parts)
            if params is None:
                continue
            allowed = True
            if spec.method != method:
                continue
            scope["dxf.route"] = PREFIX + spec.path
            container = self._container()
            request = Request(scope, receive)
            if spec.endpoint is metadata:
                return await metadata(request, container)
            check_format(request.query_params.get("_format"), request.headers.get("accept"))
            scope["dxf.audit"] = (spec.interaction or method, params, None)
            principal = await container.authenticate(request.headers.get("authorization"))
            scope["dxf.audit"] = (spec.interaction or method, params, principal)
            repo = container.repository(principal.policy)
            if spec.interaction in _WRITES_AUDITED_IN_WRITE:
                base = entry_for_request(
                    scope,
                    interaction=spec.interaction,
                    params=params,
                    principal=principal,
                    status=0,
                )
                repo.commit_record = scope["dxf.audit.in_write"] = InWriteAudit(
                    container.audit, base
                )
            return await spec.endpoint(Ctx(request, container, repo), **params)
        if allowed:
            raise MethodNotAllowed(f"{scope['method']} is not supported on {scope['path']}")
        raise NotFound(f"no FHIR interaction is served at {scope['path']}")
