"""SMART on FHIR: signing keys, access-token validation, the scope-derived access policy, and
the authorization server (discovery, clients and users, grants, app launch, introspection,
revocation). See docs/architecture.md, "Authorization server"."""
