"""The shape of one US Core 6.1.0 profile's requirements, and the checks that read it.

A `Profile` holds what US Core 6.1.0 demands of a server that claims the profile (the SHALL
interactions, searches, search combinations, comparators, multipleOr, chains, operations,
_includes and _revincludes of https://hl7.org/fhir/us/core/STU6.1/CapabilityStatement-us-core-server.html)
and of the resources it serves (the mandatory elements, min 1, and the must-support elements of
the profile's StructureDefinition). `missing()` is the one reading of "mandatory" the server,
the mappers and the conformance kit share.

Element paths are dotted FHIR JSON paths relative to the resource (`identifier.system`,
`valueQuantity.code`). A `[x]` suffix matches any type of a choice (`effective[x]`). A path is
mandatory where its parent exists: `telecom.system` must be in every `telecom`, while a resource
without `telecom` is fine; a top-level path must always be present. Mandatory children that
US Core places on a slice only (Coverage `identifier:memberid.type`, the vital-signs
`category:VSCat.coding`) are not listed as paths: the slice's fixed codes are `identity`
instead. A must-support entry `a|b` is a choice: either element counts.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

__all__ = [
    "BASE",
    "IG",
    "SERVER_STATEMENT",
    "UCUM",
    "VERSION",
    "Coded",
    "Profile",
    "identity_matches",
    "missing",
    "populated",
    "values_at",
]

VERSION = "6.1.0"
BASE = "http://hl7.org/fhir/us/core"
IG = f"{BASE}/ImplementationGuide/hl7.fhir.us.core"
SERVER_STATEMENT = f"{BASE}/CapabilityStatement/us-core-server"
PAGES = "https://hl7.org/fhir/us/core/STU6.1"
UCUM = "http://unitsofmeasure.org"


@dataclass(frozen=True, slots=True)
class Coded:
    system: str
    code: str


@dataclass(frozen=True, slots=True)
class Profile:
    """One profile's requirements (see the module docstring). `identity` tells this profile's
    instances from other instances of the type (an element that must carry one of the codings);
    `generic` marks umbrella profiles (clinical result, vital signs) that a more specific
    profile of the same instance is preferred to; `references` are the US Core profiles its
    must-support references point at (slugs)."""

    slug: str
    type: str
    title: str
    interactions: tuple[str, ...] = ("read", "search-type")
    searches: tuple[tuple[str, ...], ...] = ()
    comparators: tuple[str, ...] = ()  # date parameters whose gt, ge, lt, le are SHALL
    multiple_or: tuple[str, ...] = ()  # parameters whose multipleOr is SHALL
    chains: tuple[str, ...] = ()  # "practitioner.identifier": SHALL chained parameters
    operations: tuple[str, ...] = ()
    includes: tuple[str, ...] = ()
    revincludes: tuple[str, ...] = ("Provenance:target",)
    mandatory: tuple[str, ...] = ()
    must_support: tuple[str, ...] = ()
    extensions: tuple[str, ...] = ()  # must-support extension URLs
    identity: tuple[tuple[str, tuple[Coded, ...]], ...] = ()
    units: tuple[str, ...] = ()  # UCUM codes a valueQuantity must use
    references: tuple[str, ...] = ()
    generic: bool = False

    @property
    def url(self) -> str:
        return f"{BASE}/StructureDefinition/{self.slug}"

    @property
    def canonical(self) -> str:
        """The versioned canonical (`url|6.1.0`) the server declares and meta.profile carries."""
        return f"{self.url}|{VERSION}"

    @property
    def page(self) -> str:
        return f"{PAGES}/StructureDefinition-{self.slug}.html"

    @property
    def statement_page(self) -> str:
        return f"{PAGES}/CapabilityStatement-us-core-server.html#{self.type.lower()}"


def _key_matches(key: str, name: str) -> bool:
    if name.endswith("[x]"):
        stem = name[:-3]
        return key.startswith(stem) and key[len(stem) : len(stem) + 1].isupper()
    return key == name


def _children(node: Any, name: str) -> Iterator[Any]:
    if not isinstance(node, dict):
        return
    if not name.endswith("[x]"):  # one key at most: look it up
        value = node.get(name, _ABSENT)
        if value is not _ABSENT:
            if isinstance(value, list):
                yield from value
            else:
                yield value
        return
    for key, value in node.items():
        if _key_matches(key, name):
            if isinstance(value, list):
                yield from value
            else:
                yield value


_ABSENT = object()


def values_at(node: Any, path: str) -> list[Any]:
    """Every value at `path` under `node`, lists flattened."""
    found = [node]
    for name in path.split("."):
        found = [child for item in found for child in _children(item, name)]
    return found


def _has(node: dict[str, Any], name: str) -> bool:
    """`name` is present: a non-empty value, or (for a primitive) only an extension `_name`
    such as a data-absent-reason (US Core's rule for unknown mandatory data)."""
    if not name.endswith("[x]"):
        return any(node.get(k) not in (None, "", [], {}) for k in (name, "_" + name))
    for key, value in node.items():
        bare = key[1:] if key.startswith("_") else key
        if _key_matches(bare, name) and value not in (None, "", [], {}):
            return True
    return False


def missing(resource: dict[str, Any], profile: Profile) -> list[str]:
    """The profile's mandatory elements and fixed codes `resource` lacks ([] when it has all)."""
    absent: list[str] = []
    for path in profile.mandatory:
        parent, _, leaf = path.rpartition(".")
        holders = [resource] if not parent else values_at(resource, parent)
        if any(isinstance(h, dict) and not _has(h, leaf) for h in holders):
            absent.append(path)
    for element, codings in profile.identity:
        if not identity_matches(resource, element, codings):
            wanted = " or ".join(f"{c.system}|{c.code}" for c in codings)
            absent.append(f"{element} ({wanted})")
    if profile.units:
        for quantity in values_at(resource, "valueQuantity"):
            if not isinstance(quantity, dict):
                continue
            if quantity.get("system") != UCUM or quantity.get("code") not in profile.units:
                absent.append(f"valueQuantity.code (UCUM {' or '.join(profile.units)})")
    return absent


def identity_matches(resource: dict[str, Any], element: str, codings: tuple[Coded, ...]) -> bool:
    """Some CodeableConcept (or Coding) at `element` carries one of `codings`."""
    wanted = {(c.system, c.code) for c in codings}
    for value in values_at(resource, element):
        if not isinstance(value, dict):
            continue
        for coding in value.get("coding", [value]):
            if isinstance(coding, dict) and (coding.get("system"), coding.get("code")) in wanted:
                return True
    return False


def populated(resource: dict[str, Any], entry: str) -> bool:
    """A must-support entry (`a.b`, or `a|b` for a choice) has a value in `resource`."""
    for path in entry.split("|"):
        parent, _, leaf = path.rpartition(".")
        holders = [resource] if not parent else values_at(resource, parent)
        if any(isinstance(h, dict) and _has(h, leaf) for h in holders):
            return True
    return False
