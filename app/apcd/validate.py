"""Value checks for CDL elements, named by the layout's `format` column.

Each check takes the (non-empty) value and answers None when it is acceptable, or a short reason.
Reasons never quote the value: they end up in reports and logs, and values may be PHI.

Code formats (CDL stores codes without punctuation):
- ICD-10-CM diagnosis: a letter, a digit, then 1 to 5 alphanumerics (3 to 7 characters).
- ICD-10-PCS procedure: exactly 7 characters from 0-9 and A-Z without I and O.
- CPT / HCPCS Level II: 5 digits, 4 digits + F/T/U (CPT Category II, III, PLA), or a letter
  A-V + 4 digits (HCPCS). CDT (dental): D + 4 digits.
- ICD-9-CM (claims whose ICD Version Indicator is 9, v2.1 back-files): diagnoses 3-5 digits,
  V + 2-4 digits or E8nn-E9nn (+ 1 digit); procedures 2-4 digits.
- NDC: 11 digits (the 5-4-2 billing form, no hyphens).
- NPI: 10 digits starting 1 or 2 whose Luhn check digit, computed over the prefix 80840 + the
  first 9 digits, matches the 10th (CMS NPI check-digit rule).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date

__all__ = ["ICD9_FORMATS", "Check", "compile_format", "npi_is_valid", "parse_date"]

Check = Callable[[str], "str | None"]


def parse_date(value: str) -> date | None:
    """CCYYMMDD to a date, None when it is not a calendar date."""
    if len(value) != 8 or not value.isdigit():
        return None
    try:
        return date(int(value[:4]), int(value[4:6]), int(value[6:]))
    except ValueError:
        return None


def npi_is_valid(value: str) -> bool:
    if len(value) != 10 or not value.isascii() or not value.isdigit() or value[0] not in "12":
        return False
    total = 24  # the Luhn sum of the card-issuer prefix 80840
    for i, ch in enumerate(reversed(value[:9])):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return (10 - total % 10) % 10 == int(value[9])


def _date(value: str) -> str | None:
    return None if parse_date(value) else "not a valid CCYYMMDD date"


def _yyyymm(value: str) -> str | None:
    if len(value) == 6 and value.isdigit() and 1 <= int(value[4:]) <= 12:
        return None
    return "not a valid CCYYMM period"


def _pattern(regex: str, what: str) -> Check:
    compiled = re.compile(regex, re.ASCII)

    def check(value: str) -> str | None:
        return None if compiled.fullmatch(value) else f"not a valid {what}"

    return check


def _list_of(regex: str, what: str) -> Check:
    one = re.compile(regex, re.ASCII)

    def check(value: str) -> str | None:
        parts = value.split(",")
        return None if all(one.fullmatch(p.strip()) for p in parts) else f"not a valid {what}"

    return check


def _npi(value: str) -> str | None:
    return None if npi_is_valid(value) else "not a valid NPI (format or check digit)"


_FORMATS: dict[str, Check] = {
    "date": _date,
    "yyyymm": _yyyymm,
    "int": _pattern(r"-?\d+", "integer"),
    "decimal": _pattern(r"-?\d+(\.\d+)?", "decimal number"),
    "icd10cm": _pattern(r"[A-Z]\d[0-9A-Z]{1,5}", "ICD-10-CM code"),
    "icd10pcs": _pattern(r"[0-9A-HJ-NP-Z]{7}", "ICD-10-PCS code"),
    "icd9cm": _pattern(r"\d{3,5}|V\d{2,4}|E[89]\d{2,3}", "ICD-9-CM diagnosis code"),
    "icd9pcs": _pattern(r"\d{2,4}", "ICD-9-CM procedure code"),
    "cpt_hcpcs": _pattern(r"\d{4}[0-9FTU]|[A-V]\d{4}", "CPT or HCPCS code"),
    "cdt": _pattern(r"D\d{4}", "CDT code"),
    "ndc": _pattern(r"\d{11}", "NDC (11 digits)"),
    "npi": _npi,
    "zip": _pattern(r"\d{5}(\d{4})?", "ZIP code"),
    "tob": _pattern(r"0?[1-8]\d[0-9A-Z]", "type of bill"),
    "pos": _pattern(r"\d{2}", "place of service code"),
    "taxonomy": _pattern(r"\d{3}[0-9A-Z]{6}X", "NUCC taxonomy code"),
    "teeth": _list_of(r"[1-9]|[12]\d|3[0-2]|[A-T]", "tooth number list"),
    "quadrants": _list_of(r"00|01|02|09|10|20|30|40|L|U|LL|LR|UL|UR", "oral cavity area list"),
    "surfaces": _pattern(r"[BDFILMO]{1,5}", "tooth surface list"),
}


def compile_format(fmt: str) -> Check | None:
    """The check for a layout `format` value; None for free text. Unknown formats raise."""
    if not fmt:
        return None
    if fmt.startswith("enum:"):
        allowed = frozenset(v.strip() for v in fmt[5:].split(","))
        shown = ", ".join(sorted(allowed))

        def check(value: str) -> str | None:
            return None if value in allowed else f"not one of {shown}"

        return check
    try:
        return _FORMATS[fmt]
    except KeyError:
        raise ValueError(f"unknown format {fmt!r}") from None


# A claim whose ICD Version Indicator element is "9" is coded in ICD-9-CM: its ICD-10 elements
# are checked as these instead.
ICD9_FORMATS = {"icd10cm": _FORMATS["icd9cm"], "icd10pcs": _FORMATS["icd9pcs"]}
