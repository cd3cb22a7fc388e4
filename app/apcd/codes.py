"""Mapping tables from CDL values to FHIR codes and systems, as data.

Sources: the reference notes' code-set table (§5) and the CARIN Blue Button 2.2.0 code systems
(C4BB* code systems and the profiles' canonical URLs). Values the CDL leaves unconfirmed (claim
line type, claim status) follow the legacy APCD conventions the notes describe.
"""

from __future__ import annotations

C4BB = "http://hl7.org/fhir/us/carin-bb"
_EOB = f"{C4BB}/StructureDefinition/C4BB-ExplanationOfBenefit"
PROFILE = {
    "Patient": f"{C4BB}/StructureDefinition/C4BB-Patient",
    "Coverage": f"{C4BB}/StructureDefinition/C4BB-Coverage",
    "Organization": f"{C4BB}/StructureDefinition/C4BB-Organization",
    "Practitioner": f"{C4BB}/StructureDefinition/C4BB-Practitioner",
    "inpatient": f"{_EOB}-Inpatient-Institutional",
    "outpatient": f"{_EOB}-Outpatient-Institutional",
    "professional": f"{_EOB}-Professional-NonClinician",
    "pharmacy": f"{_EOB}-Pharmacy",
    "oral": f"{_EOB}-Oral",
}

# Every resource the import produces carries this tag: claims dates are not clinical dates.
SOURCE_TAG = {
    "system": "https://dxf-bridge.org/fhir/CodeSystem/source",
    "code": "apcd-cdl",
    "display": "claims-derived (APCD-CDL)",
}

ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
ICD10PCS = "http://www.cms.gov/Medicare/Coding/ICD10"
ICD9CM = "http://hl7.org/fhir/sid/icd-9-cm"  # diagnoses and (volume 3) procedures
CPT = "http://www.ama-assn.org/go/cpt"
HCPCS = "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets"
CDT = "http://www.ada.org/cdt"
NDC = "http://hl7.org/fhir/sid/ndc"
NPI = "http://hl7.org/fhir/sid/us-npi"
NUCC = "http://nucc.org/provider-taxonomy"
MBI = "http://hl7.org/fhir/sid/us-mbi"
REVENUE = "https://www.nubc.org/CodeSystem/RevenueCodes"
TYPE_OF_BILL = "https://www.nubc.org/CodeSystem/TypeOfBill"
ADMIT_TYPE = "https://www.nubc.org/CodeSystem/PriorityTypeOfAdmitOrVisit"
POINT_OF_ORIGIN = "https://www.nubc.org/CodeSystem/PointOfOrigin"
DISCHARGE_STATUS = "https://www.nubc.org/CodeSystem/PatDischargeStatus"
POS = "https://www.cms.gov/Medicare/Coding/place-of-service-codes/Place_of_Service_Code_Set"
POA = "https://www.cms.gov/Medicare/Medicare-Fee-for-Service-Payment/HospitalAcqCond/Coding"
CARC = "https://x12.org/codes/claim-adjustment-reason-codes"
TOOTH = "http://terminology.hl7.org/CodeSystem/ADAUniversalToothDesignationSystem"
SURFACE = "http://terminology.hl7.org/CodeSystem/ADAToothSurfaceCodes"
ORAL_AREA = "http://terminology.hl7.org/CodeSystem/ADAAreaOralCavitySystem"
CLAIM_TYPE = "http://terminology.hl7.org/CodeSystem/claim-type"
ADJUDICATION = "http://terminology.hl7.org/CodeSystem/adjudication"
C4BB_ADJUDICATION = f"{C4BB}/CodeSystem/C4BBAdjudication"
C4BB_IDENTIFIER = f"{C4BB}/CodeSystem/C4BBIdentifierType"
C4BB_SUPPORTING = f"{C4BB}/CodeSystem/C4BBSupportingInfoType"
C4BB_CARE_TEAM = f"{C4BB}/CodeSystem/C4BBClaimCareTeamRole"
C4BB_DIAGNOSIS = f"{C4BB}/CodeSystem/C4BBClaimDiagnosisType"
C4BB_PROCEDURE = f"{C4BB}/CodeSystem/C4BBClaimProcedureType"
C4BB_SUBTYPE = f"{C4BB}/CodeSystem/C4BBInstitutionalClaimSubType"
C4BB_DISCRIMINATOR = f"{C4BB}/CodeSystem/C4BBAdjudicationDiscriminator"
C4BB_PAYER_STATUS = f"{C4BB}/CodeSystem/C4BBPayerAdjudicationStatus"
DIAGNOSIS_TYPE = "http://terminology.hl7.org/CodeSystem/ex-diagnosistype"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
RELATIONSHIP = "http://terminology.hl7.org/CodeSystem/subscriber-relationship"
COVERAGE_CLASS = "http://terminology.hl7.org/CodeSystem/coverage-class"
CONDITION_CATEGORY = "http://terminology.hl7.org/CodeSystem/condition-category"
CONDITION_VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
RELATED_CLAIM = "http://terminology.hl7.org/CodeSystem/ex-relatedclaimrelationship"
PAYMENT_TYPE = "http://terminology.hl7.org/CodeSystem/ex-paymenttype"
ORG_TYPE = "http://terminology.hl7.org/CodeSystem/organization-type"

GENDER = {"M": "male", "F": "female", "U": "unknown"}
# Where each claim file carries its member (element suffixes; "" = not carried):
# member id, last name, first name, gender, birth date, ZIP code.
CLAIM_MEMBER_FIELDS = {
    "MC": ("161", "020", "021", "018", "019", "022"),
    "PC": ("068", "020", "021", "018", "019", "022"),
    "DC": ("034", "", "", "010", "011", ""),
}
# X12 individual relationship codes -> subscriber-relationship (others -> other).
RELATIONSHIP_CODES = {"18": "self", "01": "spouse", "19": "child", "20": "self", "53": "spouse"}

# Claim line type: V void, R replacement (B back-out is a void, A amendment a replacement).
VOID_LINE_TYPES = frozenset({"V", "B"})
VOID_CLAIM_STATUS = frozenset({"22"})  # X12 1029: reversal of previous payment
DENIED_CLAIM_STATUS = frozenset({"4"})

# (CDL amount element suffix, adjudication system, code) per claim file.
MC_AMOUNTS = (
    ("123", ADJUDICATION, "submitted"),
    ("131", ADJUDICATION, "eligible"),
    ("125", C4BB_ADJUDICATION, "paidtoprovider"),
    ("126", ADJUDICATION, "copay"),
    ("127", C4BB_ADJUDICATION, "coinsurance"),
    ("128", ADJUDICATION, "deductible"),
    ("129", C4BB_ADJUDICATION, "priorpayerpaid"),
)
PC_AMOUNTS = (
    ("036", ADJUDICATION, "submitted"),
    ("038", ADJUDICATION, "eligible"),
    ("037", C4BB_ADJUDICATION, "paidtoprovider"),
    ("043", ADJUDICATION, "copay"),
    ("044", C4BB_ADJUDICATION, "coinsurance"),
    ("045", ADJUDICATION, "deductible"),
    ("047", C4BB_ADJUDICATION, "priorpayerpaid"),
    ("040", C4BB_ADJUDICATION, "drugcost"),
    ("048", C4BB_ADJUDICATION, "paidbypatient"),
)
DC_AMOUNTS = (
    ("021", ADJUDICATION, "submitted"),
    ("023", ADJUDICATION, "eligible"),
    ("022", C4BB_ADJUDICATION, "paidtoprovider"),
    ("024", ADJUDICATION, "copay"),
    ("025", C4BB_ADJUDICATION, "coinsurance"),
    ("026", ADJUDICATION, "deductible"),
)
# Claim totals are summed over these categories.
TOTAL_CODES = ("submitted", "eligible", "paidtoprovider")

# Encounter.class from the claim: emergency by POS 23 or revenue 045x, home health by TOB 3xx
# or POS 12, inpatient by TOB 11x/12x (or 21x, 41x... second digit 1-2 with facility 1/2/4/8).
EMERGENCY_POS = frozenset({"23"})
HOME_POS = frozenset({"12"})
# E/M visit codes are the encounter, not a Procedure.
EM_CODE_RANGE = (99201, 99499)


def cpt_or_hcpcs_system(code: str) -> str:
    return HCPCS if code[:1].isalpha() else CPT


def is_cpt_category_ii(code: str) -> bool:
    return len(code) == 5 and code[:4].isdigit() and code[4] == "F"
