"""Authorization as a value: a token's SMART scopes compiled into an AccessPolicy.

The policy answers one question for the repository: may this principal perform permission
`c|r|u|d|s` on resource type T, and if so, over everything or only inside one Patient's
compartment? (https://build.fhir.org/ig/HL7/smart-app-launch/scopes-and-launch-context.html)
"""

from __future__ import annotations

from dataclasses import dataclass, field

from app.errors import Forbidden

__all__ = ["ALL", "AccessPolicy", "Principal", "ScopeGrant"]

ALL = "*"
AUDIT_EVENT = "AuditEvent"  # served read-only from the audit log (app/audit)
# Endpoint resources are the intermediary registry (app/adapters/registry.py): writing one
# needs the admin scope (app.auth.scopes.ADMIN_SCOPE), whatever the clinical scopes say.
ADMIN_TYPES = frozenset({"Endpoint"})


@dataclass(frozen=True, slots=True)
class ScopeGrant:
    """One clinical scope: context (`patient`, `user`, `system`), a type or `*`, permissions."""

    context: str
    resource_type: str
    permissions: frozenset[str]

    def covers(self, resource_type: str, permission: str) -> bool:
        return permission in self.permissions and self.resource_type in (ALL, resource_type)


@dataclass(frozen=True, slots=True)
class AccessPolicy:
    grants: tuple[ScopeGrant, ...] = ()
    patient: str | None = None
    admin: bool = False  # the token carries the admin scope (registry administration)

    def restriction(self, resource_type: str, permission: str) -> str | None:
        """None when unrestricted; a Patient id when confined to that compartment.

        Raises Forbidden when no grant covers the request. Patient-context grants count only
        when the token carries a `patient` launch context.
        """
        if resource_type == AUDIT_EVENT and permission in ("c", "u", "d"):
            raise Forbidden("AuditEvents are recorded by the server; no client may write one")
        if resource_type in ADMIN_TYPES and permission in ("c", "u", "d") and not self.admin:
            raise Forbidden(
                f"writing {resource_type} resources (the intermediary registry) needs the admin "
                "scope"
            )
        confined = False
        for grant in self.grants:
            if not grant.covers(resource_type, permission):
                continue
            if grant.context in ("user", "system"):
                return None
            if grant.context == "patient" and self.patient:
                confined = True
        if confined:
            return self.patient
        raise Forbidden(
            f"the access token's scopes do not permit '{permission}' on {resource_type}",
        )

    def allows(self, resource_type: str, permission: str) -> bool:
        try:
            self.restriction(resource_type, permission)
        except Forbidden:
            return False
        return True


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the token's subject and client, its scopes, and the compiled policy."""

    subject: str
    client_id: str
    scopes: tuple[str, ...]
    policy: AccessPolicy
    expires_at: int
    claims: dict[str, object] = field(default_factory=dict, compare=False, hash=False)
