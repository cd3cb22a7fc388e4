"""Which US Core 6.1.0 profiles a server may claim, from what it serves.

https://hl7.org/fhir/us/core/STU6.1/CapabilityStatement-us-core-server.html: a server claiming a
profile (`rest.resource.supportedProfile`) SHALL serve the profile's SHALL interactions,
searches and combinations (with the SHALL comparators, multipleOr and chains), operations,
_includes and _revincludes. `unmet()` lists what a resource type's capabilities lack for one
profile; the CapabilityStatement declares a profile only when the list is empty.

A server may put the US Core Server CapabilityStatement in `instantiates` only if it meets all of
that statement's SHALLs: the US Core Patient profile and at least one more, and every US Core
profile a claimed profile's must-support references point at (`instantiates_gaps()`). The
remaining SHALLs of that statement (JSON, RESTful behaviour, the 400/401/403/404 answers) hold
for every type this server serves.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass

from app.fhir.uscore.model import Profile

__all__ = ["COMPARATORS", "TypeCapabilities", "instantiates_gaps", "unmet"]

COMPARATORS = ("gt", "ge", "lt", "le")


@dataclass(frozen=True, slots=True)
class TypeCapabilities:
    """What a server declares for one resource type, as the claim needs it."""

    interactions: frozenset[str]
    params: Mapping[str, str]  # search parameter -> its type
    multiple_or: frozenset[str]  # parameters that accept a comma-separated OR list
    includes: frozenset[str]
    revincludes: frozenset[str]
    operations: frozenset[str]
    chainable: Callable[[str, str], bool]  # (reference parameter, target parameter)


def unmet(profile: Profile, caps: TypeCapabilities) -> list[str]:
    """What `caps` lacks of `profile`'s SHALLs, as short phrases ([] when it has everything)."""
    gaps = [f"interaction {i}" for i in profile.interactions if i not in caps.interactions]
    if profile.searches and "search-type" not in caps.interactions:
        gaps.append("interaction search-type (for the SHALL searches)")
    needed = {p for combo in profile.searches for p in combo}
    gaps += [f"search parameter {p}" for p in sorted(needed) if p not in caps.params]
    for name in profile.comparators:
        if caps.params.get(name) not in (None, "date"):
            gaps.append(f"comparators {', '.join(COMPARATORS)} on {name}")
    gaps += [f"multipleOr on {p}" for p in profile.multiple_or if p not in caps.multiple_or]
    for chain in profile.chains:
        ref, _, target = chain.partition(".")
        if caps.params.get(ref) != "reference" or not caps.chainable(ref, target):
            gaps.append(f"chained search {chain}")
    gaps += [f"operation ${op}" for op in profile.operations if op not in caps.operations]
    gaps += [f"_include {i}" for i in profile.includes if i not in caps.includes]
    gaps += [f"_revinclude {r}" for r in profile.revincludes if r not in caps.revincludes]
    return gaps


def instantiates_gaps(claimed: Collection[Profile], known: Iterable[Profile]) -> list[str]:
    """Why the server may not instantiate the US Core Server CapabilityStatement ([] if it may)."""
    slugs = {p.slug for p in claimed}
    gaps = []
    if "us-core-patient" not in slugs:
        gaps.append("the US Core Patient profile is not supported")
    if len(slugs - {"us-core-patient"}) < 1:
        gaps.append("no US Core profile besides Patient is supported")
    titles = {p.slug: p.title for p in known}
    referenced = sorted({ref for p in claimed for ref in p.references} - slugs)
    gaps += [f"{titles.get(ref, ref)} (a must-support reference target)" for ref in referenced]
    return gaps
