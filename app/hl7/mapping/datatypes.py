"""v2 data types to FHIR data types (HL7 v2-to-FHIR IG, `mappings/datatypes`; see
../shared/reference/v2-to-fhir.md sections 2.10 and 4).

- DTM/TS/DT -> dateTime/date/instant keeping the sender's precision and offset; a time without
  an offset gets the configured facility zone (IG 2.10 "DTM", pain point 4.1).
- CX -> Identifier: CX-4 becomes the system through the configurable assigning-authority table,
  `urn:oid:` for ISO universal ids, else a stable URN naming the namespace (pain point 4.2).
- XPN -> HumanName, XAD -> Address, XTN -> ContactPoint, CWE/CE/CNE -> CodeableConcept,
  XCN -> Reference by identifier and display (the facade does not invent Practitioners).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from urllib.parse import quote
from zoneinfo import ZoneInfo

from app.hl7.mapping.tables import CODING_SYSTEMS, v2_table
from app.hl7.parse import Hl7Error, Rep

__all__ = [
    "Dtm",
    "IdentitySettings",
    "address",
    "codeable",
    "coding_system",
    "contact_point",
    "human_name",
    "identifier",
    "parse_dtm",
    "practitioner_ref",
]

_DTM = re.compile(
    r"^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2}(?:\.\d{1,4})?)?([+-]\d{2}(?:\d{2})?)?$"
)
_ISO_OID = re.compile(r"^[0-2](\.(0|[1-9]\d*))+$")


@dataclass(frozen=True, slots=True)
class IdentitySettings:
    """Who the identifiers belong to: assigning authority (CX-4 namespace or universal id) ->
    system URI, the URN prefix for namespaces not in the table, and the facility zone."""

    systems: dict[str, str] = field(default_factory=dict)
    system_prefix: str = "urn:dxf-bridge:v2:assigning-authority:"
    zone: str = "America/Los_Angeles"


@dataclass(frozen=True, slots=True)
class Dtm:
    """A v2 date/time: FHIR text at the sender's precision, and the instant it starts at."""

    fhir: str
    instant: datetime
    has_time: bool

    @property
    def date(self) -> str:
        return self.fhir[:10]


def parse_dtm(value: str, zone: str, *, where: tuple[str, int, int, int] | None = None) -> Dtm:
    """Parse DTM/TS/DT (`YYYY[MM[DD[HH[MM[SS[.S[S[S[S]]]]]]]]][+/-ZZZZ]`). Raises Hl7Error (102)."""
    text = value.strip()
    digits = re.match(r"^(\d{14})(\d{1,4})([+-]\d{4})?$", text)
    if digits:  # fractional seconds sent without the dot (seen in real feeds)
        text = f"{digits.group(1)}.{digits.group(2)}{digits.group(3) or ''}"
    m = _DTM.match(text)
    if not m:
        raise Hl7Error("a date/time value is not in HL7 DTM format", code="102", location=where)
    year, month, day, hour, minute, second, offset = m.groups()
    try:
        if hour is not None and minute is None:
            minute = "00"
        if hour is not None:
            sec = float(second) if second else 0.0
            whole = int(sec)
            micro = round((sec - whole) * 1_000_000)
            naive = datetime(int(year), int(month), int(day), int(hour), int(minute), whole, micro)
            if offset:
                sign = 1 if offset[0] == "+" else -1
                hours = int(offset[1:3])
                mins = int(offset[3:5]) if len(offset) > 3 else 0
                if hours > 14 or mins > 59:
                    raise ValueError("offset out of range")
                tz = timezone(sign * timedelta(hours=hours, minutes=mins))
                aware = naive.replace(tzinfo=tz)
            else:
                aware = naive.replace(tzinfo=ZoneInfo(zone))
            off = aware.utcoffset() or timedelta(0)
            total = int(off.total_seconds() // 60)
            sign_txt = "+" if total >= 0 else "-"
            off_txt = f"{sign_txt}{abs(total) // 60:02d}:{abs(total) % 60:02d}"
            body = (
                f"{int(year):04d}-{int(month):02d}-{int(day):02d}T{int(hour):02d}:{int(minute):02d}"
            )
            if second:
                body += f":{whole:02d}"
                if "." in second:
                    body += "." + second.split(".", 1)[1]
            else:
                body += ":00"
            return Dtm(body + off_txt, aware.astimezone(UTC), True)
        if day is not None:
            d = date(int(year), int(month), int(day))
            start = datetime(d.year, d.month, d.day, tzinfo=ZoneInfo(zone))
            return Dtm(d.isoformat(), start.astimezone(UTC), False)
        if month is not None:
            mo = int(month)
            if not 1 <= mo <= 12:
                raise ValueError("month")
            start = datetime(int(year), mo, 1, tzinfo=ZoneInfo(zone))
            return Dtm(f"{int(year):04d}-{mo:02d}", start.astimezone(UTC), False)
        start = datetime(int(year), 1, 1, tzinfo=ZoneInfo(zone))
        return Dtm(f"{int(year):04d}", start.astimezone(UTC), False)
    except ValueError:
        raise Hl7Error("a date/time value is not a real date", code="102", location=where) from None


def coding_system(name: str) -> str | None:
    """CWE-3 (name of coding system) -> system URI; None for local or unknown code systems."""
    key = name.strip()
    if not key:
        return None
    upper = key.upper()
    if upper in CODING_SYSTEMS:
        return CODING_SYSTEMS[upper]
    if key in CODING_SYSTEMS:
        return CODING_SYSTEMS[key]
    if upper.startswith("HL7") and upper[3:].isdigit():
        return v2_table(upper[3:])
    if _ISO_OID.match(key):
        return f"urn:oid:{key}"
    if key.startswith(("http://", "https://", "urn:")):
        return key
    return None


def _coding(code: str, display: str, system_name: str, version: str = "") -> dict | None:
    if not code and not display:
        return None
    out: dict = {}
    system = coding_system(system_name)
    if system:
        out["system"] = system
    if version:
        out["version"] = version
    if code:
        out["code"] = code
    if display:
        out["display"] = display
    return out


def codeable(rep: Rep, *, table: str | None = None) -> dict | None:
    """CWE/CE/CNE (and ID/IS with `table`) -> CodeableConcept; primary and alternate codings,
    CWE-9 original text."""
    if not rep:
        return None
    codings = []
    code, display, system_name = rep.c(1), rep.c(2), rep.c(3)
    if table and not system_name and code:
        first = {"system": v2_table(table), "code": code}
        if display:
            first["display"] = display
        codings.append(first)
    else:
        first = _coding(code, display, system_name, rep.c(7))
        if first:
            codings.append(first)
    alt = _coding(rep.c(4), rep.c(5), rep.c(6), rep.c(8))
    if alt:
        codings.append(alt)
    text = rep.c(9) or display or rep.c(5)
    out: dict = {}
    if codings:
        out["coding"] = codings
    if text:
        out["text"] = text
    return out or None


def assigning_system(hd: Rep, ident: IdentitySettings) -> str | None:
    """HD (CX-4 / EI-2..4 style, given as a component Rep) -> system URI."""
    namespace, universal, utype = hd.c(1), hd.c(2), hd.c(3).upper()
    for key in (namespace, universal):
        if key and key in ident.systems:
            return ident.systems[key]
    if universal and utype == "ISO" and _ISO_OID.match(universal):
        return f"urn:oid:{universal}"
    if universal and utype in ("UUID", "GUID"):
        return f"urn:uuid:{universal.lower()}"
    if universal and utype in ("URI", "DNS") and ":" in universal:
        return universal
    if namespace:
        if namespace.startswith(("http://", "https://", "urn:")):
            return namespace
        return ident.system_prefix + quote(namespace, safe="")
    if universal:
        return ident.system_prefix + quote(universal, safe="")
    return None


def identifier(
    rep: Rep, ident: IdentitySettings, *, type_code: str | None = None, fallback_system: str = ""
) -> dict | None:
    """CX -> Identifier (IG CX[Identifier]): CX-1 value, CX-4 system, CX-5 type (table 0203)."""
    value = rep.c(1)
    if not value:
        return None
    out: dict = {}
    kind = rep.c(5) or type_code
    if kind:
        out["type"] = {"coding": [{"system": v2_table("0203"), "code": kind}]}
    system = assigning_system(rep.comp(4), ident) or fallback_system
    if system:
        out["system"] = system
    out["value"] = value
    if rep.c(4):
        out["assigner"] = {"display": rep.c(4) or rep.c(4, 2)}
    return out


def ei_identifier(rep: Rep, ident: IdentitySettings, type_code: str) -> dict | None:
    """EI (entity identifier: value^namespace^universal id^type) -> Identifier."""
    value = rep.c(1)
    if not value:
        return None
    hd = Rep("^".join([rep.c(2), rep.c(3), rep.c(4)]), rep._delims)  # noqa: SLF001
    out: dict = {"type": {"coding": [{"system": v2_table("0203"), "code": type_code}]}}
    system = assigning_system(hd, ident)
    if system:
        out["system"] = system
    out["value"] = value
    return out


_NAME_USE = {
    "L": "official",
    "D": "usual",
    "M": "maiden",
    "N": "nickname",
    "A": "anonymous",
    "S": "anonymous",
    "B": "official",
    "C": "official",
    "R": "official",
    "TEMP": "temp",
    "T": "temp",
    "U": "usual",
    "P": "usual",
}


def human_name(rep: Rep) -> dict | None:
    """XPN -> HumanName: family, given + middle, suffix, prefix, XPN-7 use."""
    family = rep.c(1)
    given = [g for g in (rep.c(2), rep.c(3)) if g]
    out: dict = {}
    use = _NAME_USE.get(rep.c(7).upper())
    if use:
        out["use"] = use
    if family:
        out["family"] = family
    if given:
        out["given"] = given
    if rep.c(5):
        out["prefix"] = [rep.c(5)]
    suffixes = [s for s in (rep.c(4), rep.c(6)) if s]
    if suffixes:
        out["suffix"] = suffixes
    if not (family or given):
        return None
    return out


_ADDRESS_USE = {"H": "home", "B": "work", "O": "work", "C": "temp", "BA": "billing", "M": "home"}


def address(rep: Rep) -> dict | None:
    """XAD -> Address: lines, city, state, postal code, country, XAD-7 type to use."""
    lines = [x for x in (rep.c(1), rep.c(2)) if x]
    out: dict = {}
    use = _ADDRESS_USE.get(rep.c(7).upper())
    if use:
        out["use"] = use
    if rep.c(7).upper() == "M":
        out["type"] = "postal"
    if lines:
        out["line"] = lines
    for key, comp in (("city", 3), ("state", 4), ("postalCode", 5), ("country", 6)):
        if rep.c(comp):
            out[key] = rep.c(comp)
    if rep.c(9):
        out["district"] = rep.c(9)
    return out if set(out) - {"use", "type"} else None


_TELECOM_SYSTEM = {
    "PH": "phone",
    "FX": "fax",
    "MD": "other",
    "CP": "phone",
    "BP": "pager",
    "Internet": "email",
    "X.400": "email",
    "SAT": "other",
    "TDD": "other",
    "TTY": "other",
}
_TELECOM_USE = {"PRN": "home", "ORN": "home", "WPN": "work", "VHN": "temp", "EMR": "home"}


def contact_point(rep: Rep, default_use: str) -> dict | None:
    """XTN -> ContactPoint: XTN-1 (or XTN-5..7 parts, or XTN-4 email), XTN-2 use, XTN-3 type."""
    equipment = rep.c(3)
    email = rep.c(4)
    number = rep.c(1)
    if not number and (rep.c(6) or rep.c(7)):
        parts = (f"+{rep.c(5)}" if rep.c(5) else "", rep.c(6), rep.c(7))
        number = " ".join(p for p in parts if p)
        if rep.c(8):
            number += f" ext. {rep.c(8)}"
    out: dict = {}
    if email and (equipment in ("Internet", "X.400") or not number):
        out["system"] = "email"
        out["value"] = email
    elif number:
        out["system"] = _TELECOM_SYSTEM.get(equipment, "phone")
        out["value"] = number
    else:
        return None
    out["use"] = "mobile" if equipment == "CP" else _TELECOM_USE.get(rep.c(2), default_use)
    return out


def practitioner_ref(rep: Rep, ident: IdentitySettings) -> dict | None:
    """XCN -> a Reference carrying the practitioner's identifier and name (no resource made)."""
    id_value = rep.c(1)
    family, given = rep.c(2), rep.c(3)
    display = " ".join(p for p in (rep.c(6), given, rep.c(4), family, rep.c(5)) if p)
    if not (id_value or display):
        return None
    out: dict = {}
    if id_value:
        ident_out: dict = {"value": id_value}
        system = assigning_system(rep.comp(9), ident)
        if system:
            ident_out["system"] = system
        out["identifier"] = ident_out
    if display:
        out["display"] = display
    return out
