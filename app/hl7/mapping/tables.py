"""Vocabulary maps (v2 table value -> FHIR code), as data.

Each map cites its source: the v2-to-FHIR IG concept maps (HL7/v2-to-fhir `mappings/codesystems`,
summarised in ../shared/reference/v2-to-fhir.md sections 2.2-2.7) and HL7 tables. A v2 table
`NNNN` is the code system `http://terminology.hl7.org/CodeSystem/v2-NNNN`.
"""

from __future__ import annotations

__all__ = [
    "ADMINISTRATIVE_SEX",
    "ALLERGY_CATEGORY",
    "ALLERGY_SEVERITY",
    "CODING_SYSTEMS",
    "DATA_ABSENT_UNKNOWN",
    "ENCOUNTER_CLASS",
    "EVENT_ENCOUNTER_STATUS",
    "INTERPRETATION_SYSTEM",
    "OBSERVATION_STATUS",
    "ORDER_STATUS",
    "PARTICIPANT_TYPES",
    "REPORT_STATUS",
    "UCUM",
    "V3_ACT_CODE",
    "v2_table",
]

V3_ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
UCUM = "http://unitsofmeasure.org"
INTERPRETATION_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
# US Core 6.1 "Missing Data" (general-requirements.html#missing-data): a mandatory coded element
# whose value the source does not hold carries the DataAbsentReason code `unknown`.
DATA_ABSENT_UNKNOWN = {
    "coding": [
        {
            "system": "http://terminology.hl7.org/CodeSystem/data-absent-reason",
            "code": "unknown",
            "display": "Unknown",
        }
    ]
}


def v2_table(number: str) -> str:
    """The THO code system of HL7 v2 table `number` (e.g. "0203")."""
    return f"http://terminology.hl7.org/CodeSystem/v2-{int(number):04d}"


# IG ConceptMap AdministrativeSex (PID-8, table 0001) -> AdministrativeGender
ADMINISTRATIVE_SEX = {
    "F": "female",
    "M": "male",
    "O": "other",
    "A": "other",
    "N": "other",
    "U": "unknown",
}

# IG ConceptMap PatientClass[EncounterClass] (PV1-2, table 0004) -> v3 ActCode
ENCOUNTER_CLASS = {
    "E": ("EMER", "emergency"),
    "I": ("IMP", "inpatient encounter"),
    "O": ("AMB", "ambulatory"),
    "P": ("PRENC", "pre-admission"),
    "R": ("IMP", "inpatient encounter"),  # recurring patient: treated as inpatient
    "B": ("IMP", "inpatient encounter"),  # obstetrics
    "C": ("AMB", "ambulatory"),  # commercial account
    "N": ("AMB", "ambulatory"),  # not applicable (A28/A31 dummy PV1 never reaches here)
    "U": ("AMB", "ambulatory"),  # unknown: the IG carries it as is; R4 class is required
}

# IG ConceptMap Event[EncounterStatus] (MSH-9.2 / EVN-1): the status each ADT event asserts.
# None: the event does not convey a status (A08 "update"), so a stored status is kept.
EVENT_ENCOUNTER_STATUS: dict[str, str | None] = {
    "A01": "in-progress",
    "A02": "in-progress",
    "A03": "finished",
    "A04": "in-progress",
    "A05": "planned",
    "A06": "in-progress",
    "A07": "in-progress",
    "A08": None,
    "A11": "cancelled",
    "A12": "in-progress",
    "A13": "in-progress",
}

# Participation (PV1-7, -8, -9, -17) -> v3-ParticipationType, IG PV1[Encounter]
PARTICIPANT_TYPES = {7: "ATND", 8: "REF", 9: "CON", 17: "ADM"}

# IG ConceptMap ResultStatus (OBR-25, table 0123) -> DiagnosticReport.status
REPORT_STATUS = {
    "O": "registered",
    "I": "registered",
    "S": "registered",
    "P": "preliminary",
    "A": "partial",
    "R": "partial",
    "N": "partial",
    "C": "corrected",
    "M": "amended",
    "F": "final",
    "X": "cancelled",
    "D": "entered-in-error",
    "Y": "unknown",
    "Z": "unknown",
}

# IG ConceptMap ObservationResultStatusCodesInterpretation (OBX-11, table 0085)
OBSERVATION_STATUS = {
    "C": "corrected",
    "D": "entered-in-error",
    "F": "final",
    "I": "registered",
    "N": "final",  # not asked: status final, value absent (dataAbsentReason not-asked)
    "O": "registered",
    "P": "preliminary",
    "R": "preliminary",
    "S": "preliminary",
    "U": "final",
    "W": "entered-in-error",
    "X": "cancelled",
    "A": "amended",
}

# ORC-5 order status (table 0038) -> MedicationRequest.status (LFH/IG ORC[MedicationRequest])
ORDER_STATUS = {
    "A": "active",
    "CA": "cancelled",
    "CM": "completed",
    "DC": "stopped",
    "ER": "entered-in-error",
    "HD": "on-hold",
    "IP": "active",
    "RP": "active",
    "SC": "active",
}
# ORC-1 order control (table 0119) when ORC-5 is empty
ORDER_CONTROL_STATUS = {
    "NW": "active",
    "OK": "active",
    "XO": "active",
    "RE": "active",
    "CA": "cancelled",
    "OC": "cancelled",
    "DC": "stopped",
    "OD": "stopped",
    "HD": "on-hold",
    "OH": "on-hold",
    "RL": "active",
}

# AL1-2 allergen type (table 0127) -> AllergyIntolerance.category
ALLERGY_CATEGORY = {
    "DA": "medication",
    "MA": "medication",
    "FA": "food",
    "EA": "environment",
    "PA": "environment",
    "AA": "biologic",
}
# AL1-4 severity (table 0128) -> criticality
ALLERGY_SEVERITY = {"SV": "high", "MO": "low", "MI": "low", "U": "unable-to-assess"}

# CWE-3 / CE-3 "name of coding system" (table 0396) and well-known OIDs -> FHIR system URIs
CODING_SYSTEMS = {
    "LN": "http://loinc.org",
    "LOINC": "http://loinc.org",
    "2.16.840.1.113883.6.1": "http://loinc.org",
    "SCT": "http://snomed.info/sct",
    "SNM": "http://snomed.info/sct",
    "SNOMED": "http://snomed.info/sct",
    "SNOMEDCT": "http://snomed.info/sct",
    "2.16.840.1.113883.6.96": "http://snomed.info/sct",
    "UCUM": UCUM,
    "2.16.840.1.113883.6.8": UCUM,
    "I10": "http://hl7.org/fhir/sid/icd-10",
    "I10C": "http://hl7.org/fhir/sid/icd-10-cm",
    "ICD10CM": "http://hl7.org/fhir/sid/icd-10-cm",
    "I10P": "http://www.cms.gov/Medicare/Coding/ICD10",
    "I9": "http://hl7.org/fhir/sid/icd-9-cm",
    "I9C": "http://hl7.org/fhir/sid/icd-9-cm",
    "I9CDX": "http://hl7.org/fhir/sid/icd-9-cm",
    "RXNORM": "http://www.nlm.nih.gov/research/umls/rxnorm",
    "RXN": "http://www.nlm.nih.gov/research/umls/rxnorm",
    "NDC": "http://hl7.org/fhir/sid/ndc",
    "CVX": "http://hl7.org/fhir/sid/cvx",
    "MVX": "http://hl7.org/fhir/sid/mvx",
    "CPT": "http://www.ama-assn.org/go/cpt",
    "C4": "http://www.ama-assn.org/go/cpt",
    "NPI": "http://hl7.org/fhir/sid/us-npi",
    "NUCC": "http://nucc.org/provider-taxonomy",
    "CDCREC": "urn:oid:2.16.840.1.113883.6.238",
    "2.16.840.1.113883.6.238": "urn:oid:2.16.840.1.113883.6.238",
    "NCIT": "http://ncit.nci.nih.gov",
    "UPC": "urn:oid:2.16.840.1.113883.6.9",
}
