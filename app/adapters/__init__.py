"""Sources of data beyond the local store: HL7v2 (MLLP), APCD-CDL files and QHIO intermediaries.

Each adapter translates its source into FHIR resources and writes them through the repository
(app.store.repository), so the same versioning, validation and access policy apply.
"""
