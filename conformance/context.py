"""What every check group sees: the client, the server's declared capabilities, the results so far.

`Check` is the small recorder a group opens per check: it collects evidence and ends with exactly
one of pass, fail or skip (with the reason). `Capabilities` reads the CapabilityStatement
(https://hl7.org/fhir/R4/capabilitystatement.html) into the questions the checks ask.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from conformance.client import FhirClient, Reply
from conformance.model import Evidence, Outcome, Result, Rule

__all__ = ["Capabilities", "Check", "Context"]

US_CORE = "http://hl7.org/fhir/us/core/"


class Capabilities:
    def __init__(self, statement: dict[str, Any] | None) -> None:
        self.statement = statement or {}
        rest = next((r for r in self.statement.get("rest") or [] if r.get("mode") == "server"), {})
        self.rest: dict[str, Any] = rest
        self.resources: dict[str, dict[str, Any]] = {
            r["type"]: r for r in rest.get("resource") or [] if isinstance(r.get("type"), str)
        }

    def types(self) -> list[str]:
        return sorted(self.resources)

    def interactions(self, rtype: str) -> set[str]:
        entry = self.resources.get(rtype, {})
        return {i.get("code") for i in entry.get("interaction") or []}

    def search_params(self, rtype: str) -> dict[str, str]:
        entry = self.resources.get(rtype, {})
        return {p["name"]: p.get("type", "") for p in entry.get("searchParam") or [] if "name" in p}

    def operations(self, rtype: str) -> set[str]:
        entry = self.resources.get(rtype, {})
        return {o.get("name", "").lstrip("$") for o in entry.get("operation") or []}

    def includes(self, rtype: str) -> set[str]:
        return set(self.resources.get(rtype, {}).get("searchInclude") or [])

    def revincludes(self, rtype: str) -> set[str]:
        return set(self.resources.get(rtype, {}).get("searchRevInclude") or [])

    def profiles(self, rtype: str) -> list[str]:
        entry = self.resources.get(rtype, {})
        return [
            *([entry["profile"]] if entry.get("profile") else []),
            *(entry.get("supportedProfile") or []),
        ]

    def claims_us_core(self, rtype: str) -> bool:
        return any(p.startswith(US_CORE) for p in self.profiles(rtype))

    def secured(self) -> bool:
        return bool((self.rest.get("security") or {}).get("service"))


class Check:
    def __init__(self, ctx: Context, check_id: str, title: str, rule: Rule) -> None:
        self._ctx = ctx
        self.result = Result(check_id, ctx.group, title, rule, Outcome.SKIP, "not run")
        self._done = False

    def saw(self, reply: Reply | Evidence) -> Reply | Evidence:
        self.result.evidence.append(reply.evidence if isinstance(reply, Reply) else reply)
        return reply

    def _end(self, outcome: Outcome, reason: str) -> bool:
        if not self._done:
            self._done = True
            self.result.outcome = outcome
            self.result.reason = reason
            self._ctx.results.append(self.result)
        return outcome is Outcome.PASS

    def ok(self, note: str = "") -> bool:
        return self._end(Outcome.PASS, note)

    def fail(self, reason: str) -> bool:
        return self._end(Outcome.FAIL, reason)

    def skip(self, reason: str) -> bool:
        return self._end(Outcome.SKIP, reason)

    def expect(self, condition: bool, reason: str) -> bool:
        """Fail with `reason` unless `condition`; returns the condition so callers can stop."""
        if not condition:
            self.fail(reason)
        return condition

    @property
    def done(self) -> bool:
        return self._done


@dataclass
class Context:
    client: FhirClient
    capabilities: Capabilities
    read_only: bool = False
    smart_config: dict[str, Any] | None = None
    smart_evidence: list[Evidence] = field(default_factory=list)
    smart_misplaced: bool = False  # found at the server root, not under the FHIR base
    token_evidence: list[Evidence] = field(default_factory=list)
    token_error: str | None = None
    results: list[Result] = field(default_factory=list)
    group: str = ""
    created: list[str] = field(default_factory=list)  # "Type/id" the kit must remove
    shared: dict[str, Any] = field(default_factory=dict)  # fixtures groups share (e.g. samples)

    def check(self, check_id: str, title: str, rule: Rule) -> Check:
        return Check(self, f"{self.group}.{check_id}", title, rule)
