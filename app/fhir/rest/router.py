"""Routes of the FHIR API under /fhir, built from one table that the CapabilityStatement reads.

Handlers are thin: authenticate (a dependency), parse, call an interaction, frame the response.
Adding a route here is the only way to make the server claim an interaction in /metadata.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from app.auth.policy import Principal
from app.container import Container
from app.errors import Invalid, PayloadTooLarge
from app.fhir.rest import interactions
from app.fhir.rest.bundles import process_bundle
from app.fhir.rest.interactions import Outcome, outcome_resource
from app.fhir.rest.metadata import capability_statement
from app.fhir.rest.negotiation import (
    check_format,
    fhir_response,
    parse_if_match,
    parse_json_body,
    prefer_return,
    resource_headers,
    wants_pretty,
)
from app.store.repository import FhirRepository

__all__ = ["ROUTES", "RouteSpec", "build_router"]


def container_of(request: Request) -> Container:
    container: Container = request.app.state.container
    return container


async def get_container(request: Request) -> Container:
    # async: FastAPI runs plain-def dependencies in a worker thread, a hand-off per request
    return container_of(request)


ContainerDep = Annotated[Container, Depends(get_container)]


async def authenticate(request: Request, container: ContainerDep) -> Principal:
    check_format(request.query_params.get("_format"), request.headers.get("accept"))
    return container.validator.authenticate(request.headers.get("authorization"))


PrincipalDep = Annotated[Principal, Depends(authenticate)]


async def get_repository(container: ContainerDep, principal: PrincipalDep) -> FhirRepository:
    return container.repository(principal.policy)


RepoDep = Annotated[FhirRepository, Depends(get_repository)]


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"the request body exceeds the {limit}-byte limit")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the request body exceeds the {limit}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


async def json_body(request: Request, container: Container) -> dict[str, Any]:
    body = await read_body(request, container.settings.max_body_bytes)
    return parse_json_body(request.headers.get("content-type"), body)


def respond(request: Request, outcome: Outcome, *, write: bool = False) -> Response:
    container = container_of(request)
    pretty = wants_pretty(request.query_params.get("_pretty"))
    headers: dict[str, str] = {}
    stored = outcome.resource
    if stored is not None:
        headers.update(resource_headers(stored))
    if outcome.location:
        headers["Location"] = f"{container.settings.fhir_base_url}/{outcome.location}"
    headers.update(outcome.headers)
    if outcome.bundle is not None:
        return fhir_response(outcome.status, outcome.bundle, headers=headers, pretty=pretty)
    if write:
        prefer = prefer_return(request.headers.get("prefer"))
        if prefer == "OperationOutcome":
            status = 200 if outcome.status == 204 else outcome.status
            body = outcome_resource(outcome.message or "ok")
            return fhir_response(status, body, headers=headers, pretty=pretty)
        if prefer == "minimal" or stored is None:
            return fhir_response(outcome.status, None, headers=headers)
    if stored is None or stored.content is None:
        return fhir_response(outcome.status, None, headers=headers)
    return fhir_response(outcome.status, stored.content, headers=headers, pretty=pretty)


def _query(request: Request) -> list[tuple[str, str]]:
    return parse_qsl(request.url.query, keep_blank_values=True)


def _paging(container: Container) -> dict[str, Any]:
    s = container.settings
    return {
        "fhir_base": s.fhir_base_url,
        "default_count": s.default_page_size,
        "max_count": s.max_page_size,
    }


# ---- handlers --------------------------------------------------------------------------------


async def metadata(request: Request) -> Response:
    check_format(request.query_params.get("_format"), request.headers.get("accept"))
    container = container_of(request)
    statement = capability_statement(ROUTES, container.settings)
    return fhir_response(200, statement, pretty=wants_pretty(request.query_params.get("_pretty")))


async def read(request: Request, repo: RepoDep, type: str, id: str) -> Response:
    outcome = await interactions.read(repo, type, id)
    stored = outcome.resource
    if stored is not None and request.headers.get("if-none-match") == stored.etag:
        return fhir_response(304, None, headers=resource_headers(stored))
    return respond(request, outcome)


async def vread(request: Request, repo: RepoDep, type: str, id: str, vid: str) -> Response:
    return respond(request, await interactions.vread(repo, type, id, vid))


async def create(request: Request, repo: RepoDep, container: ContainerDep, type: str) -> Response:
    interactions.check_type(type)
    body = await json_body(request, container)
    outcome = await interactions.create(
        repo, type, body, if_none_exist=request.headers.get("if-none-exist")
    )
    return respond(request, outcome, write=True)


async def update(
    request: Request, repo: RepoDep, container: ContainerDep, type: str, id: str
) -> Response:
    interactions.check_type(type)
    body = await json_body(request, container)
    if_match = parse_if_match(request.headers.get("if-match"))
    outcome = await interactions.update(repo, type, id, body, if_match=if_match)
    return respond(request, outcome, write=True)


async def conditional_update(
    request: Request, repo: RepoDep, container: ContainerDep, type: str
) -> Response:
    interactions.check_type(type)
    query = [(k, v) for k, v in _query(request) if k not in ("_format", "_pretty")]
    if not query:
        raise Invalid("PUT on a type needs search criteria (conditional update)")
    body = await json_body(request, container)
    if_match = parse_if_match(request.headers.get("if-match"))
    outcome = await interactions.conditional_update(repo, type, query, body, if_match=if_match)
    return respond(request, outcome, write=True)


async def delete(request: Request, repo: RepoDep, type: str, id: str) -> Response:
    return respond(request, await interactions.delete(repo, type, id), write=True)


async def search(request: Request, repo: RepoDep, container: ContainerDep, type: str) -> Response:
    outcome = await interactions.search(repo, type, _query(request), **_paging(container))
    return respond(request, outcome)


async def search_post(
    request: Request, repo: RepoDep, container: ContainerDep, type: str
) -> Response:
    media = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    if media != "application/x-www-form-urlencoded":
        raise Invalid("POST _search takes an application/x-www-form-urlencoded body")
    body = await read_body(request, container.settings.max_body_bytes)
    try:
        form = parse_qsl(body.decode(), keep_blank_values=True)
    except UnicodeDecodeError:
        raise Invalid("the form body is not UTF-8") from None
    query = _query(request) + form
    return respond(request, await interactions.search(repo, type, query, **_paging(container)))


async def history_instance(
    request: Request, repo: RepoDep, container: ContainerDep, type: str, id: str
) -> Response:
    outcome = await interactions.history(repo, type, id, _query(request), **_paging(container))
    return respond(request, outcome)


async def history_type(
    request: Request, repo: RepoDep, container: ContainerDep, type: str
) -> Response:
    outcome = await interactions.history(repo, type, None, _query(request), **_paging(container))
    return respond(request, outcome)


async def history_system(request: Request, repo: RepoDep, container: ContainerDep) -> Response:
    outcome = await interactions.history(repo, None, None, _query(request), **_paging(container))
    return respond(request, outcome)


async def bundle(request: Request, repo: RepoDep, container: ContainerDep) -> Response:
    body = await json_body(request, container)
    s = container.settings
    result = await process_bundle(
        repo,
        body,
        fhir_base=s.fhir_base_url,
        max_entries=s.max_bundle_entries,
        prefer=prefer_return(request.headers.get("prefer")),
        default_count=s.default_page_size,
        max_count=s.max_page_size,
    )
    return fhir_response(200, result, pretty=wants_pretty(request.query_params.get("_pretty")))


# ---- the route table -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RouteSpec:
    method: str
    path: str
    endpoint: Callable[..., Awaitable[Response]]
    interaction: str | None  # CapabilityStatement interaction code
    level: str  # "system", "type" or "instance"


# Order matters: literal segments (_history, _search, metadata) before {id}.
ROUTES: tuple[RouteSpec, ...] = (
    RouteSpec("GET", "/metadata", metadata, "capabilities", "system"),
    RouteSpec("POST", "", bundle, "transaction", "system"),
    RouteSpec("POST", "", bundle, "batch", "system"),
    RouteSpec("GET", "/_history", history_system, "history-system", "system"),
    RouteSpec("GET", "/{type}/_history", history_type, "history-type", "type"),
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


def build_router() -> APIRouter:
    router = APIRouter(prefix="/fhir")
    seen: set[tuple[str, str]] = set()
    for spec in ROUTES:
        if (spec.method, spec.path) in seen:
            continue  # one route serves both transaction and batch
        seen.add((spec.method, spec.path))
        for path in (spec.path, "/") if spec.path == "" else (spec.path,):
            router.add_api_route(
                path,
                spec.endpoint,
                methods=[spec.method],
                response_class=Response,
                include_in_schema=path == spec.path,
                name=f"{spec.method.lower()}:{spec.interaction}:{path}",
            )
    return router
