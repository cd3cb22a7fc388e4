"""SMART on FHIR: signing keys, access-token validation and the scope-derived access policy."""
