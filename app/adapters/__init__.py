"""Sources of data beyond the local store: APCD-CDL files and QHIO intermediaries (HL7v2 lives
in app.hl7).

Each adapter translates its source into FHIR resources and writes them through the repository
(app.store.repository), so the same versioning, validation and access policy apply.
"""
