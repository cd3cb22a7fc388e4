"""Small predicates the check groups share."""

from __future__ import annotations

import uuid
from typing import Any

from conformance.client import Reply
from conformance.context import Check

__all__ = ["expect_outcome", "is_bundle", "new_id", "same_resource"]


def same_resource(body: Any, rtype: str, rid: str | None) -> bool:
    return (
        isinstance(body, dict)
        and body.get("resourceType") == rtype
        and bool(body.get("id"))
        and (rid is None or str(body["id"]) == rid)
    )


def is_bundle(body: Any, kind: str) -> bool:
    return (
        isinstance(body, dict) and body.get("resourceType") == "Bundle" and body.get("type") == kind
    )


def new_id() -> str:
    return f"kit-unknown-{uuid.uuid4().hex[:16]}"


def expect_outcome(c: Check, reply: Reply, statuses: tuple[int, ...]) -> bool:
    """Pass when the reply has one of `statuses` and an OperationOutcome body."""
    c.saw(reply)
    wanted = " or ".join(str(s) for s in statuses)
    return (
        c.expect(reply.status in statuses, f"status {reply.status}, expected {wanted}")
        and c.expect(reply.is_outcome(), "the error body is not an OperationOutcome")
        and c.ok()
    )
