"""FHIR R4 layer: models, compartments, search and the REST interactions."""
