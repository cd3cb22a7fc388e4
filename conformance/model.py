"""What a check produces: a result (pass, fail, skip with the reason) and its evidence.

Every result names the rule it tests (a FHIR R4 http.html or search.html section, a US Core
page, a SMART App Launch page) and carries the requests and response excerpts that decided it,
so a reader can see why without rerunning the kit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

__all__ = ["Evidence", "Outcome", "Result", "Rule"]

_EXCERPT = 600


class Outcome(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    SKIP = "skip"


@dataclass(frozen=True, slots=True)
class Rule:
    """Where a check's expectation comes from."""

    source: str  # "FHIR R4 http", "FHIR R4 search", "SMART App Launch 2", "US Core 6.1"
    section: str  # human-readable section title
    url: str


@dataclass(slots=True)
class Evidence:
    """One exchange with the server, cut to what a reader needs."""

    method: str
    url: str
    status: int | None
    request_headers: dict[str, str] = field(default_factory=dict)
    request_body: str = ""
    response_headers: dict[str, str] = field(default_factory=dict)
    response_excerpt: str = ""

    @staticmethod
    def excerpt(text: str) -> str:
        return text if len(text) <= _EXCERPT else text[:_EXCERPT] + " [...]"

    def as_dict(self) -> dict[str, Any]:
        return {
            "request": {
                "method": self.method,
                "url": self.url,
                "headers": self.request_headers,
                "body": self.request_body,
            },
            "response": {
                "status": self.status,
                "headers": self.response_headers,
                "excerpt": self.response_excerpt,
            },
        }


@dataclass(slots=True)
class Result:
    id: str
    group: str
    title: str
    rule: Rule
    outcome: Outcome
    reason: str = ""
    evidence: list[Evidence] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "group": self.group,
            "title": self.title,
            "rule": {
                "source": self.rule.source,
                "section": self.rule.section,
                "url": self.rule.url,
            },
            "result": self.outcome.value,
            "reason": self.reason,
            "evidence": [e.as_dict() for e in self.evidence],
        }
