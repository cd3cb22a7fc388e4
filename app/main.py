"""create_app(settings): the ASGI application, wired explicitly from validated settings."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy import text
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import __version__
from app.admin.intermediaries import router as admin_router
from app.auth.cors import CorsMiddleware
from app.auth.web import router as auth_router
from app.container import Container, build_container
from app.errors import (
    FhirError,
    Forbidden,
    Invalid,
    Issue,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    Unavailable,
    operation_outcome,
)
from app.fhir.rest.negotiation import fhir_response
from app.fhir.rest.router import FhirRouter, render_error
from app.hl7.mapping import WRITTEN_TYPES
from app.logging import access_log
from app.settings import Settings

__all__ = ["create_app"]

log = logging.getLogger("dxf.http")


class DxfApp:
    """The ASGI application: the FHIR router answers under /fhir, FastAPI serves the rest
    (discovery documents, the authorization server, health). One request-log middleware and
    the CORS middleware (app/auth/cors.py) wrap both."""

    def __init__(self, api: FastAPI) -> None:
        self.api = api
        self.fhir = FhirRouter(lambda: api.state.container)
        cors = CorsMiddleware(self._dispatch, lambda: api.state.container.clients.origins())
        self._app = RequestLogMiddleware(cors)

    @property
    def state(self) -> Any:
        return self.api.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._app(scope, receive, send)

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if path.startswith("/fhir/.well-known/"):
            await self.api(scope, receive, send)  # SMART discovery, served without a token
        elif scope["type"] == "http" and (path == "/fhir" or path.startswith("/fhir/")):
            await self.fhir(scope, receive, send)
        else:
            await self.api(scope, receive, send)


def app_from_environment() -> DxfApp:
    """The app built from DXF_* settings alone: what each `serve --workers N` process runs."""
    from app.logging import configure_logging

    settings = Settings()
    configure_logging(settings.log_level)
    return create_app(settings)


def create_app(settings: Settings, container: Container | None = None) -> DxfApp:
    """Build the API. With no container given, one is built at startup and closed at shutdown."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = app.state.container is None
        if owned:
            app.state.container = build_container(settings)
        dispatcher = None
        if settings.events_enabled:
            dispatcher = app.state.container.events()
            dispatcher.start()
            log.info("event dispatcher started", extra={"route": "events"})
        listener = None
        if settings.mllp_enabled:
            from app.hl7.mllp import MllpServer

            listener = MllpServer(app.state.container.hl7(), settings)
            await listener.start()
            app.state.mllp = listener
            log.info("mllp listener started", extra={"route": f"mllp:{listener.port}"})
        checks = _start_intermediary_checks(app.state.container, settings)
        try:
            yield
        finally:
            if checks is not None:
                await _stop(checks)
            if listener is not None:
                await listener.close()
            if dispatcher is not None:
                await dispatcher.stop()
            if owned:
                await app.state.container.close()

    app = FastAPI(
        title="dxf-bridge",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,  # the FHIR API is described by /fhir/metadata
    )
    app.state.container = container

    @app.get("/.well-known/jwks.json", include_in_schema=False)
    async def jwks(request: Request) -> Response:
        keys = request.app.state.container.keys.public_jwks()
        return fhir_response(200, keys, headers={"Cache-Control": "max-age=300"})

    @app.get("/healthz", include_in_schema=False)
    async def healthz(request: Request) -> Response:
        """Liveness and readiness: answers 200 only when the database answers. No data, no token."""
        try:
            async with request.app.state.container.db.read() as conn:
                await conn.execute(text("SELECT 1"))
        except Exception as exc:  # noqa: BLE001 - any failure means not ready
            log.warning("health check failed", extra={"error": type(exc).__name__})
            return fhir_response(503, {"status": "database unavailable"})
        return fhir_response(200, {"status": "ok"})

    @app.post("/hl7v2", include_in_schema=False)
    async def hl7v2(request: Request) -> Response:
        """One ER7 message in, its ACK out (the same path as MLLP: journal, map, commit, ACK).
        Needs a token whose system/user scopes let it create and update every type the
        mapping writes."""
        container = request.app.state.container
        principal = await container.authenticate(request.headers.get("authorization"))
        for rtype in WRITTEN_TYPES:
            for perm in ("c", "u"):
                if principal.policy.restriction(rtype, perm) is not None:
                    raise Forbidden("HL7v2 ingestion needs system- or user-level write scopes")
        limit = min(settings.mllp_max_message_bytes, settings.max_body_bytes)
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise PayloadTooLarge(f"the message exceeds {limit} bytes")
        result = await container.hl7().handle(bytes(body), "http")
        return Response(
            content=result.ack_bytes, status_code=200, media_type="x-application/hl7-v2+er7"
        )

    app.include_router(auth_router)
    app.include_router(admin_router)
    _install_error_handlers(app)
    return DxfApp(app)


def _start_intermediary_checks(
    container: Container, settings: Settings
) -> tuple[asyncio.Task[None], asyncio.Event] | None:
    """The scheduled re-check of registered intermediaries (app/adapters/checks.py), every
    DXF_INTERMEDIARY_CHECK_INTERVAL seconds; 0 turns it off."""
    interval = settings.intermediary_check_interval
    if interval <= 0:
        return None
    from app.adapters.checks import run_periodic_checks

    stop = asyncio.Event()
    checker = container.intermediaries().checker
    return asyncio.create_task(run_periodic_checks(checker, interval, stop)), stop


async def _stop(checks: tuple[asyncio.Task[None], asyncio.Event]) -> None:
    task, stop = checks
    stop.set()
    task.cancel()  # a round in progress is abandoned; its finished checks are recorded
    with contextlib.suppress(asyncio.CancelledError):
        await task


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(FhirError)
    async def _fhir_error(_request: Request, exc: FhirError) -> Response:
        return render_error(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404:
            return render_error(NotFound(f"no FHIR interaction is served at {request.url.path}"))
        if exc.status_code == 405:
            err = MethodNotAllowed(f"{request.method} is not supported on {request.url.path}")
            return render_error(err)
        err = FhirError(str(exc.detail))
        err.status = exc.status_code
        return render_error(err)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        return render_error(Invalid(f"malformed request: {first.get('msg', 'invalid')}"))


def _is_db_outage(exc: Exception) -> bool:
    """SQLAlchemy's connection errors, and asyncpg's own from the point-read pool: lost
    connections (class 08) and operator intervention (57: shutting down, starting up)."""
    from asyncpg import InterfaceError as PgInterfaceError
    from asyncpg import PostgresConnectionError
    from asyncpg.exceptions import OperatorInterventionError
    from sqlalchemy.exc import InterfaceError, OperationalError

    if isinstance(exc, OperationalError) and not exc.connection_invalidated:
        # SQLite reports statement problems ("too many SQL variables") as OperationalError too:
        # only a lock, a missing file or a lost connection is an outage.
        text = str(exc.orig).lower()
        words = (
            "locked",
            "busy",
            "unable to open",
            "connect",
            "refused",
            "closed",
            "i/o",
            "timeout",
        )
        return any(word in text for word in words)
    return isinstance(
        exc,
        (
            OperationalError,
            InterfaceError,
            ConnectionError,
            PostgresConnectionError,
            OperatorInterventionError,
            PgInterfaceError,
        ),
    )


async def _send_unexpected(
    exc: Exception, request_id: str, *, started_response: bool, send: Send
) -> int:
    """Answer an unhandled exception with an OperationOutcome. Only the exception's type is
    logged: messages can quote stored data."""
    outage = _is_db_outage(exc)
    log.error(
        "database unavailable" if outage else "unhandled error",
        extra={"request_id": request_id, "error": type(exc).__name__},
    )
    if started_response:
        return 500
    if outage:
        response = render_error(Unavailable("the database is unavailable; retry later"))
    else:
        body = operation_outcome(
            [Issue(code="exception", diagnostics=f"internal error (request {request_id})")]
        )
        response = fhir_response(500, body)
    await response({"type": "http"}, _no_receive, send)
    return response.status_code


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}


class RequestLogMiddleware:
    """Request id + one JSON log line per request: method, route template, status, duration."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = uuid.uuid4().hex[:16]
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = 500  # until a response starts
        response_started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                headers: list[Any] = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception as exc:  # noqa: BLE001 - the last line of defence; logs no message text
            status = await _send_unexpected(
                exc, request_id, started_response=response_started, send=send_wrapper
            )
        finally:
            route = scope.get("dxf.route") or getattr(scope.get("route"), "path", None)
            access_log(
                request_id=request_id,
                method=scope["method"],
                route=route or "(unrouted)",
                status=status,
                started=started,
            )
