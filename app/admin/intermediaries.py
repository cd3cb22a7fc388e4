"""The intermediary registry over HTTP, for callers with the admin scope.

    GET   /admin/intermediaries                 every registration: status, last check
    POST  /admin/intermediaries                 register (and check, unless "check": false)
    GET   /admin/intermediaries/kinds           the adapter kinds (app/adapters/qhios.toml)
    GET   /admin/intermediaries/{name}          one registration and its recent checks
    POST  /admin/intermediaries/{name}/check    check now; the outcome is recorded
    POST  /admin/intermediaries/{name}/disable  status off: no adapter is handed out
    POST  /admin/intermediaries/{name}/enable   back to unchecked until the next check

The Organization and Endpoint are ordinary FHIR resources (`/fhir/Organization`,
`/fhir/Endpoint`; writing an Endpoint needs the admin scope too), so a registration can also
start over FHIR REST and be attached here with `"endpoint": "Endpoint/{id}"`. Credentials go
in (`auth`), never out: no answer, error text, audit row or log line carries them. Every call
is audited (interaction `registry-*`, the Endpoint as the resource). Errors are
OperationOutcomes, like the FHIR API's.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from app.adapters.config import EndpointCredentials
from app.adapters.profiles import load_profiles, parse_setting
from app.adapters.registry import DuplicateRegistration, Registration
from app.audit.recorder import AuditEntry
from app.auth.policy import Principal
from app.auth.scopes import ADMIN_SCOPE
from app.container import Container
from app.errors import Conflict, Forbidden, Invalid, NotFound, PayloadTooLarge

__all__ = ["router"]

router = APIRouter(prefix="/admin/intermediaries", include_in_schema=False)

_MAX_BODY = 64 * 1024
_AUTH_FIELDS = {
    "method": "auth_method",
    "clientId": "client_id",
    "tokenUrl": "token_url",
    "keyFile": "key_file",
    "scope": "scope",
    "cert": "cert_file",
    "certKey": "cert_key_file",
    "caFile": "ca_file",
}


def _json(status: int, body: Any) -> Response:
    return Response(
        orjson.dumps(body),
        status_code=status,
        media_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


async def _admin(request: Request) -> tuple[Container, Principal]:
    container: Container = request.app.state.container
    principal = await container.authenticate(request.headers.get("authorization"))
    if not principal.policy.admin:
        await _audit(request, container, principal, "registry-read", 403, None)
        raise Forbidden(f"the intermediary registry needs the {ADMIN_SCOPE} scope")
    return container, principal


async def _audit(
    request: Request,
    container: Container,
    principal: Principal | None,
    interaction: str,
    status: int,
    endpoint_id: str | None,
) -> None:
    await container.audit.record(
        AuditEntry(
            interaction=interaction,
            status=status,
            client_id=principal.client_id[:128] if principal else None,
            subject=principal.subject[:200] if principal else None,
            res_type="Endpoint" if endpoint_id else None,
            res_id=endpoint_id,
            request_id=request.scope.get("state", {}).get("request_id"),
        )
    )


async def _body(request: Request) -> dict[str, Any]:
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > _MAX_BODY:
            raise PayloadTooLarge("the registration is too large")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise Invalid("the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise Invalid("the body must be a JSON object")
    return body


def _credentials(auth: Any) -> EndpointCredentials:
    if auth is None:
        return EndpointCredentials()
    if not isinstance(auth, dict) or set(auth) - set(_AUTH_FIELDS):
        raise Invalid(f"auth is an object with the members {', '.join(_AUTH_FIELDS)}")
    values = {}
    for member, attr in _AUTH_FIELDS.items():
        value = auth.get(member)
        if value is not None and not isinstance(value, str):
            raise Invalid(f"auth.{member} must be a string")
        if value is not None:
            values[attr] = value
    return EndpointCredentials(**values)


def _settings(raw: Any) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise Invalid("settings is an object of name: value")
    out = {}
    for name, value in raw.items():
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, list):
            text = ",".join(map(str, value))
        elif isinstance(value, str | int | float):
            text = str(value)
        else:
            raise Invalid(f"setting {name}: expected a string, number, boolean or list")
        try:
            key, parsed = parse_setting(f"{name}={text}")
        except ValueError as exc:
            raise Invalid(str(exc)) from None
        out[key] = parsed
    return out


def _view(reg: Registration, checks: list[Any] | None = None) -> dict[str, Any]:
    body = reg.as_json()
    if checks is not None:
        body["checks"] = [c.as_json() for c in checks]
    return body


@router.get("")
async def list_intermediaries(request: Request) -> Response:
    container, principal = await _admin(request)
    registrations = await container.intermediaries().registry.list()
    await _audit(request, container, principal, "registry-read", 200, None)
    return _json(200, {"intermediaries": [_view(r) for r in registrations]})


@router.get("/kinds")
async def kinds(request: Request) -> Response:
    container, principal = await _admin(request)
    await _audit(request, container, principal, "registry-read", 200, None)
    out = []
    for profile in load_profiles().values():
        caps = profile.capabilities
        out.append(
            {
                "kind": profile.kind,
                "title": profile.title,
                "qhio": profile.qhio,
                "adapter": profile.adapter,
                "transport": profile.transport,
                "auth": profile.auth,
                "capabilities": {
                    "identifierSearch": caps.identifier_search,
                    "patientMatch": caps.patient_match,
                    "everything": caps.everything,
                    "documentReference": caps.document_reference,
                    "eventChannels": sorted(caps.event_channels),
                },
                "known": profile.known,
                "unknown": profile.unknown,
                "sources": list(profile.sources),
            }
        )
    return _json(200, {"kinds": out})


@router.post("")
async def register(request: Request) -> Response:
    container, principal = await _admin(request)
    body = await _body(request)
    name, kind = body.get("name"), body.get("kind")
    if not isinstance(name, str) or not isinstance(kind, str):
        raise Invalid("name and kind are required strings")
    address, endpoint = body.get("address"), body.get("endpoint")
    endpoint_id = None
    if endpoint is not None:
        if not isinstance(endpoint, str) or not endpoint.startswith("Endpoint/"):
            raise Invalid("endpoint is a reference: Endpoint/{id}")
        endpoint_id = endpoint.split("/", 1)[1]
    if address is not None and not isinstance(address, str):
        raise Invalid("address must be a string")
    org_name = body.get("organizationName")
    if org_name is not None and not isinstance(org_name, str):
        raise Invalid("organizationName must be a string")
    check = body.get("check", True)
    if not isinstance(check, bool):
        raise Invalid("check must be true or false")
    service = container.intermediaries()
    try:
        reg = await service.registry.add(
            name,
            kind=kind,
            credentials=_credentials(body.get("auth")),
            address=address,
            endpoint_id=endpoint_id,
            organization_name=org_name,
            settings=_settings(body.get("settings")),
        )
    except DuplicateRegistration as exc:
        await _audit(request, container, principal, "registry-add", 409, None)
        raise Conflict(str(exc)) from None
    except ValueError as exc:
        await _audit(request, container, principal, "registry-add", 400, None)
        raise Invalid(str(exc)) from None
    if check:
        reg = await service.checker.check(reg.name)
    await _audit(request, container, principal, "registry-add", 201, reg.endpoint_id)
    return _json(201, _view(reg))


async def _registration(container: Container, name: str) -> Registration:
    reg = await container.intermediaries().registry.get(name)
    if reg is None:
        raise NotFound(f"no intermediary is registered as {name!r}")
    return reg


@router.get("/{name}")
async def read(request: Request, name: str) -> Response:
    container, principal = await _admin(request)
    reg = await _registration(container, name)
    checks = await container.intermediaries().registry.checks(name, limit=10)
    await _audit(request, container, principal, "registry-read", 200, reg.endpoint_id)
    return _json(200, _view(reg, checks))


@router.post("/{name}/check")
async def check(request: Request, name: str) -> Response:
    container, principal = await _admin(request)
    reg = await _registration(container, name)
    reg = await container.intermediaries().checker.check(name)
    await _audit(request, container, principal, "registry-check", 200, reg.endpoint_id)
    return _json(200, _view(reg))


@router.post("/{name}/disable")
async def disable(request: Request, name: str) -> Response:
    return await _set_enabled(request, name, False)


@router.post("/{name}/enable")
async def enable(request: Request, name: str) -> Response:
    return await _set_enabled(request, name, True)


async def _set_enabled(request: Request, name: str, enabled: bool) -> Response:
    container, principal = await _admin(request)
    reg = await container.intermediaries().registry.set_enabled(name, enabled)
    if reg is None:
        raise NotFound(f"no intermediary is registered as {name!r}")
    interaction = "registry-enable" if enabled else "registry-disable"
    await _audit(request, container, principal, interaction, 200, reg.endpoint_id)
    return _json(200, _view(reg))
