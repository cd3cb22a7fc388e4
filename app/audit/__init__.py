"""Audit of FHIR access: every access to patient data and every denial, served as AuditEvent."""
