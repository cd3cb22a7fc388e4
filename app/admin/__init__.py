"""Administration endpoints outside the FHIR API (the intermediary registry)."""
