"""The generic FHIR R4 adapter: any intermediary or participant that speaks FHIR REST.

Every QHIO adapter builds on this one; a QHIO whose only differences are settings is a profile
in app/adapters/qhios.toml, not code. What it does, and the rule each part follows:

- locate: `GET [base]/Patient?identifier=system|value` for each identifier we hold (FHIR R4
  search, token parameters, https://hl7.org/fhir/R4/search.html#token, with `\\ , $ |` escaped
  per search.html#escaping) until one finds a Patient; then, when the endpoint offers it,
  `POST [base]/Patient/$match` with a Parameters resource holding a minimal Patient
  (identifiers, name, birth date, gender, postal code, telecom; never our own id) and
  `onlyCertainMatches=true` (https://hl7.org/fhir/R4/patient-operation-match.html). A Patient
  an identifier search returns that does not carry the identifier is dropped: a server that
  ignores the parameter would otherwise hand us everyone.
- fetch_record: `GET [base]/Patient/{id}/$everything` with `_type` and `_since`
  (https://hl7.org/fhir/R4/patient-operation-everything.html), following `next` links
  (https://hl7.org/fhir/R4/http.html#paging) up to a page limit and a total size cap, after
  which the record is returned with `complete=False` and a note. For DocumentReference-style
  sources (capabilities.document_reference): `GET [base]/DocumentReference?patient={id}`, then
  each `Binary` an attachment references on the same server (size-capped).
  Resources that sit in another Patient's compartment (app/fhir/compartments.py) are dropped and
  counted in a note; filtering by the caller's access policy is the federation layer's job.
- deliver: a Da Vinci unsolicited-notification message Bundle (DXF-23,
  http://hl7.org/fhir/us/davinci-alerts/) POSTed to `[base]/$process-message`
  (https://hl7.org/fhir/R4/messageheader-operation-process-message.html), built by an injected
  `message_builder` (the registry injects app/events/davinci.py's); without one, or when the
  registration does not list the "fhir-message" channel, the adapter raises UNSUPPORTED.
- Transport: bounded retries with exponential backoff and full jitter on 429/502/503/504 and
  connection errors, honouring `Retry-After` (capped); never a retry that would end after the
  caller's deadline (app/adapters/deadline.py) or the endpoint's own. One refresh of the bearer
  token on 401. Response bodies are read as a stream and cut off at the size cap. A `next`
  link to another origin is not followed (SMART Backend Services: "SHOULD NOT forward tokens to
  foreign references"). Errors become AdapterError; an OperationOutcome answer becomes
  `operation-outcome` with its issue codes (never its diagnostics, which may quote data).
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

import httpx
import orjson

from app.adapters.base import (
    FEDERATED_HOP_HEADER,
    AdapterCapabilities,
    AdapterError,
    AdtEvent,
    DeliveryReceipt,
    FailureKind,
    PersonQuery,
    RemotePatient,
    RemoteRecord,
)
from app.adapters.config import RegisteredEndpoint
from app.adapters.deadline import remaining
from app.adapters.smart_client import TokenSource
from app.fhir.compartments import patient_ids_of

__all__ = [
    "FHIR_JSON",
    "RETRY_STATUSES",
    "FhirAdapter",
    "MessageBuilder",
    "escape_search_value",
    "loop_time",
]

FHIR_JSON = "application/fhir+json"
RETRY_STATUSES = frozenset({429, 502, 503, 504})
_CHUNK = 64 * 1024

# (event, the receiver's address) -> the notification message Bundle
MessageBuilder = Callable[[AdtEvent, str], dict[str, Any]]


@dataclass(slots=True)
class _Reply:
    status: int
    body: Any  # parsed JSON, or None when the body was empty
    raw: bytes
    content_type: str
    url: str
    retry_after: str | None = None

    @property
    def size(self) -> int:
        return len(self.raw)


class FhirAdapter:
    """IntermediaryAdapter over FHIR R4 REST. `http` is owned by the caller (the registry),
    unless `owns_http` is set; `tokens` None sends no Authorization header."""

    def __init__(
        self,
        config: RegisteredEndpoint,
        http: httpx.AsyncClient,
        tokens: TokenSource | None = None,
        *,
        message_builder: MessageBuilder | None = None,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        jitter: Callable[[], float] = random.random,
        owns_http: bool = False,
    ) -> None:
        self.config = config
        self._http = http
        self._tokens = tokens
        self._builder = message_builder
        self._sleep = sleep
        self._jitter = jitter
        self._owns_http = owns_http
        self._base = config.address.rstrip("/")
        self.requests = 0  # HTTP requests sent (retries included), for tests and metrics

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, endpoint={self.endpoint!r})"

    # ---- IntermediaryAdapter -----------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def endpoint(self) -> str:
        return self._base

    def capabilities(self) -> AdapterCapabilities:
        return self.config.capabilities

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def locate(self, person: PersonQuery) -> list[RemotePatient]:
        caps = self.capabilities()
        if not (caps.identifier_search or caps.patient_match):
            raise self._error(FailureKind.UNSUPPORTED, "this endpoint offers no patient lookup")
        started = _now()
        if caps.identifier_search:
            for system, value in person.identifiers:
                found = await self._by_identifier(system, value, started)
                if found:
                    return found
        if caps.patient_match and _enough_for_match(person):
            return await self._match(person, started)
        return []

    async def fetch_record(
        self,
        patient: RemotePatient,
        *,
        types: Sequence[str] = (),
        since: datetime | None = None,
    ) -> RemoteRecord:
        caps = self.capabilities()
        started = _now()
        if caps.document_reference:
            return await self._documents(patient, types, since, started)
        if not caps.everything:
            raise self._error(FailureKind.UNSUPPORTED, "this endpoint offers no patient record")
        params: list[tuple[str, str]] = []
        if types:
            params.append(("_type", ",".join(types)))
        if since is not None:
            params.append(("_since", _instant(since)))
        if self.config.page_size:
            params.append(("_count", str(self.config.page_size)))
        path = f"Patient/{quote(patient.id, safe='')}/$everything"
        record = await self._pages(path, params, started)
        if types:
            wanted = set(types)
            before = len(record.resources)
            record.resources = [r for r in record.resources if r.get("resourceType") in wanted]
            if len(record.resources) < before:
                record.notes.append(
                    f"dropped {before - len(record.resources)} resource(s) of types not asked for"
                )
        return self._about(record, patient.id)

    async def deliver(self, event: AdtEvent) -> DeliveryReceipt:
        if self._builder is None or "fhir-message" not in self.capabilities().event_channels:
            raise self._error(
                FailureKind.UNSUPPORTED, "this endpoint takes no FHIR notification messages"
            )
        bundle = self._builder(event, self._base)
        reply = await self._call(
            "POST", "$process-message", json_body=bundle, started=_now(), accept=FHIR_JSON
        )
        remote_id = None
        if isinstance(reply.body, dict) and isinstance(reply.body.get("id"), str):
            remote_id = reply.body["id"]
        return DeliveryReceipt(accepted=True, detail=f"HTTP {reply.status}", remote_id=remote_id)

    # ---- locate ------------------------------------------------------------------------------

    async def _by_identifier(self, system: str, value: str, started: float) -> list[RemotePatient]:
        token = f"{_escape(system)}|{_escape(value)}" if system else _escape(value)
        reply = await self._call("GET", "Patient", params=[("identifier", token)], started=started)
        bundle = self._bundle(reply, "searchset")
        out: dict[str, RemotePatient] = {}
        for resource in _entries(bundle, skip_outcomes=True):
            if resource.get("resourceType") != "Patient" or not isinstance(resource.get("id"), str):
                continue
            if not _has_identifier(resource, system, value):
                continue  # the server ignored or loosened the search: not this person
            out.setdefault(resource["id"], RemotePatient(resource["id"], resource))
        return list(out.values())

    async def _match(self, person: PersonQuery, started: float) -> list[RemotePatient]:
        parameters = {
            "resourceType": "Parameters",
            "parameter": [
                {"name": "resource", "resource": _match_patient(person)},
                {"name": "onlyCertainMatches", "valueBoolean": True},
                {"name": "count", "valueInteger": self.config.match_count},
            ],
        }
        reply = await self._call("POST", "Patient/$match", json_body=parameters, started=started)
        bundle = self._bundle(reply, "searchset")
        out: dict[str, RemotePatient] = {}
        for entry in bundle.get("entry") or ():
            resource = entry.get("resource") if isinstance(entry, dict) else None
            if not isinstance(resource, dict) or resource.get("resourceType") != "Patient":
                continue
            rid = resource.get("id")
            if not isinstance(rid, str) or rid in out:
                continue
            score = (entry.get("search") or {}).get("score", 1.0)
            if isinstance(score, bool) or not isinstance(score, int | float):
                score = 0.0
            out[rid] = RemotePatient(rid, resource, score=float(score), how="match")
        return sorted(out.values(), key=lambda p: -p.score)

    # ---- records -----------------------------------------------------------------------------

    async def _documents(
        self,
        patient: RemotePatient,
        types: Sequence[str],
        since: datetime | None,
        started: float,
    ) -> RemoteRecord:
        if types and "DocumentReference" not in types:
            return RemoteRecord(
                self._base, [], notes=["this endpoint serves DocumentReference and Binary only"]
            )
        params = [("patient", patient.id)]
        if since is not None:
            params.append(("_lastUpdated", f"ge{_instant(since)}"))
        if self.config.page_size:
            params.append(("_count", str(self.config.page_size)))
        record = await self._pages("DocumentReference", params, started)
        record = self._about(record, patient.id)
        if types and "Binary" not in types:
            return record
        used = sum(len(orjson.dumps(r)) for r in record.resources)
        seen: set[str] = set()
        binaries: list[dict[str, Any]] = []
        for doc in list(record.resources):
            if doc.get("resourceType") != "DocumentReference":
                continue
            for binary_id in self._binary_ids(doc):
                if binary_id in seen:
                    continue
                seen.add(binary_id)
                budget = min(self.config.max_response_bytes, self.config.max_record_bytes - used)
                if budget <= 0:
                    record.complete = False
                    record.notes.append("the record size cap was reached; Binaries left out")
                    break
                try:
                    binary = await self._binary(binary_id, budget, started)
                except AdapterError as err:
                    if err.kind is not FailureKind.OVERSIZED:
                        raise
                    record.complete = False
                    record.notes.append("a Binary over the size cap was left out")
                    continue
                used += len(orjson.dumps(binary))
                binaries.append(binary)
        record.resources.extend(binaries)
        return record

    def _binary_ids(self, doc: dict[str, Any]) -> list[str]:
        out = []
        for content in doc.get("content") or ():
            attachment = content.get("attachment") if isinstance(content, dict) else None
            if not isinstance(attachment, dict) or attachment.get("data"):
                continue
            url = attachment.get("url")
            if not isinstance(url, str):
                continue
            if url.startswith(self._base + "/"):
                url = url[len(self._base) + 1 :]
            parts = url.split("/")
            if len(parts) == 2 and parts[0] == "Binary" and parts[1]:
                out.append(parts[1])
        return out

    async def _binary(self, binary_id: str, budget: int, started: float) -> dict[str, Any]:
        reply = await self._call(
            "GET",
            f"Binary/{quote(binary_id, safe='')}",
            started=started,
            budget=budget,
            accept=f"{FHIR_JSON}, */*;q=0.1",
            parse=False,
        )
        if "json" in reply.content_type:
            body = _parse_json(reply, self)
            if not isinstance(body, dict) or body.get("resourceType") != "Binary":
                raise self._error(FailureKind.MALFORMED, "a Binary read answered another shape")
            return body
        return {  # the raw content: wrapped as the Binary resource it stands for
            "resourceType": "Binary",
            "id": binary_id,
            "contentType": reply.content_type.split(";")[0].strip() or "application/octet-stream",
            "data": base64.b64encode(reply.raw).decode("ascii"),
        }

    async def _pages(
        self, path: str, params: list[tuple[str, str]], started: float
    ) -> RemoteRecord:
        record = RemoteRecord(self._base, [])
        seen: set[tuple[str, str]] = set()
        url: str | None = path
        query: list[tuple[str, str]] | None = params
        used = pages = 0
        while url is not None:
            if pages >= self.config.max_pages:
                record.complete = False
                record.notes.append(f"stopped after {pages} pages (the page limit)")
                break
            budget = min(self.config.max_response_bytes, self.config.max_record_bytes - used)
            try:
                reply = await self._call("GET", url, params=query, started=started, budget=budget)
            except AdapterError as err:
                if err.kind is not FailureKind.OVERSIZED or pages == 0:
                    raise
                record.complete = False
                record.notes.append(f"stopped after {pages} pages (the record size cap)")
                break
            used += reply.size
            pages += 1
            bundle = self._bundle(reply, "searchset")
            for issue_code in _outcome_codes(bundle):
                record.notes.append(f"the endpoint reported an issue ({issue_code})")
            for resource in _entries(bundle, skip_outcomes=True):
                key = (str(resource.get("resourceType")), str(resource.get("id", "")))
                if key[1] and key in seen:
                    continue
                seen.add(key)
                record.resources.append(resource)
            url, query = _link(bundle, "next"), None
            if url is not None:
                url = urljoin(self._base + "/", url)
                if not self._same_origin(url):
                    record.complete = False
                    record.notes.append("a next link to another server was not followed")
                    break
        return record

    def _about(self, record: RemoteRecord, patient_id: str) -> RemoteRecord:
        """Drop resources in another Patient's compartment (cheap: references only)."""
        kept = []
        dropped = 0
        for resource in record.resources:
            owners = patient_ids_of(resource, self._base)
            if owners and patient_id not in owners:
                dropped += 1
                continue
            kept.append(resource)
        if dropped:
            record.resources = kept
            record.notes.append(f"dropped {dropped} resource(s) about another patient")
        return record

    # ---- HTTP --------------------------------------------------------------------------------

    def _url(self, path: str) -> str:
        if path.startswith(("http://", "https://")):
            return path
        return f"{self._base}/{path.lstrip('/')}"

    def _same_origin(self, url: str) -> bool:
        a, b = urlsplit(url), urlsplit(self._base)
        return (a.scheme, a.hostname, a.port) == (b.scheme, b.hostname, b.port)

    async def _call(
        self,
        method: str,
        path: str,
        *,
        params: list[tuple[str, str]] | None = None,
        json_body: Any = None,
        started: float,
        budget: int | None = None,
        accept: str = FHIR_JSON,
        parse: bool = True,
        extra_headers: dict[str, str] | None = None,
    ) -> _Reply:
        """One request with retries; returns a 2xx reply, raises AdapterError otherwise."""
        cfg = self.config
        url = self._url(path)
        content = orjson.dumps(json_body) if json_body is not None else None
        cap = cfg.max_response_bytes if budget is None else budget
        refreshed = False
        attempt = 0
        while True:
            attempt += 1
            left = remaining(cfg.deadline_seconds, started=started)
            if left <= 0:
                raise self._error(FailureKind.TIMEOUT, f"no answer to {method} within the deadline")
            retry_after: float | None = None
            try:
                reply = await self._once(
                    method, url, params, content, accept, cap, left, extra_headers
                )
            except AdapterError as err:
                if not err.retryable or attempt >= cfg.max_attempts:
                    raise
                failure = err
            else:
                if reply.status == 401 and self._tokens is not None and not refreshed:
                    refreshed = True  # the token may have been revoked or expired early
                    self._tokens.invalidate()
                    attempt -= 1
                    continue
                if 200 <= reply.status < 300:
                    if parse:
                        reply.body = _parse_json(reply, self)
                    return reply
                failure = self._status_error(method, reply)
                if reply.status not in RETRY_STATUSES or attempt >= cfg.max_attempts:
                    raise failure
                retry_after = _retry_after(reply)
            if retry_after is not None:
                delay = min(retry_after, cfg.max_retry_after_seconds)
            else:
                ceiling = min(cfg.max_backoff_seconds, cfg.backoff_seconds * 2 ** (attempt - 1))
                delay = self._jitter() * ceiling
            if delay >= remaining(cfg.deadline_seconds, started=started):
                raise failure  # waiting would take us past the deadline
            await self._sleep(delay)

    async def _once(
        self,
        method: str,
        url: str,
        params: list[tuple[str, str]] | None,
        content: bytes | None,
        accept: str,
        cap: int,
        left: float,
        extra_headers: dict[str, str] | None = None,
    ) -> _Reply:
        headers = {
            "Accept": accept,
            FEDERATED_HOP_HEADER: "1",
            **dict(self.config.headers),
            **(extra_headers or {}),
        }
        if content is not None:
            headers["Content-Type"] = FHIR_JSON
        single = self._http.timeout.read  # the client's timeout for one network operation
        each = left if single is None else min(left, single)
        if self._tokens is not None:
            headers["Authorization"] = f"Bearer {await self._tokens.token(timeout=each)}"
        self.requests += 1
        try:
            async with asyncio.timeout(left):
                request = self._http.build_request(
                    method, url, params=params, content=content, headers=headers, timeout=each
                )
                response = await self._http.send(request, stream=True)
                try:
                    return await self._read(response, cap)
                finally:
                    await response.aclose()
        except (TimeoutError, httpx.TimeoutException):
            raise self._error(FailureKind.TIMEOUT, f"{method} timed out") from None
        except httpx.HTTPError as exc:
            raise self._error(
                FailureKind.UNREACHABLE, f"{method} failed ({type(exc).__name__})"
            ) from None

    async def _read(self, response: httpx.Response, cap: int) -> _Reply:
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > cap:
            raise self._error(
                FailureKind.OVERSIZED,
                f"the response is over the {cap}-byte cap",
                response.status_code,
            )
        chunks = []
        size = 0
        async for chunk in response.aiter_bytes(_CHUNK):
            size += len(chunk)
            if size > cap:
                raise self._error(
                    FailureKind.OVERSIZED,
                    f"the response is over the {cap}-byte cap",
                    response.status_code,
                )
            chunks.append(chunk)
        return _Reply(
            status=response.status_code,
            body=None,
            raw=b"".join(chunks),
            content_type=response.headers.get("content-type", "").lower(),
            url=str(response.request.url),
            retry_after=response.headers.get("retry-after"),
        )

    def _status_error(self, method: str, reply: _Reply) -> AdapterError:
        status = reply.status
        body = None
        if reply.raw and "json" in reply.content_type:
            try:
                body = orjson.loads(reply.raw)
            except orjson.JSONDecodeError:
                body = None
        if status in (401, 403):
            return self._error(
                FailureKind.AUTH, f"{method} was refused (not authorized)", status, retryable=False
            )
        retryable = status in RETRY_STATUSES or status >= 500
        if isinstance(body, dict) and body.get("resourceType") == "OperationOutcome":
            codes = ", ".join(_issue_codes(body)) or "no issue code"
            return self._error(
                FailureKind.OUTCOME,
                f"{method} answered an OperationOutcome ({codes})",
                status,
                retryable=retryable,
            )
        return self._error(
            FailureKind.HTTP, f"{method} answered an error", status, retryable=retryable
        )

    def _bundle(self, reply: _Reply, bundle_type: str) -> dict[str, Any]:
        body = reply.body
        if isinstance(body, dict) and body.get("resourceType") == "OperationOutcome":
            codes = ", ".join(_issue_codes(body)) or "no issue code"
            raise self._error(
                FailureKind.OUTCOME, f"answered an OperationOutcome ({codes})", reply.status
            )
        if not isinstance(body, dict) or body.get("resourceType") != "Bundle":
            raise self._error(FailureKind.MALFORMED, "expected a Bundle", reply.status)
        if body.get("type") not in (bundle_type, None):
            raise self._error(
                FailureKind.MALFORMED, f"expected a {bundle_type} Bundle", reply.status
            )
        entries = body.get("entry", [])
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise self._error(FailureKind.MALFORMED, "the Bundle's entries are malformed")
        return body

    def _error(
        self, kind: FailureKind, detail: str, status: int | None = None, **kw: Any
    ) -> AdapterError:
        return AdapterError(kind, detail, endpoint=self.name, status=status, **kw)


# ---- helpers ---------------------------------------------------------------------------------


def _now() -> float:
    return asyncio.get_running_loop().time()


def _instant(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def loop_time() -> float:
    """The running loop's clock: what `started` arguments and deadlines are measured in."""
    return asyncio.get_running_loop().time()


def escape_search_value(value: str) -> str:
    """A token search value with `\\ , $ |` escaped (FHIR R4 search.html#escaping)."""
    return _escape(value)


def _escape(value: str) -> str:
    for ch in ("\\", ",", "$", "|"):
        value = value.replace(ch, "\\" + ch)
    return value


def _parse_json(reply: _Reply, adapter: FhirAdapter) -> Any:
    if not reply.raw:
        return None
    try:
        return orjson.loads(reply.raw)
    except orjson.JSONDecodeError:
        raise adapter._error(
            FailureKind.MALFORMED, "the answer is not JSON", reply.status
        ) from None


def _entries(bundle: dict[str, Any], *, skip_outcomes: bool) -> list[dict[str, Any]]:
    out = []
    for entry in bundle.get("entry") or ():
        resource = entry.get("resource")
        if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
            continue
        mode = (entry.get("search") or {}).get("mode")
        if skip_outcomes and (mode == "outcome" or resource["resourceType"] == "OperationOutcome"):
            continue
        out.append(resource)
    return out


def _outcome_codes(bundle: dict[str, Any]) -> list[str]:
    out = []
    for entry in bundle.get("entry") or ():
        resource = entry.get("resource")
        if isinstance(resource, dict) and resource.get("resourceType") == "OperationOutcome":
            out.extend(_issue_codes(resource))
    return out


def _issue_codes(outcome: dict[str, Any]) -> list[str]:
    codes = []
    for issue in outcome.get("issue") or ():
        code = issue.get("code") if isinstance(issue, dict) else None
        if isinstance(code, str) and code.isascii() and len(code) <= 40:
            codes.append(code)
    return codes


def _link(bundle: dict[str, Any], relation: str) -> str | None:
    for link in bundle.get("link") or ():
        if isinstance(link, dict) and link.get("relation") == relation:
            url = link.get("url")
            return url if isinstance(url, str) and url else None
    return None


def _retry_after(reply: _Reply) -> float | None:
    """Retry-After in seconds (delta-seconds or an HTTP-date, RFC 9110 10.2.3), or None."""
    return _parse_retry_after(reply.retry_after, time.time()) if reply.retry_after else None


def _has_identifier(patient: dict[str, Any], system: str, value: str) -> bool:
    for ident in patient.get("identifier") or ():
        if not isinstance(ident, dict) or ident.get("value") != value:
            continue
        if not system or ident.get("system") == system:
            return True
    return False


def _enough_for_match(person: PersonQuery) -> bool:
    return bool(person.identifiers or (person.family and person.birth_date))


def _match_patient(person: PersonQuery) -> dict[str, Any]:
    patient: dict[str, Any] = {"resourceType": "Patient"}
    if person.identifiers:
        patient["identifier"] = [
            {"system": s, "value": v} if s else {"value": v} for s, v in person.identifiers
        ]
    if person.family or person.given:
        name: dict[str, Any] = {}
        if person.family:
            name["family"] = person.family
        if person.given:
            name["given"] = list(person.given)
        patient["name"] = [name]
    if person.birth_date:
        patient["birthDate"] = person.birth_date
    if person.gender:
        patient["gender"] = person.gender
    if person.postal_code:
        patient["address"] = [{"postalCode": person.postal_code}]
    if person.telecom:
        patient["telecom"] = [
            {"system": "email" if "@" in t else "phone", "value": t} for t in person.telecom
        ]
    return patient


def _parse_retry_after(value: str, now: float) -> float | None:
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)
