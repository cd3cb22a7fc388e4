"""HTTP endpoints of the authorization server (mounted by app.main on the FastAPI app).

    GET      /.well-known/smart-configuration        discovery (also under /fhir/)
    POST     /auth/token                             RFC 6749 token endpoint
    POST     /auth/introspect                        RFC 7662 (caller presents a Bearer token)
    POST     /auth/revoke                            RFC 7009 (caller authenticates as a client)
    GET|POST /auth/authorize, /auth/authorize/login, /auth/authorize/consent   app launch

Handlers are thin: parse the form, call the TokenService / AuthorizeFlow, frame the answer.
OAuth errors are JSON per RFC 6749 5.2, with `Cache-Control: no-store` on every token answer.
Token-endpoint decisions are audited like FHIR requests (interaction `token`).
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from app.audit.recorder import AuditEntry
from app.auth.discovery import smart_configuration
from app.auth.launch import AuthorizeFlow, Page, Redirect
from app.auth.oauth_errors import OAuthError
from app.auth.pages import error_page
from app.container import Container
from app.errors import Unauthenticated
from app.fhir.rest.negotiation import fhir_response

__all__ = ["router"]

log = logging.getLogger("dxf.auth")
router = APIRouter(include_in_schema=False)

_MAX_FORM_BYTES = 64 * 1024
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
_PAGE_HEADERS = {
    **_NO_STORE,
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


def _container(request: Request) -> Container:
    return request.app.state.container  # type: ignore[no-any-return]


async def _form(request: Request) -> dict[str, str]:
    """An application/x-www-form-urlencoded body; a parameter given twice is refused."""
    media = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    if media != "application/x-www-form-urlencoded":
        raise OAuthError("invalid_request", "the body must be application/x-www-form-urlencoded")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > _MAX_FORM_BYTES:
            raise OAuthError("invalid_request", "the request body is too large")
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        raise OAuthError("invalid_request", "the body is not UTF-8") from None
    form: dict[str, str] = {}
    for name, value in pairs:
        if name in form:
            raise OAuthError("invalid_request", f"parameter {name!r} is given more than once")
        form[name] = value
    return form


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return fhir_response(status, body, headers={**_NO_STORE, **(headers or {})})


def _oauth_error(error: OAuthError) -> Response:
    return _json(error.status, error.as_json())


@router.get("/.well-known/smart-configuration")
@router.get("/fhir/.well-known/smart-configuration")
async def discovery(request: Request) -> Response:
    body = smart_configuration(_container(request).settings)
    return fhir_response(
        200, body, headers={"Access-Control-Allow-Origin": "*", "Cache-Control": "max-age=300"}
    )


@router.post("/auth/token")
async def token(request: Request) -> Response:
    container = _container(request)
    form: dict[str, str] = {}
    body: dict[str, Any] | None = None
    failure: OAuthError | None = None
    try:
        form = await _form(request)
        body = await container.tokens.token(form)
    except OAuthError as error:
        failure = error
    try:
        await _audit_token(request, container, form, failure=failure, body=body)
    except Exception as exc:  # noqa: BLE001 - no audit row, no token
        log.error("audit record not written", extra={"error": type(exc).__name__})
        failure = OAuthError("temporarily_unavailable", "the audit log is unavailable", status=503)
    if failure is not None or body is None:
        return _oauth_error(failure or OAuthError("server_error", "no token", status=500))
    return _json(200, body)


async def _audit_token(
    request: Request,
    container: Container,
    form: dict[str, str],
    *,
    failure: OAuthError | None,
    body: dict[str, Any] | None,
) -> None:
    """Audit a token decision: the client, the user, the patient in context, the outcome."""
    client_id, subject = form.get("client_id"), None
    if body is not None:
        claims = container.validator.authenticate(f"Bearer {body['access_token']}").claims
        client_id, subject = str(claims.get("client_id")), str(claims.get("sub"))
    entry = AuditEntry(
        interaction="token",
        status=failure.status if failure else 200,
        client_id=(client_id or "")[:128] or None,
        subject=subject[:200] if subject else None,
        patient=body.get("patient") if body else None,
        search_params=(form.get("grant_type") or "")[:64] or None,
        request_id=request.scope.get("state", {}).get("request_id"),
    )
    await container.audit.record(entry)


@router.post("/auth/introspect")
async def introspect(request: Request) -> Response:
    container = _container(request)
    try:
        await container.authenticate(request.headers.get("authorization"))
    except Unauthenticated as exc:
        return _json(
            401,
            {"error": "invalid_token", "error_description": exc.diagnostics},
            headers=exc.headers,
        )
    try:
        form = await _form(request)
    except OAuthError as error:
        return _oauth_error(error)
    return _json(200, await container.tokens.introspect(form.get("token", "")))


@router.post("/auth/revoke")
async def revoke(request: Request) -> Response:
    container = _container(request)
    try:
        form = await _form(request)
        client = await container.tokens.authenticate_client(form)
        await container.tokens.revoke(client, form.get("token", ""))
    except OAuthError as error:
        return _oauth_error(error)
    return Response(status_code=200, headers=_NO_STORE)


def _flow(container: Container) -> AuthorizeFlow:
    return AuthorizeFlow(
        settings=container.settings,
        keys=container.keys,
        clients=container.clients,
        users=container.users,
        tokens=container.tokens,
        repository=container.repository,
        throttle=container.login_throttle,
    )


def _answer(result: Page | Redirect) -> Response:
    if isinstance(result, Redirect):
        return RedirectResponse(result.url, status_code=302, headers=_NO_STORE)
    return HTMLResponse(result.html, status_code=result.status, headers=_PAGE_HEADERS)


@router.get("/auth/authorize")
async def authorize_get(request: Request) -> Response:
    params = dict(request.query_params)
    return _answer(await _flow(_container(request)).start(params))


@router.post("/auth/authorize")
async def authorize_post(request: Request) -> Response:
    try:
        form = await _form(request)
    except OAuthError as error:
        return _answer(Page(400, error_page(error.description)))
    return _answer(await _flow(_container(request)).start(form))


@router.post("/auth/authorize/login")
async def authorize_login(request: Request) -> Response:
    try:
        form = await _form(request)
    except OAuthError as error:
        return _answer(Page(400, error_page(error.description)))
    return _answer(await _flow(_container(request)).login(form))


@router.post("/auth/authorize/consent")
async def authorize_consent(request: Request) -> Response:
    try:
        form = await _form(request)
    except OAuthError as error:
        return _answer(Page(400, error_page(error.description)))
    return _answer(await _flow(_container(request)).consent(form))
