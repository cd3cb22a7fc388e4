"""HTTP details of the FHIR API: content types, `_format`, `_pretty`, `Prefer`, ETags.

https://hl7.org/fhir/R4/http.html#mime-type, #general, #versioning, #ops
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from email.utils import format_datetime
from typing import Any

import orjson
from starlette.responses import Response

from app.errors import Invalid, NotAcceptable, UnsupportedMediaType
from app.store.repository import StoredResource, format_instant

__all__ = [
    "FHIR_JSON",
    "fhir_response",
    "parse_if_match",
    "parse_json_body",
    "prefer_lenient",
    "prefer_return",
    "check_format",
    "resource_headers",
    "wants_pretty",
]

FHIR_JSON = "application/fhir+json; charset=utf-8"
_JSON_TYPES = {"application/fhir+json", "application/json", "application/json+fhir"}
_FORMAT_ALIASES = {"json", "application/json", "application/fhir+json", "application/json+fhir"}
_ETAG = re.compile(r'^\s*(?:W/)?"?(\d+)"?\s*$')


def parse_json_body(content_type: str | None, body: bytes) -> dict[str, Any]:
    """A request body -> a JSON object, or 415 (wrong media type) / 400 (not a JSON object)."""
    media = (content_type or "").split(";")[0].strip().lower()
    if media not in _JSON_TYPES:
        raise UnsupportedMediaType(
            f"Content-Type {media or '(none)'!r} is not supported; send application/fhir+json"
        )
    if not body:
        raise Invalid("the request body is empty")
    if b"\\u0000" in body:
        raise Invalid("FHIR strings may not contain the NUL character (\\u0000)", code="value")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise Invalid(f"the request body is not valid JSON: {exc}", code="structure") from None
    if not isinstance(data, dict):
        raise Invalid("the request body must be a JSON object (a FHIR resource)", code="structure")
    return data


def check_format(format_param: str | None, accept: str | None) -> None:
    """Refuse (406) an explicit request for a format other than JSON."""
    if (
        format_param is not None
        and format_param.split(";")[0].strip().lower() not in _FORMAT_ALIASES
    ):
        raise NotAcceptable(f"_format={format_param!r} is not supported; this server speaks JSON")
    if accept:
        kinds = [a.split(";")[0].strip().lower() for a in accept.split(",")]
        if kinds and not any(k in _JSON_TYPES or k in ("*/*", "application/*", "") for k in kinds):
            raise NotAcceptable(f"Accept {accept!r} is not supported; this server speaks JSON")


def wants_pretty(value: str | None) -> bool:
    return value is not None and value.lower() == "true"


def prefer_return(prefer: str | None) -> str:
    """The `return=` preference: minimal, representation (default) or OperationOutcome."""
    if prefer:
        for part in prefer.split(","):
            for token in part.split(";"):
                key, _, value = token.strip().partition("=")
                if key.strip().lower() == "return":
                    value = value.strip().strip('"')
                    if value in ("minimal", "representation", "OperationOutcome"):
                        return value
    return "representation"


def prefer_lenient(prefer: str | None) -> bool:
    """`Prefer: handling=lenient` (https://hl7.org/fhir/R4/search.html#errors); strict is the
    default."""
    for part in (prefer or "").split(","):
        for token in part.split(";"):
            key, _, value = token.strip().partition("=")
            if key.strip().lower() == "handling" and value.strip().strip('"') == "lenient":
                return True
    return False


def parse_if_match(value: str | None) -> int | None:
    if value is None:
        return None
    match = _ETAG.match(value)
    if not match:
        raise Invalid(f'If-Match {value!r} is not a version ETag such as W/"3"')
    return int(match.group(1))


def resource_headers(stored: StoredResource) -> dict[str, str]:
    return {
        "ETag": stored.etag,
        "Last-Modified": format_datetime(stored.last_updated, usegmt=True),
    }


def fhir_response(
    status: int,
    body: bytes | Mapping[str, Any] | None,
    *,
    headers: Mapping[str, str] | None = None,
    pretty: bool = False,
) -> Response:
    if body is None:
        return Response(status_code=status, headers=dict(headers or {}))
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    if pretty:  # re-parse so embedded (pre-serialised) resources are indented too
        content = orjson.dumps(orjson.loads(content), option=orjson.OPT_INDENT_2)
    return Response(
        content=content, status_code=status, headers=dict(headers or {}), media_type=FHIR_JSON
    )


def instant(stored: StoredResource) -> str:
    return format_instant(stored.last_updated)
