"""Storage: tables, the database handle and the policy-enforcing FHIR repository."""
