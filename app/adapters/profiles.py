"""Adapter profiles (app/adapters/qhios.toml) and the per-registration settings over them.

A registration names a kind; the kind's profile gives the adapter code, the default auth
method and the capabilities; the registration's settings (`--set name=value`) override
capabilities and limits. Together they make the RegisteredEndpoint an adapter is built from.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, fields
from functools import cache
from importlib import resources
from typing import Any

from app.adapters.base import AdapterCapabilities
from app.adapters.config import AUTH_METHODS, RegisteredEndpoint

__all__ = [
    "ADAPTERS",
    "SETTINGS",
    "Profile",
    "endpoint_config",
    "load_profiles",
    "parse_setting",
]

ADAPTERS = ("fhir", "health-gorilla", "manifest-medex")
TRANSPORTS = ("fhir-rest", "hl7v2-mllp")
_CAPABILITY_FLAGS = ("identifier_search", "patient_match", "everything", "document_reference")
_NOT_LIMITS = {"name", "address", "kind", "capabilities", "headers"}
_LIMITS = {f.name for f in fields(RegisteredEndpoint)} - _NOT_LIMITS


@dataclass(frozen=True, slots=True)
class Profile:
    kind: str
    title: str
    qhio: bool
    adapter: str
    transport: str
    auth: str
    capabilities: AdapterCapabilities
    known: str
    unknown: str
    sources: tuple[str, ...]


def _profile(kind: str, data: dict[str, Any]) -> Profile:
    if data.get("adapter") not in ADAPTERS:
        raise ValueError(f"profile {kind}: adapter must be one of {', '.join(ADAPTERS)}")
    if data.get("transport") not in TRANSPORTS:
        raise ValueError(f"profile {kind}: transport must be one of {', '.join(TRANSPORTS)}")
    if data.get("auth") not in AUTH_METHODS:
        raise ValueError(f"profile {kind}: auth must be one of {', '.join(AUTH_METHODS)}")
    return Profile(
        kind=kind,
        title=str(data["title"]),
        qhio=bool(data.get("qhio", False)),
        adapter=data["adapter"],
        transport=data["transport"],
        auth=data["auth"],
        capabilities=AdapterCapabilities(
            **{flag: bool(data[flag]) for flag in _CAPABILITY_FLAGS},
            event_channels=frozenset(data.get("event_channels", ())),
        ),
        known=str(data.get("known", "")),
        unknown=str(data.get("unknown", "")),
        sources=tuple(data.get("sources", ())),
    )


@cache
def load_profiles() -> dict[str, Profile]:
    text = resources.files("app.adapters").joinpath("qhios.toml").read_text(encoding="utf-8")
    return {kind: _profile(kind, data) for kind, data in tomllib.loads(text).items()}


# ---- per-registration settings -----------------------------------------------------------------


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "yes", "1", "on"):
        return True
    if lowered in ("false", "no", "0", "off"):
        return False
    raise ValueError("expected true or false")


def _positive_float(text: str) -> float:
    value = float(text)
    if not 0 < value <= 3600:
        raise ValueError("expected a number of seconds in (0, 3600]")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 3600:
        raise ValueError("expected a number of seconds in [0, 3600]")
    return value


def _count(low: int, high: int) -> Any:
    def parse(text: str) -> int:
        value = int(text)
        if not low <= value <= high:
            raise ValueError(f"expected an integer in [{low}, {high}]")
        return value

    return parse


def _names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    for name in names:
        if not name.replace("-", "").replace(".", "").replace("_", "").isalnum():
            raise ValueError("expected comma-separated names")
    return names


# name -> parser; capabilities, limits, and the checks the registry runs
SETTINGS: dict[str, Any] = {
    "identifier_search": _bool,
    "patient_match": _bool,
    "everything": _bool,
    "document_reference": _bool,
    "event_channels": _names,
    "types": _names,
    "deadline_seconds": _positive_float,
    "max_attempts": _count(1, 10),
    "backoff_seconds": _non_negative_float,
    "max_backoff_seconds": _non_negative_float,
    "max_retry_after_seconds": _non_negative_float,
    "max_pages": _count(1, 10_000),
    "page_size": _count(1, 10_000),
    "max_response_bytes": _count(1024, 1024**3),
    "max_record_bytes": _count(1024, 16 * 1024**3),
    "match_count": _count(1, 100),
    "check_groups": _names,  # conformance kit groups the checks run (default: all)
    "tolerated_checks": _names,  # check ids (or id prefixes) whose failure keeps it active
}


def parse_setting(assignment: str) -> tuple[str, Any]:
    """`name=value` -> (name, typed value); ValueError naming the setting (never the value)."""
    name, sep, text = assignment.partition("=")
    name = name.strip().replace("-", "_")
    if not sep or name not in SETTINGS:
        raise ValueError(f"unknown setting {name!r}; known: {', '.join(sorted(SETTINGS))}")
    try:
        return name, SETTINGS[name](text)
    except ValueError as exc:
        raise ValueError(f"setting {name}: {exc}") from None


def endpoint_config(
    name: str, address: str, profile: Profile, settings: dict[str, Any]
) -> RegisteredEndpoint:
    base = profile.capabilities
    capabilities = AdapterCapabilities(
        **{flag: bool(settings.get(flag, getattr(base, flag))) for flag in _CAPABILITY_FLAGS},
        event_channels=frozenset(settings.get("event_channels", base.event_channels)),
        types=frozenset(settings.get("types", base.types)),
    )
    limits = {k: v for k, v in settings.items() if k in _LIMITS}
    return RegisteredEndpoint(
        name=name, address=address, kind=profile.kind, capabilities=capabilities, **limits
    )
