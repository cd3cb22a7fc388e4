"""The authorize endpoint: SMART App Launch, standalone and EHR launch, with PKCE
(https://hl7.org/fhir/smart-app-launch/app-launch.html, RFC 6749 4.1, RFC 7636).

    GET|POST /auth/authorize          validate the request, show the login page
    POST     /auth/authorize/login    check the password, show the consent page (+ patient picker)
    POST     /auth/authorize/consent  approve: make a code and redirect to the app; deny: error

Checks before anything is shown: the client is registered and enabled, `redirect_uri` is one
it registered (otherwise the error is shown here, never redirected), `response_type=code`,
`aud` is this server's FHIR base, `code_challenge_method=S256` with a challenge (`plain` is
refused), `state` present, the scopes mediated against the client's registration, and a
`launch` value (EHR launch) that this server issued and that has not expired.

The state of the flow between pages is a short-lived JWT signed with the server key (`typ`
`dxf-flow+jwt`, `aud` the authorize endpoint), carried in a hidden form field: nothing is stored
until a code is made, and a client cannot forge or widen it. EHR launch contexts are JWTs of the
same kind (`typ` `dxf-launch+jwt`) made by `issue_launch` (`dxf-bridge launch`).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import orjson
from joserfc import jwt
from joserfc.errors import JoseError

from app.auth.grants import Grant, TokenService
from app.auth.keys import SIGNING_ALGORITHMS, SigningKeys
from app.auth.pages import PatientChoice, consent_page, error_page, login_page
from app.auth.policy import AccessPolicy, ScopeGrant
from app.auth.registry import ClientRegistry, UserRegistry
from app.auth.scopes import mediate, parse_scope
from app.auth.throttle import LoginThrottle
from app.errors import FhirError
from app.fhir.search.criteria import parse_criteria
from app.settings import Settings
from app.store.repository import FhirRepository

__all__ = ["AuthorizeFlow", "Page", "Redirect", "issue_launch"]

_FLOW_TYP = "dxf-flow+jwt"
_LAUNCH_TYP = "dxf-launch+jwt"
_FLOW_SECONDS = 600
_CHALLENGE = re.compile(r"^[A-Za-z0-9_-]{43}$")
_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_MAX_PARAM = 2048
_READ_ALL = AccessPolicy(grants=(ScopeGrant("system", "Patient", frozenset("rs")),))


@dataclass(frozen=True, slots=True)
class Page:
    status: int
    html: str


@dataclass(frozen=True, slots=True)
class Redirect:
    url: str


def _with_query(uri: str, params: dict[str, str]) -> str:
    parts = urlsplit(uri)
    query = f"{parts.query}&{urlencode(params)}" if parts.query else urlencode(params)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))


def _sign(keys: SigningKeys, typ: str, claims: dict[str, Any]) -> str:
    header = {"alg": SIGNING_ALGORITHMS[0], "kid": keys.kid, "typ": typ}
    return jwt.encode(header, claims, keys.current, algorithms=list(SIGNING_ALGORITHMS))


def _verify(
    keys: SigningKeys, token: str, *, typ: str, aud: str, now: int
) -> dict[str, Any] | None:
    if not token or len(token) > 8192:
        return None
    try:
        decoded = jwt.decode(token, keys.keyset, algorithms=list(SIGNING_ALGORITHMS))
        if decoded.header.get("typ") != typ:
            return None
        jwt.JWTClaimsRegistry(
            now=now, leeway=0, aud={"essential": True, "value": aud}, exp={"essential": True}
        ).validate(decoded.claims)
    except (JoseError, ValueError, UnicodeError):
        return None
    return dict(decoded.claims)


def issue_launch(
    keys: SigningKeys,
    settings: Settings,
    *,
    patient: str | None,
    encounter: str | None = None,
    ttl_seconds: int = 300,
    now: int | None = None,
) -> str:
    """An EHR launch context for the `launch` parameter: the patient (and encounter) the EHR
    has open, valid for `ttl_seconds`."""
    issued = int(time.time()) if now is None else now
    claims: dict[str, Any] = {
        "aud": settings.endpoint("authorize"),
        "iat": issued,
        "exp": issued + ttl_seconds,
    }
    if patient:
        claims["patient"] = patient
    if encounter:
        claims["encounter"] = encounter
    return _sign(keys, _LAUNCH_TYP, claims)


class _Refused(Exception):
    """An error for the app, sent to its (verified) redirect URI."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description


def _needs_patient(scopes: tuple[str, ...]) -> bool:
    if "launch/patient" in scopes:
        return True
    return any((g := parse_scope(s)) is not None and g.context == "patient" for s in scopes)


class AuthorizeFlow:
    def __init__(
        self,
        *,
        settings: Settings,
        keys: SigningKeys,
        clients: ClientRegistry,
        users: UserRegistry,
        tokens: TokenService,
        repository: Callable[[AccessPolicy], FhirRepository],
        throttle: LoginThrottle,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._keys = keys
        self._clients = clients
        self._users = users
        self._tokens = tokens
        self._repository = repository
        self._throttle = throttle
        self._clock = clock
        self._aud = settings.endpoint("authorize")

    # ---- step 1: the authorization request -------------------------------------------------

    async def start(self, params: dict[str, str]) -> Page | Redirect:
        if any(len(v) > _MAX_PARAM for v in params.values()):
            return Page(400, error_page("a request parameter is too long"))
        client_id = params.get("client_id", "")
        client = await self._clients.get(client_id) if client_id else None
        if client is None or client.disabled:
            return Page(400, error_page("unknown or disabled client_id"))
        redirect_uri = params.get("redirect_uri") or (
            client.redirect_uris[0] if len(client.redirect_uris) == 1 else ""
        )
        if redirect_uri not in client.redirect_uris:
            return Page(400, error_page("redirect_uri is not registered for this client"))
        state = params.get("state", "")
        try:
            flow = await self._check(params, client.scopes)
        except _Refused as refused:
            return self._refuse(redirect_uri, state, refused.error, refused.description)
        flow.update(client_id=client_id, redirect_uri=redirect_uri, state=state)
        return self._login(flow)

    async def _check(self, params: dict[str, str], registered: tuple[str, ...]) -> dict[str, Any]:
        if params.get("response_type") != "code":
            raise _Refused("unsupported_response_type", "response_type must be code")
        aud = params.get("aud") or params.get("resource")
        if aud is None or aud.rstrip("/") != self._settings.fhir_base_url:
            raise _Refused("invalid_request", "aud must be this server's FHIR base URL")
        if params.get("code_challenge_method") != "S256":
            raise _Refused("invalid_request", "PKCE is required with code_challenge_method=S256")
        challenge = params.get("code_challenge", "")
        if not _CHALLENGE.match(challenge):
            raise _Refused("invalid_request", "code_challenge must be a base64url SHA-256 digest")
        if not params.get("state"):
            raise _Refused("invalid_request", "state is required")
        # system/ scopes belong to backend services, never to a user's app launch
        requested = [s for s in params.get("scope", "").split() if not s.startswith("system/")]
        scopes = tuple(mediate(requested, registered))
        if not scopes:
            raise _Refused("invalid_scope", "none of the requested scopes is registered")
        flow: dict[str, Any] = {"scopes": list(scopes), "code_challenge": challenge}
        if params.get("nonce"):
            flow["nonce"] = params["nonce"]
        launch = params.get("launch")
        if launch is not None:
            context = _verify(
                self._keys, launch, typ=_LAUNCH_TYP, aud=self._aud, now=int(self._clock())
            )
            if context is None:
                raise _Refused("invalid_request", "the launch parameter is not valid or expired")
            for name in ("patient", "encounter"):
                if isinstance(context.get(name), str):
                    flow[name] = context[name]
        return flow

    def _refuse(self, redirect_uri: str, state: str, error: str, description: str) -> Redirect:
        params = {"error": error, "error_description": description}
        if state:
            params["state"] = state
        return Redirect(_with_query(redirect_uri, params))

    def _seal(self, flow: dict[str, Any]) -> str:
        now = int(self._clock())
        return _sign(self._keys, _FLOW_TYP, {**flow, "aud": self._aud, "exp": now + _FLOW_SECONDS})

    def _open(self, form: dict[str, str]) -> dict[str, Any] | None:
        return _verify(
            self._keys, form.get("flow", ""), typ=_FLOW_TYP, aud=self._aud, now=int(self._clock())
        )

    def _login(self, flow: dict[str, Any], error: str | None = None) -> Page:
        html = login_page(
            action=f"{self._aud}/login",
            flow=self._seal(flow),
            client_id=flow["client_id"],
            error=error,
        )
        return Page(401 if error else 200, html)

    # ---- step 2: login ---------------------------------------------------------------------

    async def login(self, form: dict[str, str]) -> Page | Redirect:
        flow = self._open(form)
        if flow is None or "username" in flow:
            return Page(400, error_page("the sign-in form expired; start again from the app"))
        username = form.get("username", "")
        if self._throttle.blocked(username):
            page = self._login(_strip(flow), "too many failed sign-ins; try again later")
            return Page(429, page.html)
        user = await self._users.authenticate(username, form.get("password", ""))
        if user is None:
            self._throttle.failed(username)
            return self._login(_strip(flow), "wrong username or password")
        self._throttle.succeeded(username)
        flow = {**_strip(flow), "username": user.username}
        if user.fhir_user:
            flow["fhir_user"] = user.fhir_user
            if user.fhir_user.startswith("Patient/") and _needs_patient(tuple(flow["scopes"])):
                # a patient signing in: their own record is the only possible context
                flow.setdefault("patient", user.fhir_user.removeprefix("Patient/"))
        return await self._consent(flow)

    async def _consent(
        self, flow: dict[str, Any], *, name: str = "", error: str | None = None
    ) -> Page:
        scopes = tuple(flow["scopes"])
        choices = None
        if _needs_patient(scopes) and not flow.get("patient"):
            choices = await self._patients(name)
        html = consent_page(
            action=f"{self._aud}/consent",
            flow=self._seal(flow),
            client_id=flow["client_id"],
            username=flow["username"],
            scopes=scopes,
            patient=flow.get("patient"),
            choices=choices,
            name_filter=name,
            error=error,
        )
        return Page(400 if error else 200, html)

    async def _patients(self, name: str) -> list[PatientChoice]:
        repo = self._repository(_READ_ALL)
        pairs = [("name", name)] if name.strip() else []
        try:
            page = await repo.search(parse_criteria("Patient", pairs), count=20)
        except FhirError:
            return []
        return [PatientChoice(r.id, _label(r.content)) for r in page.resources]

    # ---- step 3: consent -------------------------------------------------------------------

    async def consent(self, form: dict[str, str]) -> Page | Redirect:
        flow = self._open(form)
        if flow is None or "username" not in flow:
            return Page(400, error_page("the consent form expired; start again from the app"))
        flow = _strip(flow)
        decision = form.get("decision")
        if decision == "search":
            return await self._consent(flow, name=form.get("name", "")[:100])
        if decision != "approve":
            return self._refuse(
                flow["redirect_uri"], flow["state"], "access_denied", "the user denied access"
            )
        scopes = tuple(flow["scopes"])
        patient = flow.get("patient")
        if _needs_patient(scopes) and not patient:
            patient = (form.get("patient_id") or form.get("patient") or "").strip()
            if not _ID.match(patient) or not await self._patient_exists(patient):
                return await self._consent(flow, error="choose an existing patient")
        grant = Grant(
            scopes=scopes,
            username=flow["username"],
            fhir_user=flow.get("fhir_user"),
            patient=patient,
            encounter=flow.get("encounter"),
            redirect_uri=flow["redirect_uri"],
            code_challenge=flow["code_challenge"],
            nonce=flow.get("nonce"),
        )
        code = await self._tokens.create_code(flow["client_id"], grant)
        params = {"code": code, "state": flow["state"]}
        return Redirect(_with_query(flow["redirect_uri"], params))

    async def _patient_exists(self, patient_id: str) -> bool:
        try:
            await self._repository(_READ_ALL).read("Patient", patient_id)
        except FhirError:
            return False
        return True


def _strip(flow: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in flow.items() if k not in ("aud", "exp")}


def _label(content: bytes | None) -> str:
    """A display name for the picker: family, given names and birth date."""
    try:
        body = orjson.loads(content or b"{}")
    except orjson.JSONDecodeError:
        return "Patient"
    names = body.get("name") or [{}]
    first = names[0] if isinstance(names, list) and names and isinstance(names[0], dict) else {}
    given = " ".join(g for g in first.get("given", []) if isinstance(g, str))
    label = " ".join(p for p in (given, first.get("family", "")) if isinstance(p, str) and p)
    if isinstance(body.get("birthDate"), str):
        label += f" ({body['birthDate']})"
    return label or "Patient"
