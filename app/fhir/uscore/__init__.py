"""US Core 6.1.0 (https://hl7.org/fhir/us/core/STU6.1/) as data: the profiles, what claiming
each one demands of a server, and which of them a resource meets.

The CapabilityStatement (app/fhir/rest/metadata.py) declares a profile only where `unmet()` is
empty for the type's served capabilities; the mappers (HL7v2, APCD-CDL) call `stamp_profiles()`
so a resource carries `meta.profile` only for the profiles whose mandatory elements and fixed
codes it has; the conformance kit (conformance/checks/uscore.py) reads the same table.
"""

from __future__ import annotations

from typing import Any

from app.fhir.uscore.claims import COMPARATORS, TypeCapabilities, instantiates_gaps, unmet
from app.fhir.uscore.model import (
    IG,
    SERVER_STATEMENT,
    VERSION,
    Coded,
    Profile,
    identity_matches,
    missing,
    populated,
    values_at,
)
from app.fhir.uscore.observations import OBSERVATION_PROFILES, VITAL_SIGN_CODES
from app.fhir.uscore.profiles import OTHER_PROFILES, SEARCH_PATHS

__all__ = [
    "BY_SLUG",
    "COMPARATORS",
    "IG",
    "PROFILES",
    "SEARCH_PATHS",
    "SERVER_STATEMENT",
    "VERSION",
    "VITAL_SIGN_CODES",
    "Coded",
    "Profile",
    "TypeCapabilities",
    "instance_of",
    "instantiates_gaps",
    "missing",
    "populated",
    "profile_for",
    "profiles_of",
    "stamp_profiles",
    "unmet",
    "values_at",
]

PROFILES: tuple[Profile, ...] = (*OTHER_PROFILES, *OBSERVATION_PROFILES)
BY_SLUG: dict[str, Profile] = {p.slug: p for p in PROFILES}
_BY_URL: dict[str, Profile] = {p.url: p for p in PROFILES}
_BY_TYPE: dict[str, tuple[Profile, ...]] = {
    t: tuple(p for p in PROFILES if p.type == t) for t in {p.type for p in PROFILES}
}


def profile_for(canonical: str) -> Profile | None:
    """The profile a (possibly versioned) canonical names, if it is a US Core 6.1.0 one."""
    url, _, version = canonical.partition("|")
    found = _BY_URL.get(url)
    return found if found is not None and version in ("", VERSION) else None


def profiles_of(resource_type: str) -> tuple[Profile, ...]:
    return _BY_TYPE.get(resource_type, ())


def instance_of(resource: dict[str, Any], profile: Profile) -> bool:
    """`resource` is of the profile's type and carries its identifying codes (the category or
    code that tells, say, a laboratory result from a heart rate): an instance the profile's
    mandatory elements apply to."""
    return resource.get("resourceType") == profile.type and all(
        identity_matches(resource, element, codings) for element, codings in profile.identity
    )


def stamp_profiles(resource: dict[str, Any]) -> list[str]:
    """Add to `meta.profile` the US Core profiles `resource` is an instance of and meets
    (mandatory elements and fixed codes; terminology bindings beyond fixed codes are not
    checked). A specific profile is preferred to an umbrella one (heart rate over vital
    signs, laboratory result over clinical result). Returns the canonicals added."""
    fitting = [
        p
        for p in profiles_of(str(resource.get("resourceType")))
        if instance_of(resource, p) and not missing(resource, p)
    ]
    specific = [p for p in fitting if not p.generic]
    chosen = specific or fitting[:1]
    if not chosen:
        return []
    meta = resource.setdefault("meta", {})
    have = meta.setdefault("profile", [])
    added = [p.canonical for p in chosen if p.canonical not in have]
    have.extend(added)
    return added
