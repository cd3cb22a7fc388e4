"""Runs the kit against one FHIR base: discovery, token, the selected groups, then cleanup.

Any server reachable over HTTP, or an in-process app through an httpx transport. The run reads
[base]/metadata and [base]/.well-known/smart-configuration first; with a client id and key it
gets its token from the server's token endpoint (SMART Backend Services), otherwise it uses the
token it was given (or none).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from conformance.client import FhirClient
from conformance.context import Capabilities, Context
from conformance.fixtures import cleanup
from conformance.model import Outcome, Result
from conformance.registry import GROUPS
from conformance.smart import request_token

__all__ = ["Report", "run_kit"]


@dataclass
class Report:
    base_url: str
    started: str
    seconds: float = 0.0
    software: str = ""
    read_only: bool = False
    groups: list[str] = field(default_factory=list)
    results: list[Result] = field(default_factory=list)
    leftovers: list[str] = field(default_factory=list)  # resources the kit could not delete

    def count(self, outcome: Outcome) -> int:
        return sum(1 for r in self.results if r.outcome is outcome)

    @property
    def failed(self) -> bool:
        return self.count(Outcome.FAIL) > 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "base_url": self.base_url,
            "started": self.started,
            "seconds": round(self.seconds, 2),
            "software": self.software,
            "read_only": self.read_only,
            "groups": self.groups,
            "summary": {o.value: self.count(o) for o in Outcome},
            "leftovers": self.leftovers,
            "results": [r.as_dict() for r in self.results],
        }


async def run_kit(
    base_url: str,
    *,
    token: str | None = None,
    client_id: str | None = None,
    key: Any = None,
    scope: str = "system/*.cruds",
    transport: httpx.AsyncBaseTransport | None = None,
    read_only: bool = False,
    only: Sequence[str] | None = None,
) -> Report:
    unknown = sorted(set(only or ()) - set(GROUPS))
    if unknown:
        raise ValueError(f"unknown group(s) {', '.join(unknown)}; known: {', '.join(GROUPS)}")
    selected = [g for g in GROUPS if not only or g in only]
    report = Report(
        base_url=base_url.rstrip("/"),
        started=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        read_only=read_only,
        groups=selected,
    )
    began = time.monotonic()
    client = FhirClient(base_url, token=token, transport=transport)
    try:
        metadata = await client.get("metadata", authorize=False)
        if metadata.status == 401 and token:
            metadata = await client.get("metadata")
        statement = metadata.body if metadata.resource_type == "CapabilityStatement" else None
        ctx = Context(client=client, capabilities=Capabilities(statement), read_only=read_only)
        ctx.shared["metadata_reply"] = metadata
        software = (statement or {}).get("software") or {}
        report.software = " ".join(str(software.get(k, "")) for k in ("name", "version")).strip()
        await _discover(ctx, client_id=client_id, key=key, scope=scope)
        try:
            for name in selected:
                ctx.group = name
                if statement is None and name != "capability":
                    ctx.check("all", f"group {name}", GROUPS[name].rule).skip(
                        "the server answered no CapabilityStatement"
                    )
                    continue
                try:
                    await GROUPS[name].run(ctx)
                except (httpx.HTTPError, AttributeError, KeyError, TypeError, ValueError) as exc:
                    ctx.check("aborted", f"group {name} stopped", GROUPS[name].rule).fail(
                        f"the group stopped on {type(exc).__name__}: {exc}"
                    )
        finally:
            report.leftovers = await cleanup(ctx)
        report.results = ctx.results
    finally:
        await client.aclose()
        report.seconds = time.monotonic() - began
    return report


async def _discover(ctx: Context, *, client_id: str | None, key: Any, scope: str) -> None:
    reply = await ctx.client.get(".well-known/smart-configuration", authorize=False)
    ctx.smart_evidence.append(reply.evidence)
    if reply.status == 200 and isinstance(reply.body, dict):
        ctx.smart_config = reply.body
    else:
        # SMART puts it under the FHIR base; look at the origin's root too, to say so precisely
        origin = httpx.URL(ctx.client.base_url).copy_with(path="/", query=None)
        if str(origin).rstrip("/") != ctx.client.base_url:
            root = await ctx.client.get(
                str(origin.join(".well-known/smart-configuration")), authorize=False
            )
            if root.status == 200 and isinstance(root.body, dict):
                ctx.smart_evidence.append(root.evidence)
                ctx.smart_config = root.body
                ctx.smart_misplaced = True
    if not (client_id and key is not None):
        return
    endpoint = (ctx.smart_config or {}).get("token_endpoint")
    if not isinstance(endpoint, str):
        ctx.token_error = "credentials were given but discovery names no token_endpoint"
        return
    async with httpx.AsyncClient(transport=ctx.client.transport, timeout=30) as http:
        body, evidence = await request_token(
            http, token_endpoint=endpoint, client_id=client_id, key=key, scope=scope
        )
    ctx.token_evidence.append(evidence)
    if evidence.status != 200 or not body or not isinstance(body.get("access_token"), str):
        ctx.token_error = f"token endpoint answered {evidence.status} without an access_token"
    elif str(body.get("token_type", "")).lower() != "bearer":
        ctx.token_error = f"token_type {body.get('token_type')!r}, expected bearer"
    elif "expires_in" not in body or "scope" not in body:
        ctx.token_error = "the token response lacks expires_in or scope"
    else:
        ctx.client.token = body["access_token"]
