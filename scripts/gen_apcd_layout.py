"""Generate app/apcd/layouts/cdl-3.0.1.csv from the project's APCD-CDL data dictionary.

    python scripts/gen_apcd_layout.py ../shared/reference/apcd-cdl-fields.csv

The data dictionary (one row per element: file type, field id, name, data type, length, how
confident the reconstruction is) holds the ME, MC and PC element lists of CDL v3.0.1 as far as
public sources show them. This script keeps their order, ids, names, types and lengths, and adds
what the importer needs and the dictionary does not say:

- `requirement`: `required` for the elements the importer cannot do without (keys, member id,
  service dates, record type), else `optional`. The dictionary's "required_or_conditional"
  column is Texas threshold evidence, not a rule, so it is not used as one.
- `format`: which value check applies (date, int, decimal, icd10cm, icd10pcs, cpt_hcpcs, cdt,
  ndc, npi, enum:...). See app/apcd/validate.py.

The dictionary has no element list for Provider (PV) or Dental (DC) files, and only positional
guesses for the header (HD) and trailer (TR). Those record layouts are defined here, by the
project, and marked `project` in the confidence column: replace them when the CDL v3.0.1 sheets
are obtained. Element CDLMC164 (Medical Record Number) belongs to a later CDL version and is left
out of 3.0.1.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "app" / "apcd" / "layouts" / "cdl-3.0.1.csv"
COLUMNS = [
    "record_type",
    "field_id",
    "name",
    "data_type",
    "max_length",
    "requirement",
    "format",
    "confidence",
]

HEADER = [
    ("CDLHD001", "Record Type", "text", 2, "required", "enum:HD"),
    ("CDLHD002", "Data Submitter Code", "varchar", 8, "required", ""),
    ("CDLHD003", "Payer Code", "varchar", 8, "required", ""),
    ("CDLHD004", "Submitter or Payer Name", "varchar", 60, "optional", ""),
    ("CDLHD005", "File Type", "text", 2, "required", "enum:ME,MC,PC,DC,PV"),
    ("CDLHD006", "Period Beginning Date", "date", 6, "required", "yyyymm"),
    ("CDLHD007", "Period Ending Date", "date", 6, "required", "yyyymm"),
    ("CDLHD008", "Test or Production Indicator", "text", 1, "optional", "enum:T,P"),
    ("CDLHD009", "Comments", "varchar", 80, "optional", ""),
]
TRAILER = [
    ("CDLTR001", "Record Type", "text", 2, "required", "enum:TR"),
    ("CDLTR002", "Data Submitter Code", "varchar", 8, "required", ""),
    ("CDLTR003", "Payer Code", "varchar", 8, "required", ""),
    ("CDLTR004", "Submitter or Payer Name", "varchar", 60, "optional", ""),
    ("CDLTR005", "File Type", "text", 2, "required", "enum:ME,MC,PC,DC,PV"),
    ("CDLTR006", "File Date", "date", 8, "optional", "date"),
    ("CDLTR007", "Unassigned", "varchar", 10, "optional", ""),
    ("CDLTR008", "Record Count", "int", 10, "required", "int"),
]
# Provider file: 28 numbered positions (observed lengths in the dictionary's notes), one
# unassigned filler and the record type. Names are the project's reading of those positions.
PROVIDER = [
    ("CDLPV001", "Data Submitter Code", "varchar", 8, "required", ""),
    ("CDLPV002", "Payer Code", "varchar", 8, "required", ""),
    ("CDLPV003", "Plan Provider ID", "varchar", 30, "required", ""),
    ("CDLPV004", "Provider Tax ID", "varchar", 30, "optional", ""),
    ("CDLPV005", "Provider NPI", "char", 10, "optional", "npi"),
    ("CDLPV006", "Provider Entity Type Qualifier", "char", 1, "required", "enum:1,2"),
    ("CDLPV007", "Provider License Number", "varchar", 10, "optional", ""),
    ("CDLPV008", "Provider DEA Number", "varchar", 12, "optional", ""),
    ("CDLPV009", "Provider Medicaid ID", "varchar", 15, "optional", ""),
    ("CDLPV010", "Provider First Name", "varchar", 35, "optional", ""),
    ("CDLPV011", "Provider Middle Name", "varchar", 25, "optional", ""),
    ("CDLPV012", "Provider Last Name or Organization Name", "varchar", 60, "required", ""),
    ("CDLPV013", "Provider Suffix", "varchar", 10, "optional", ""),
    ("CDLPV014", "Provider Street Address", "varchar", 55, "optional", ""),
    ("CDLPV015", "Provider City", "varchar", 30, "optional", ""),
    ("CDLPV016", "Provider State", "char", 2, "optional", ""),
    ("CDLPV017", "Provider ZIP Code", "varchar", 9, "optional", "zip"),
    ("CDLPV018", "Provider FIPS County Code", "char", 5, "optional", ""),
    ("CDLPV019", "Provider Country Code", "char", 2, "optional", ""),
    ("CDLPV020", "Primary Specialty Taxonomy", "varchar", 10, "optional", "taxonomy"),
    ("CDLPV021", "Secondary Specialty Taxonomy", "varchar", 10, "optional", "taxonomy"),
    ("CDLPV022", "Tertiary Specialty Taxonomy", "varchar", 10, "optional", "taxonomy"),
    ("CDLPV023", "Group Practice ID", "varchar", 30, "optional", ""),
    ("CDLPV024", "Group Practice Name", "varchar", 30, "optional", ""),
    ("CDLPV025", "Group Practice NPI", "char", 10, "optional", "npi"),
    ("CDLPV026", "Provider Telephone", "varchar", 10, "optional", ""),
    ("CDLPV027", "Provider Effective Date", "date", 10, "optional", "date"),
    ("CDLPV028", "Provider Term Date", "date", 10, "optional", "date"),
    ("CDLPVXXX", "Unassigned", "char", 1, "optional", ""),
    ("CDLPV899", "Record Type", "char", 2, "required", "enum:PV"),
]
# Dental file: the medical-claims pattern plus CDT code, tooth, quadrant and surface (the
# nearest documented state layout carries the last three, comma-separated when several).
DENTAL = [
    ("CDLDC001", "Data Submitter Code", "varchar", 8, "required", ""),
    ("CDLDC002", "Payer Code", "varchar", 8, "required", ""),
    ("CDLDC003", "Plan ID", "varchar", 30, "optional", ""),
    ("CDLDC004", "Member Insurance/Product Category Code", "char", 2, "optional", ""),
    ("CDLDC005", "Payer Claim Control Number", "varchar", 35, "required", ""),
    ("CDLDC006", "Line Counter", "int", 4, "required", "int"),
    ("CDLDC007", "Version Number", "int", 4, "required", "int"),
    ("CDLDC008", "Cross Reference Claims ID", "varchar", 35, "optional", ""),
    ("CDLDC009", "Insured Group or Policy Number", "varchar", 50, "optional", ""),
    ("CDLDC010", "Member Gender", "char", 1, "optional", "enum:M,F,U"),
    ("CDLDC011", "Member Date of Birth", "date", 8, "optional", "date"),
    ("CDLDC012", "Paid Date", "date", 8, "required", "date"),
    ("CDLDC013", "Date of Service - From", "date", 8, "required", "date"),
    ("CDLDC014", "Date of Service - Through", "date", 8, "optional", "date"),
    ("CDLDC015", "Place of Service", "text", 2, "optional", "pos"),
    ("CDLDC016", "CDT Procedure Code", "text", 5, "required", "cdt"),
    ("CDLDC017", "Tooth Number", "varchar", 40, "optional", "teeth"),
    ("CDLDC018", "Dental Quadrant", "varchar", 10, "optional", "quadrants"),
    ("CDLDC019", "Tooth Surface", "varchar", 10, "optional", "surfaces"),
    ("CDLDC020", "Principal Diagnosis", "text", 7, "optional", "icd10cm"),
    ("CDLDC021", "Charge Amount", "numeric", 12, "optional", "decimal"),
    ("CDLDC022", "Plan Paid Amount", "numeric", 12, "optional", "decimal"),
    ("CDLDC023", "Allowed Amount", "numeric", 12, "optional", "decimal"),
    ("CDLDC024", "Copay Amount", "numeric", 12, "optional", "decimal"),
    ("CDLDC025", "Coinsurance Amount", "numeric", 12, "optional", "decimal"),
    ("CDLDC026", "Deductible Amount", "numeric", 12, "optional", "decimal"),
    ("CDLDC027", "Rendering Provider ID", "varchar", 30, "optional", ""),
    ("CDLDC028", "Rendering Provider NPI", "char", 10, "optional", "npi"),
    ("CDLDC029", "Billing Provider ID", "varchar", 30, "optional", ""),
    ("CDLDC030", "Billing Provider NPI", "char", 10, "optional", "npi"),
    ("CDLDC031", "In Plan Network Indicator", "char", 1, "optional", "enum:Y,N"),
    ("CDLDC032", "Claim Status", "text", 2, "optional", ""),
    ("CDLDC033", "Claim Line Type", "char", 1, "optional", "enum:O,V,R,B,A"),
    ("CDLDC034", "Carrier Specific Unique Member ID", "varchar", 50, "required", ""),
    ("CDLDC035", "Carrier Specific Unique Subscriber ID", "varchar", 50, "optional", ""),
    ("CDLDC899", "Record Type", "char", 2, "required", "enum:DC"),
]

# Elements the importer cannot do without (see app/apcd/mapping.py).
REQUIRED = {
    "ME": {"001", "002", "018", "019", "050", "061", "899"},
    "MC": {"001", "002", "005", "006", "007", "024", "119", "161", "899"},
    "PC": {"001", "002", "005", "006", "007", "023", "024", "025", "068", "899"},
}
GENDER = "enum:M,F,U"
FORMATS = {
    "ME": {"018": GENDER, "026": "zip", "047": "npi"},
    "MC": {
        "018": GENDER,
        "022": "zip",
        "032": "tob",
        "033": "pos",
        "088": "cpt_hcpcs",
        "133": "ndc",
        "135": "npi",
        "146": "npi",
        "148": "npi",
        "152": "npi",
        "154": "npi",
        "160": "enum:O,V,R,B,A",
        **{f"{n:03d}": "icd10cm" for n in range(34, 36)},
        **{f"{n:03d}": "icd10cm" for n in range(37, 62)},
        **{f"{n:03d}": "icd10pcs" for n in range(93, 119)},
    },
    "PC": {
        "018": GENDER,
        "022": "zip",
        "025": "ndc",
        "051": "npi",
        "057": "npi",
        "066": "enum:O,V,R,B,A",
    },
}
TYPE_FORMATS = {"date": "date", "int": "int", "numeric": "decimal", "decimal(6,4)": "decimal"}


def _own(record_type: str, rows: list[tuple[str, str, str, int, str, str]]) -> list[list[str]]:
    return [
        [record_type, fid, name, dt, str(n), req, fmt, "project"]
        for fid, name, dt, n, req, fmt in rows
    ]


def build(reference: Path) -> list[list[str]]:
    out = _own("HD", HEADER) + _own("TR", TRAILER)
    with reference.open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            ftype, fid = row["file_type"], row["field_id"]
            if ftype not in REQUIRED or fid == "CDLMC164":
                continue
            suffix = fid[-3:]
            fmt = FORMATS[ftype].get(suffix) or TYPE_FORMATS.get(row["data_type"], "")
            if suffix == "899":
                fmt = f"enum:{ftype}"
            requirement = "required" if suffix in REQUIRED[ftype] else "optional"
            out.append(
                [
                    ftype,
                    fid,
                    row["name"],
                    row["data_type"],
                    row["max_length"],
                    requirement,
                    fmt,
                    row["confidence"],
                ]
            )
    return out + _own("PV", PROVIDER) + _own("DC", DENTAL)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    rows = build(Path(argv[0]))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with OUT.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(COLUMNS)
        writer.writerows(rows)
    print(f"wrote {len(rows)} elements to {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
