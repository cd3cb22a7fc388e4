"""HL7v2 ingestion: MLLP, POST /hl7v2 and files -> journal -> v2-to-FHIR mapping."""
