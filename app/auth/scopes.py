"""SMART clinical scope grammar, v1 and v2, into an AccessPolicy.

v1 (SMART App Launch 1.0): `patient|user|system` `/` `Type|*` `.` `read|write|*`
v2 (SMART App Launch 2.x): `patient|user|system` `/` `Type|*` `.` one or more of `c r u d s`
in that order, optionally followed by `?param=value` constraints.
See https://hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html.

v1 `read` means `rs`, `write` means `cud`, `*` means `cruds`. A v2 scope with `?` constraints
is not honoured yet: it grants nothing (fail closed) rather than more than it says.
Scopes that are not clinical (`openid`, `fhirUser`, `launch/patient`, `offline_access`) carry no
permission here, except the admin scope `admin/intermediaries` (dxf-bridge's own, not SMART's):
it administers the intermediary registry, so it grants create, read, update, delete and search
on Endpoint and Organization at system level and is the only way to write an Endpoint
(AccessPolicy.admin). The authorization server grants it by client_credentials to a client
registered for it.
"""

from __future__ import annotations

import re

from app.auth.policy import ALL, AccessPolicy, ScopeGrant

__all__ = ["ADMIN_SCOPE", "mediate", "parse_scope", "policy_from_scopes"]

ADMIN_SCOPE = "admin/intermediaries"
_ADMIN_GRANTS = tuple(
    ScopeGrant("system", rtype, frozenset("cruds")) for rtype in ("Endpoint", "Organization")
)

_CLINICAL = re.compile(r"^(patient|user|system)/([A-Za-z]+|\*)\.([a-z*]+)(\?.*)?$")
_V1 = {"read": "rs", "write": "cud", "*": "cruds"}
_V2_ORDER = "cruds"


def parse_scope(scope: str) -> ScopeGrant | None:
    match = _CLINICAL.match(scope)
    if not match:
        return None
    context, resource_type, perms, constraint = match.groups()
    if perms in _V1:
        if constraint:
            return None
        letters = _V1[perms]
    else:
        if constraint or not _in_order(perms):
            return None
        letters = perms
    if resource_type != ALL and not resource_type[0].isupper():
        return None
    return ScopeGrant(context, resource_type, frozenset(letters))


def _in_order(perms: str) -> bool:
    pos = -1
    for letter in perms:
        idx = _V2_ORDER.find(letter)
        if idx <= pos:
            return False
        pos = idx
    return True


def policy_from_scopes(scopes: list[str] | tuple[str, ...], patient: str | None) -> AccessPolicy:
    grants = tuple(g for g in (parse_scope(s) for s in scopes) if g is not None)
    admin = ADMIN_SCOPE in scopes
    if admin:
        grants += _ADMIN_GRANTS
    return AccessPolicy(grants=grants, patient=patient, admin=admin)


def _covers(registered: str, requested: str) -> bool:
    if registered == requested:
        return True
    have, want = parse_scope(registered), parse_scope(requested)
    if have is None or want is None or have.context != want.context:
        return False
    if have.resource_type not in (ALL, want.resource_type):
        return False
    return want.permissions <= have.permissions


def mediate(requested: list[str] | tuple[str, ...], registered: tuple[str, ...]) -> list[str]:
    """The requested scopes the client is registered for (requested ∩ registered), in request
    order. A clinical scope is covered by a registered one of the same context whose type is
    the same or `*` and whose permissions include it (`system/*.rs` covers `system/Patient.r`);
    any other scope must be registered exactly."""
    granted: list[str] = []
    for scope in requested:
        if scope not in granted and any(_covers(reg, scope) for reg in registered):
            granted.append(scope)
    return granted
