"""GET /fhir/metadata: the CapabilityStatement, generated from the route table.

https://hl7.org/fhir/R4/capabilitystatement.html. Interactions are listed only when a route in
`router.ROUTES` serves them; search parameters come from the search registry; nothing here is
written by hand, so the statement cannot claim what the server does not do. US Core 6.1.0
profiles (app/fhir/uscore) are declared in `supportedProfile` only for the types whose
generated entry meets every SHALL of the profile, and the US Core Server CapabilityStatement
is instantiated only when the claimed profiles meet that statement's SHALLs.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Protocol

from app import __version__
from app.audit.api import AUDIT_TYPE
from app.audit.api import SEARCH_PARAMS as AUDIT_SEARCH_PARAMS
from app.events.topic import TOPIC_URL
from app.fhir.models import RESOURCE_TYPES
from app.fhir.search.criteria import search_params
from app.fhir.search.registry import params_for
from app.fhir.uscore import (
    IG,
    PROFILES,
    SERVER_STATEMENT,
    VERSION,
    Profile,
    TypeCapabilities,
    instantiates_gaps,
    profiles_of,
    unmet,
)
from app.settings import Settings

__all__ = ["capability_statement"]

# The statement describes this running instance: it is dated when the process started.
_PUBLISHED = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
_TYPE_ORDER = (
    "read",
    "vread",
    "update",
    "patch",
    "delete",
    "history-instance",
    "history-type",
    "create",
    "search-type",
)
_SYSTEM_ORDER = ("transaction", "batch", "search-system", "history-system")


class _Route(Protocol):
    @property
    def interaction(self) -> str | None: ...
    @property
    def level(self) -> str: ...
    @property
    def operation(self) -> str | None: ...


# Operations this server implements, by the type they run on, with their official definitions.
_OPERATIONS = {
    "everything": (
        "Patient",
        "http://hl7.org/fhir/OperationDefinition/Patient-everything",
    ),
    "match": (
        "Patient",
        "http://hl7.org/fhir/OperationDefinition/Patient-match",
    ),
}


def _includes(rtype: str) -> tuple[list[str], list[str]]:
    """`Type:param` for each served reference parameter of `rtype` (_include), and for each
    served reference parameter of any type that may point at `rtype` (_revinclude)."""
    includes = sorted(f"{rtype}:{n}" for n, k in search_params(rtype).items() if k == "reference")
    return includes, list(_revincludes().get(rtype, ()))


@lru_cache(maxsize=1)
def _revincludes() -> dict[str, tuple[str, ...]]:
    pointing: dict[str, list[str]] = {}
    for source in sorted(RESOURCE_TYPES):
        for name, kind in search_params(source).items():
            if kind != "reference" or name not in params_for(source):
                continue
            for target in params_for(source)[name].target:
                pointing.setdefault(target, []).append(f"{source}:{name}")
    return {t: tuple(sorted(v)) for t, v in pointing.items()}


_BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"


def capability_statement(routes: Iterable[_Route], settings: Settings) -> dict[str, Any]:
    routes = list(routes)
    served = frozenset((r.interaction, r.level) for r in routes if r.interaction)
    operations = frozenset(r.operation for r in routes if r.operation)
    endpoints = tuple(
        (n, settings.endpoint(n)) for n in ("authorize", "token", "introspect", "revoke")
    )
    return _statement(served, operations, settings.fhir_base_url, endpoints)


def _oauth_uris(endpoints: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    """The SMART oauth-uris extension: the same endpoints as /.well-known/smart-configuration."""
    return {
        "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
        "extension": [{"url": name, "valueUri": uri} for name, uri in endpoints],
    }


@lru_cache(maxsize=8)
def _statement(
    served: frozenset[tuple[str, str]],
    operations: frozenset[str],
    fhir_base: str,
    endpoints: tuple[tuple[str, str], ...],
) -> dict[str, Any]:
    codes = {code for code, _ in served}
    type_codes = [c for c in _TYPE_ORDER if any((c, lvl) in served for lvl in ("type", "instance"))]
    resources = []
    for rtype in sorted(RESOURCE_TYPES):
        entry: dict[str, Any] = {
            "type": rtype,
            "interaction": [{"code": c} for c in type_codes],
            "versioning": "versioned-update",
            "readHistory": "vread" in codes,
            "updateCreate": "update" in codes,
            "conditionalCreate": "create" in codes,
            "conditionalRead": "not-supported",
            "conditionalUpdate": ("update", "type") in served,
            "conditionalDelete": "not-supported",
        }
        if "search-type" in codes:
            entry["searchParam"] = [
                {"name": name, "type": kind} for name, kind in search_params(rtype).items()
            ]
            includes, revincludes = _includes(rtype)
            entry["searchInclude"] = ["*", *includes]
            entry["searchRevInclude"] = revincludes
        declared = [
            {"name": name, "definition": definition}
            for name, (on_type, definition) in sorted(_OPERATIONS.items())
            if name in operations and on_type == rtype
        ]
        if declared:
            entry["operation"] = declared
        if rtype == "Subscription":  # topic-based, R4 backport (app/events, docs/events.md)
            entry["extension"] = [
                {"url": _BACKPORT + "capabilitystatement-subscriptiontopic-canonical",
                 "valueCanonical": TOPIC_URL}
            ]  # fmt: skip
            entry["supportedProfile"] = [_BACKPORT + "backport-subscription"]
        if rtype == AUDIT_TYPE:  # read-only, from the audit log (app/audit/api.py)
            entry.update(
                interaction=[{"code": c} for c in type_codes if c in ("read", "search-type")],
                readHistory=False,
                updateCreate=False,
                conditionalCreate=False,
                conditionalUpdate=False,
                searchParam=[{"name": n, "type": t} for n, t in AUDIT_SEARCH_PARAMS.items()],
            )
        resources.append(entry)
    claimed = _claim_us_core(resources)
    rest: dict[str, Any] = {
        "mode": "server",
        "security": {
            "cors": True,  # app/auth/cors.py
            "extension": [_oauth_uris(endpoints)],
            "service": [
                {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                            "code": "SMART-on-FHIR",
                        }
                    ]
                }
            ],
            "description": (
                "SMART App Launch 2 and Backend Services. Every request except GET /metadata "
                "needs a Bearer JWT access token from this server's token endpoint (signed by "
                "the key at /.well-known/jwks.json), with aud set to "
                f"{fhir_base} and SMART v1 or v2 clinical scopes. Discovery: "
                f"{fhir_base}/.well-known/smart-configuration."
            ),
        },
        "resource": resources,
        "interaction": [{"code": c} for c in _SYSTEM_ORDER if c in codes],
    }
    statement: dict[str, Any] = {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": _PUBLISHED,
        "publisher": "dxf-bridge",
        "kind": "instance",
    }
    if claimed and not instantiates_gaps(claimed, PROFILES):
        statement["instantiates"] = [f"{SERVER_STATEMENT}|{VERSION}"]
    statement.update(
        {
            "software": {"name": "dxf-bridge", "version": __version__},
            "implementation": {"description": "dxf-bridge FHIR R4 facade", "url": fhir_base},
            "fhirVersion": "4.0.1",
            "format": ["application/fhir+json", "json"],
        }
    )
    if "instantiates" in statement:
        statement["implementationGuide"] = [f"{IG}|{VERSION}"]
    statement["rest"] = [rest]
    return statement


def _claim_us_core(resources: list[dict[str, Any]]) -> list[Profile]:
    """Set `supportedProfile` on each entry to the US Core profiles it meets; all claimed."""
    claimed: list[Profile] = []
    for entry in resources:
        fitting = [p for p in profiles_of(entry["type"]) if not unmet(p, capabilities(entry))]
        if fitting:
            entry["supportedProfile"] = [p.canonical for p in fitting]
            claimed += fitting
    return claimed


def capabilities(entry: dict[str, Any]) -> TypeCapabilities:
    """A generated resource entry as the US Core claim reads it: the declared interactions,
    parameters, includes, revincludes and operations, and from the search registry which
    parameters take OR lists and what a reference parameter can be chained to."""
    rtype = entry["type"]
    params = {p["name"]: p["type"] for p in entry.get("searchParam", ())}
    registry = params_for(rtype)

    def chainable(ref: str, target_param: str) -> bool:
        targets = registry[ref].target if ref in registry else ()
        return bool(targets) and all(target_param in search_params(t) for t in targets)

    return TypeCapabilities(
        interactions=frozenset(i["code"] for i in entry["interaction"]),
        params=params,
        multiple_or=frozenset(
            n for n in params if n == "_id" or (n in registry and registry[n].multiple_or)
        ),
        includes=frozenset(entry.get("searchInclude", ())),
        revincludes=frozenset(entry.get("searchRevInclude", ())),
        operations=frozenset(o["name"] for o in entry.get("operation", ())),
        chainable=chainable,
    )
