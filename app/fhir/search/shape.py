"""`_summary` and `_elements`: the parts of each matched resource a search returns
(https://hl7.org/fhir/R4/search.html#summary, #elements). A resource cut down this way is
marked with the SUBSETTED tag, so nobody mistakes it for the whole resource."""

from __future__ import annotations

from typing import Any

import orjson

from app.fhir.models import summary_elements

__all__ = ["SUBSETTED", "shape"]

SUBSETTED = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
    "code": "SUBSETTED",
}
_ALWAYS = ("resourceType", "id", "meta")


def shape(content: bytes, summary: str | None, elements: tuple[str, ...]) -> bytes:
    """The stored JSON as `_summary`/`_elements` ask; untouched when neither applies."""
    if summary in (None, "false") and not elements:
        return content
    body: dict[str, Any] = orjson.loads(content)
    if summary == "true":
        keep = summary_elements(body.get("resourceType", ""))
        body = {k: v for k, v in body.items() if k in keep}
    elif summary == "text":
        body = {k: v for k, v in body.items() if k in (*_ALWAYS, "text", "_id")}
    elif summary == "data":
        body = {k: v for k, v in body.items() if k != "text"}
    else:
        wanted = set(elements) | {f"_{e}" for e in elements} | set(_ALWAYS)
        body = {k: v for k, v in body.items() if k in wanted}
    meta = dict(body.get("meta") or {})
    meta["tag"] = [*meta.get("tag", []), SUBSETTED]
    body["meta"] = meta
    return orjson.dumps(body)
