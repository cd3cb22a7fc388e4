"""SMART configuration discovery (SMART App Launch 2, "Conformance":
https://hl7.org/fhir/smart-app-launch/conformance.html), served unauthenticated at
`/.well-known/smart-configuration` and `/fhir/.well-known/smart-configuration`.

Everything advertised here is implemented: the CapabilityStatement's `oauth-uris` extension
(app/fhir/rest/metadata.py) names the same endpoints.
"""

from __future__ import annotations

from typing import Any

from app.auth.jwks import ALGORITHM_KEY_TYPES
from app.settings import Settings

__all__ = ["CAPABILITIES", "SCOPES_SUPPORTED", "smart_configuration"]

CAPABILITIES = (
    "launch-ehr",
    "launch-standalone",
    "client-public",
    "client-confidential-asymmetric",
    "context-ehr-patient",
    "context-ehr-encounter",
    "context-standalone-patient",
    "context-banner",
    "permission-offline",
    "permission-online",
    "permission-v1",
    "permission-v2",
    "permission-patient",
    "permission-user",
    "sso-openid-connect",
    "authorize-post",
)

SCOPES_SUPPORTED = (
    "openid",
    "fhirUser",
    "launch",
    "launch/patient",
    "offline_access",
    "online_access",
    "patient/*.cruds",
    "patient/*.rs",
    "patient/*.read",
    "user/*.cruds",
    "user/*.rs",
    "user/*.read",
    "system/*.cruds",
    "system/*.rs",
    "system/*.read",
)


def smart_configuration(settings: Settings) -> dict[str, Any]:
    return {
        "issuer": settings.issuer,
        "jwks_uri": f"{settings.base_url}/.well-known/jwks.json",
        "authorization_endpoint": settings.endpoint("authorize"),
        "token_endpoint": settings.endpoint("token"),
        "introspection_endpoint": settings.endpoint("introspect"),
        "revocation_endpoint": settings.endpoint("revoke"),
        "grant_types_supported": ["authorization_code", "client_credentials", "refresh_token"],
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": list(ALGORITHM_KEY_TYPES),
        "id_token_signing_alg_values_supported": ["RS256"],
        "scopes_supported": list(SCOPES_SUPPORTED),
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
        "capabilities": list(CAPABILITIES),
    }
