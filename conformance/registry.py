"""The check registry: each group's name, what it covers, and the coroutine that runs it.

Groups run in this order; `--only GROUP` picks one (or several, comma-separated). Each group
records its checks through `Context.check`, each with an id, a rule, a result and evidence.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from conformance import rules
from conformance.checks import (
    capability,
    crud,
    errors,
    http,
    operations,
    search,
    smart,
    system,
    uscore,
)
from conformance.context import Context
from conformance.model import Rule

__all__ = ["GROUPS", "Group"]


@dataclass(frozen=True)
class Group:
    name: str
    description: str
    run: Callable[[Context], Awaitable[None]]
    rule: Rule  # the rule a group-level result (skipped, stopped) cites


GROUPS: dict[str, Group] = {
    g.name: g
    for g in (
        Group(
            "capability", "the CapabilityStatement at /metadata", capability.run, rules.CAPABILITIES
        ),
        Group("crud", "every declared interaction on every declared type", crud.run, rules.READ),
        Group(
            "system",
            "transaction, batch, system history and search",
            system.run,
            rules.TRANSACTION,
        ),
        Group(
            "search",
            "every declared search parameter, modifiers and prefixes",
            search.run,
            rules.SEARCH_TYPES,
        ),
        Group("errors", "error statuses with OperationOutcome", errors.run, rules.ERRORS),
        Group("http", "content types, ETag/If-Match, paging, _include", http.run, rules.VERSIONING),
        Group("operations", "declared operations ($everything)", operations.run, rules.EVERYTHING),
        Group(
            "smart", "SMART discovery and backend token request", smart.run, rules.SMART_DISCOVERY
        ),
        Group(
            "us-core",
            "US Core 6.1 required searches where claimed",
            uscore.run,
            rules.US_CORE_SEARCH,
        ),
    )
}
