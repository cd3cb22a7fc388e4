"""Group `smart`: SMART App Launch 2.x discovery and, with credentials, a backend token request.

https://hl7.org/fhir/smart-app-launch/conformance.html: [base]/.well-known/smart-configuration
(under the FHIR base; one found only at the server's root is a failure that says so) is JSON
with `token_endpoint`, `capabilities`, `grant_types_supported` and
`code_challenge_methods_supported` (S256, never `plain`); `authorization_endpoint` when a
launch capability is claimed; `issuer` and `jwks_uri` with `sso-openid-connect`;
`client-confidential-asymmetric` needs private_key_jwt with RS384 or ES384. A server without the
document is skipped with that reason.
"""

from __future__ import annotations

from typing import Any

from conformance import rules
from conformance.context import Check, Context

__all__ = ["run"]


async def run(ctx: Context) -> None:
    c = ctx.check("discovery", "/.well-known/smart-configuration", rules.SMART_DISCOVERY)
    config = ctx.smart_config
    for evidence in ctx.smart_evidence:
        c.saw(evidence)
    if config is None:
        status = ctx.smart_evidence[0].status if ctx.smart_evidence else "none"
        c.skip(f"the server publishes no SMART discovery document (status {status})")
        _token_check(ctx, None)
        return
    problems = _discovery_problems(config)
    if ctx.smart_misplaced:
        problems.insert(
            0,
            "the document is at the server root, not at [FHIR base]/.well-known/"
            "smart-configuration where SMART App Launch puts it",
        )
    if c.expect(not problems, "; ".join(problems)):
        c.ok(f"capabilities: {', '.join(config.get('capabilities') or [])}")
    _token_check(ctx, config)


def _discovery_problems(config: dict[str, Any]) -> list[str]:
    problems = []
    caps = config.get("capabilities")
    if not isinstance(caps, list) or not all(isinstance(x, str) for x in caps):
        problems.append("capabilities is not an array of strings")
        caps = []
    endpoint = config.get("token_endpoint")
    if not (isinstance(endpoint, str) and endpoint.startswith(("https://", "http://"))):
        problems.append("token_endpoint is missing or not an absolute URL")
    grants = config.get("grant_types_supported")
    if not isinstance(grants, list) or not grants:
        problems.append("grant_types_supported is missing")
    challenge = config.get("code_challenge_methods_supported")
    if challenge is not None or "authorization_code" in (grants or []):
        if not isinstance(challenge, list) or "S256" not in challenge:
            problems.append("code_challenge_methods_supported lacks S256")
        elif "plain" in challenge:
            problems.append("code_challenge_methods_supported offers plain")
    if {"launch-ehr", "launch-standalone"} & set(caps) and not config.get("authorization_endpoint"):
        problems.append("a launch capability is claimed without authorization_endpoint")
    if "sso-openid-connect" in caps and not (config.get("issuer") and config.get("jwks_uri")):
        problems.append("sso-openid-connect is claimed without issuer and jwks_uri")
    if "client-confidential-asymmetric" in caps:
        methods = config.get("token_endpoint_auth_methods_supported") or []
        algs = set(config.get("token_endpoint_auth_signing_alg_values_supported") or [])
        if "private_key_jwt" not in methods:
            problems.append("client-confidential-asymmetric without private_key_jwt")
        if not algs & {"RS384", "ES384"}:
            problems.append("client-confidential-asymmetric without RS384 or ES384")
    return problems


def _token_check(ctx: Context, config: dict[str, Any] | None) -> None:
    c: Check = ctx.check("token", "backend services token request", rules.SMART_BACKEND)
    for evidence in ctx.token_evidence:
        c.saw(evidence)
    if ctx.token_error is None and not ctx.token_evidence:
        c.skip("no --client-id/--key given, so no token was requested")
    elif ctx.token_error:
        c.fail(ctx.token_error)
    else:
        c.ok()
