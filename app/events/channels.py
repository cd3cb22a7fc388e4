"""Sending one delivery over its channel; every failure is an AdapterError with safe text.

- rest-hook (Subscriptions R5 Backport IG STU 1.1, "Channels": rest-hook): POST the
  notification Bundle to `channel.endpoint` with the subscription's MIME type and headers; any
  2xx is delivered;
- hl7v2-mllp (MLLP Release 2; app/hl7/mllp_client.py): the original message, byte for byte, so
  MSH-10 stays the sender's control id; AA/CA is delivered;
- fhir-message (Da Vinci Unsolicited Notifications; app/events/davinci.py; FHIR R4 messaging,
  `$process-message`): POST the message Bundle; 2xx is delivered unless the answer is a
  response message whose MessageHeader.response.code is not `ok`;
- adapter: the registered intermediary's own `deliver()` (app/adapters/base.py).

Every HTTP request carries `Idempotency-Key: <key>`: the same key as the Bundle's id, stable for
one event and one target, so a receiver can drop a repeat of a notification it already has.
Statuses 408, 425, 429 and 5xx, timeouts and connection failures are retried; other 4xx are
not (resending the same request will not change the answer). Error texts name the endpoint's
host and the status, never content.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import sys
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson

from app.adapters.base import AdapterError, FailureKind

__all__ = ["check_endpoint", "post_json"]

if importlib.util.find_spec("sniffio") is None:
    # httpcore tries `import sniffio` on every lock it takes; absent, each try searches the
    # whole import path again (about 2 ms per request here). Record the absence once: the
    # import then fails at once, exactly as it did.
    sys.modules.setdefault("sniffio", None)  # type: ignore[arg-type]

_RETRY_STATUSES = frozenset({408, 425, 429})
_LOOPBACK_NAMES = frozenset({"localhost"})
_MAX_ANSWER = 64 * 1024


def _is_loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_endpoint(url: str, *, allow_http: bool) -> str:
    """The URL's host (for error texts), or AdapterError when the URL may not be used:
    https is required, except to loopback addresses or with DXF_EVENTS_ALLOW_HTTP."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme not in ("http", "https") or not host:
        raise AdapterError(
            FailureKind.UNSUPPORTED, "not an http(s) URL", endpoint=host, retryable=False
        )
    if parts.scheme == "http" and not (allow_http or _is_loopback(host)):
        raise AdapterError(
            FailureKind.UNSUPPORTED,
            "plain http endpoint refused (https required; see DXF_EVENTS_ALLOW_HTTP)",
            endpoint=host,
            retryable=False,
        )
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


def _message_outcome(content: bytes) -> str | None:
    """A $process-message answer's MessageHeader.response.code, when there is one."""
    try:
        body = orjson.loads(content)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(body, dict) or body.get("resourceType") != "Bundle":
        return None
    for entry in body.get("entry") or []:
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if isinstance(resource, dict) and resource.get("resourceType") == "MessageHeader":
            response = resource.get("response")
            if isinstance(response, dict):
                return str(response.get("code") or "") or None
    return None


async def post_json(
    http: httpx.AsyncClient,
    url: str,
    body: dict[str, Any],
    *,
    headers: list[tuple[str, str]],
    timeout: float,
    allow_http: bool,
    message: bool = False,
) -> str:
    """POST one JSON body; the delivered detail ("HTTP 200"), or AdapterError."""
    where = check_endpoint(url, allow_http=allow_http)
    try:
        async with http.stream(
            "POST",
            url,
            content=orjson.dumps(body),
            headers=headers,
            timeout=httpx.Timeout(timeout),
        ) as response:
            content = b""
            async for chunk in response.aiter_bytes():
                content += chunk
                if len(content) > _MAX_ANSWER:
                    break
    except httpx.TimeoutException:
        raise AdapterError(FailureKind.TIMEOUT, "no answer in time", endpoint=where) from None
    except httpx.HTTPError as exc:
        raise AdapterError(
            FailureKind.UNREACHABLE, f"request failed ({type(exc).__name__})", endpoint=where
        ) from None
    status = response.status_code
    if 200 <= status < 300:
        if message:
            code = _message_outcome(content)
            if code not in (None, "ok"):
                raise AdapterError(
                    FailureKind.OUTCOME,
                    f"the response message says {code[:20]}",
                    endpoint=where,
                    status=status,
                    retryable=code == "transient-error",
                )
        return f"HTTP {status}"
    kind = FailureKind.AUTH if status in (401, 403) else FailureKind.HTTP
    retryable = status >= 500 or status in _RETRY_STATUSES
    raise AdapterError(
        kind,
        "the receiver refused the notification",
        endpoint=where,
        status=status,
        retryable=retryable,
    )
