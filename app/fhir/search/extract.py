"""Resource -> search index rows, computed on the write path and stored in the same transaction.

Currently indexes the `identifier` token parameter (https://hl7.org/fhir/R4/search.html#token)
of every resource type that has an `identifier` element: what conditional create and update
need to be race-free. The full SearchParameter-driven extractor builds on this module.
"""

from __future__ import annotations

from typing import Any

__all__ = ["MAX_TOKEN_CHARS", "TokenRow", "token_rows"]

MAX_TOKEN_CHARS = 512

TokenRow = tuple[str, str | None, str | None]  # (param, system, value)


def token_rows(resource: dict[str, Any]) -> list[TokenRow]:
    rows: list[TokenRow] = []
    identifiers = resource.get("identifier")
    if isinstance(identifiers, dict):
        identifiers = [identifiers]
    if isinstance(identifiers, list):
        for ident in identifiers:
            if not isinstance(ident, dict):
                continue
            system, value = ident.get("system"), ident.get("value")
            if value is None and system is None:
                continue
            if _fits(system) and _fits(value):
                rows.append(("identifier", system, value))
    return rows


def _fits(text: object) -> bool:
    return text is None or (isinstance(text, str) and len(text) <= MAX_TOKEN_CHARS)
