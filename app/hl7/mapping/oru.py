"""ORU^R01 -> DiagnosticReport per OBR, Observation per OBX, Specimen (SPM or OBR-15).

IG message map ORU_R01 and segment maps OBR[DiagnosticReport], OBX[Observation],
SPM[Specimen], NTE[Observation] (../shared/reference/v2-to-fhir.md sections 2.1, 2.6, 2.7).
Grouping follows the ORU_R01 structure: an OBR opens an ORDER_OBSERVATION group; the OBX,
NTE and SPM until the next OBR belong to it; an NTE belongs to the OBX before it.

OBX-2 decides the value (IG OBX[Observation] table):

| OBX-2 | value[x] |
|---|---|
| NM | valueQuantity (OBX-6 unit; UCUM when OBX-6.3 says so or the unit is a known UCUM unit) |
| SN | valueQuantity with comparator, valueRange (`-`), valueRatio (`:` `/`), else valueString |
| ST TX FT | valueString (repetitions joined by newlines, escapes decoded) |
| CE CWE CNE CF IS ID | valueCodeableConcept |
| DT DTM TS | valueDateTime |
| TM | valueTime |
| NR | valueRange |
| DR | valuePeriod |
| ED | the R5 `Observation.value` back-port extension with a valueAttachment |
| anything else | valueString |

US Core: category `laboratory` on every Observation and category LAB on the DiagnosticReport.
An ADT OBX (no order) has no category, unless its LOINC code is a vital sign's: then it is
`vital-signs` (https://hl7.org/fhir/R4/observation-vitalsigns.html).
"""

from __future__ import annotations

import base64
import re
from decimal import Decimal, InvalidOperation
from typing import Any

from app.fhir.uscore import VITAL_SIGN_CODES
from app.hl7.mapping.adt import coverages, visit
from app.hl7.mapping.common import MapContext, codes_of, map_patient, resource_id
from app.hl7.mapping.datatypes import codeable, ei_identifier, identifier
from app.hl7.mapping.tables import (
    INTERPRETATION_SYSTEM,
    OBSERVATION_STATUS,
    REPORT_STATUS,
    UCUM,
    v2_table,
)
from app.hl7.parse import Hl7Error, Rep, Segment

__all__ = ["map_oru", "observation_value"]

_ABSENT_UNKNOWN = {
    "url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason",
    "valueCode": "unknown",
}
LAB_CATEGORY = {
    "coding": [
        {
            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
            "code": "laboratory",
            "display": "Laboratory",
        }
    ]
}
VITAL_SIGNS_CATEGORY = {
    "coding": [
        {
            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
            "code": "vital-signs",
            "display": "Vital Signs",
        }
    ]
}
REPORT_LAB = {"coding": [{"system": v2_table("0074"), "code": "LAB", "display": "Laboratory"}]}
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)$")
_LOINC = re.compile(r"^(\d{1,7})-(\d)$")
# v2 units that are not UCUM codes as sent, to their UCUM code
_UNIT_TO_UCUM = {
    "mg/dl": "mg/dL",
    "g/dl": "g/dL",
    "ug/dl": "ug/dL",
    "mmol/l": "mmol/L",
    "meq/l": "meq/L",
    "umol/l": "umol/L",
    "iu/l": "[IU]/L",
    "u/l": "U/L",
    "%": "%",
    "fl": "fL",
    "pg": "pg",
    "k/ul": "10*3/uL",
    "m/ul": "10*6/uL",
    "10^3/ul": "10*3/uL",
    "10^6/ul": "10*6/uL",
    "x10e3/ul": "10*3/uL",
    "x10e6/ul": "10*6/uL",
    "bpm": "/min",
    "/min": "/min",
    "mmhg": "mm[Hg]",
    "kg": "kg",
    "g": "g",
    "cm": "cm",
    "mm": "mm",
    "ml": "mL",
    "l": "L",
    "s": "s",
    "sec": "s",
    "h": "h",
    "d": "d",
    "wk": "wk",
    "mo": "mo",
    "a": "a",
    "yr": "a",
    "years": "a",
    "cel": "Cel",
    "degc": "Cel",
    "[degf]": "[degF]",
    "ng/ml": "ng/mL",
    "pg/ml": "pg/mL",
    "mg/l": "mg/L",
    "ml/min/1.73m2": "mL/min/{1.73_m2}",
    "ratio": "{ratio}",
}


def _loinc_ok(code: str) -> bool:
    """LOINC codes end in a mod-10 check digit (LOINC Users' Guide, appendix: check digit)."""
    m = _LOINC.match(code)
    if not m:
        return False
    digits = m.group(1)
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d = d // 10 + d % 10
        total += d
    return (10 - total % 10) % 10 == int(m.group(2))


def _check_code(rep: Rep, where: tuple[str, int, int, int]) -> None:
    if rep.c(3).upper() in ("LN", "LOINC") and rep.c(1) and not _loinc_ok(rep.c(1)):
        raise Hl7Error(
            "a code marked as LOINC (LN) is not a valid LOINC code", code="103", location=where
        )


def _number(text: str, where: tuple[str, int, int, int]) -> Decimal:
    value = text.strip()
    if not _NUMBER.match(value):
        raise Hl7Error("a numeric (NM) value is not a number", code="102", location=where)
    try:
        return Decimal(value)
    except InvalidOperation:
        raise Hl7Error("a numeric value is not a number", code="102", location=where) from None


def _fhir_decimal(value: Decimal) -> float | int:
    return (
        int(value) if value == value.to_integral_value() and "." not in str(value) else float(value)
    )


def unit(rep: Rep) -> dict[str, Any]:
    """OBX-6 (CWE) -> Quantity unit/system/code: UCUM where it maps, else the text alone."""
    if not rep:
        return {}
    code, text, system = rep.c(1), rep.c(2), rep.c(3).upper()
    out: dict[str, Any] = {"unit": text or code}
    if system in ("UCUM", "2.16.840.1.113883.6.8") and code:
        out.update(system=UCUM, code=code)
    elif code and code.lower() in _UNIT_TO_UCUM:
        out.update(system=UCUM, code=_UNIT_TO_UCUM[code.lower()])
    return out


def observation_value(ctx: MapContext, obx: Segment) -> dict[str, Any]:
    """OBX-2/OBX-5/OBX-6 -> the Observation's value element(s) (see the module table)."""
    kind = obx.c(2).upper()
    reps = obx.reps(5)
    where = ("OBX", obx.index, 5, 1)
    if not reps:
        return {}
    if kind in ("ST", "TX", "FT", "") or kind not in _TYPED:
        return {"valueString": "\n".join(r.text() for r in reps)}
    if len(reps) > 1:
        code = codeable(obx.rep(3)) or {"text": "component"}
        return {"component": [{"code": code, **_typed(ctx, kind, r, obx, where)} for r in reps]}
    return _typed(ctx, kind, reps[0], obx, where)


def _typed(
    ctx: MapContext, kind: str, rep: Rep, obx: Segment, where: tuple[str, int, int, int]
) -> dict[str, Any]:
    units = unit(obx.rep(6))
    if kind == "NM":
        raw = rep.c(1)
        m = re.match(r"^(<=|>=|<|>)\s*(.+)$", raw)
        quantity: dict[str, Any] = {}
        if m:  # "<15": a comparator where SN belonged, common in real feeds
            quantity["comparator"] = m.group(1)
            raw = m.group(2)
        quantity = {"value": _fhir_decimal(_number(raw, where)), **quantity, **units}
        return {"valueQuantity": quantity}
    if kind == "SN":
        return _structured_numeric(rep, units, where)
    if kind in ("CE", "CWE", "CNE", "CF"):
        concept = codeable(rep)
        return {"valueCodeableConcept": concept} if concept else {}
    if kind in ("IS", "ID"):
        return {"valueCodeableConcept": {"coding": [{"code": rep.c(1)}]}} if rep.c(1) else {}
    if kind in ("DT", "DTM", "TS"):
        return {"valueDateTime": ctx.dtm(rep.c(1), where).fhir}
    if kind == "TM":
        return {"valueTime": _time(rep.c(1), where)}
    if kind == "NR":
        return {"valueRange": _range(rep.c(1), rep.c(2), units, where)}
    if kind == "DR":
        period = {}
        if rep.c(1):
            period["start"] = ctx.dtm(rep.c(1), where).fhir
        if rep.c(2):
            period["end"] = ctx.dtm(rep.c(2), where).fhir
        return {"valuePeriod": period}
    if kind == "RP":  # reference pointer: where the data is (IG RP[Attachment])
        pointer: dict[str, Any] = {"url": rep.c(1)} if rep.c(1) else {"title": "reference"}
        mime = "/".join(p for p in (rep.c(3).lower(), rep.c(4).lower()) if p)
        if "/" in mime and rep.c(1):
            pointer["contentType"] = mime
        return {
            "extension": [
                {
                    "url": "http://hl7.org/fhir/5.0/StructureDefinition/extension-Observation.value",
                    "valueAttachment": pointer,
                }
            ]
        }
    if kind == "ED":
        attachment: dict[str, Any] = {}
        mime = "/".join(p for p in (rep.c(2).lower(), rep.c(3).lower()) if p)
        if "/" in mime:
            attachment["contentType"] = mime
        if rep.c(4).upper() == "BASE64" and rep.c(5):
            attachment["data"] = rep.c(5)
        return {
            "extension": [
                {
                    "url": "http://hl7.org/fhir/5.0/StructureDefinition/extension-Observation.value",
                    "valueAttachment": attachment or {"title": "embedded data"},
                }
            ]
        }
    return {"valueString": rep.text()}


_TYPED = {
    "NM",
    "SN",
    "CE",
    "CWE",
    "CNE",
    "CF",
    "IS",
    "ID",
    "DT",
    "DTM",
    "TS",
    "TM",
    "NR",
    "DR",
    "ED",
    "RP",
}
_COMPARATORS = {"<": "<", "<=": "<=", ">": ">", ">=": ">="}


def _range(
    low: str, high: str, units: dict[str, Any], where: tuple[str, int, int, int]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if low:
        out["low"] = {"value": _fhir_decimal(_number(low, where)), **units}
    if high:
        out["high"] = {"value": _fhir_decimal(_number(high, where)), **units}
    return out


def _structured_numeric(
    rep: Rep, units: dict[str, Any], where: tuple[str, int, int, int]
) -> dict[str, Any]:
    """SN: comparator ^ num1 ^ separator/suffix ^ num2 (IG SN rows)."""
    comparator, num1, sep, num2 = rep.c(1), rep.c(2), rep.c(3), rep.c(4)
    if sep in (":", "/") and num2:
        return {
            "valueRatio": {
                "numerator": {"value": _fhir_decimal(_number(num1, where)), **units},
                "denominator": {"value": _fhir_decimal(_number(num2, where)), **units},
            }
        }
    if sep == "-" and num2:
        return {"valueRange": _range(num1, num2, units, where)}
    if sep == "+" or comparator == "<>":
        return {"valueString": "".join(p for p in (comparator, num1, sep, num2) if p)}
    quantity: dict[str, Any] = {"value": _fhir_decimal(_number(num1, where)), **units}
    if comparator in _COMPARATORS:
        quantity["comparator"] = _COMPARATORS[comparator]
    elif comparator not in ("", "="):
        raise Hl7Error("SN comparator is not one of > < >= <= = <>", code="102", location=where)
    return {"valueQuantity": quantity}


def _time(value: str, where: tuple[str, int, int, int]) -> str:
    m = re.match(r"^(\d{2})(\d{2})?(\d{2})?(\.\d+)?([+-]\d{4})?$", value)
    if not m or int(m.group(1)) > 23 or int(m.group(2) or 0) > 59 or int(m.group(3) or 0) > 59:
        raise Hl7Error("a time (TM) value is not HHMM[SS]", code="102", location=where)
    return f"{m.group(1)}:{m.group(2) or '00'}:{m.group(3) or '00'}"


def _reference_range(text: str, units: dict[str, Any]) -> dict[str, Any]:
    """OBX-7 -> referenceRange: low/high only when safely parseable ("a-b", "<b", ">a")."""
    out: dict[str, Any] = {"text": text}
    m = re.match(r"^\s*([0-9.]+)\s*-\s*([0-9.]+)\s*$", text)
    try:
        if m:
            out["low"] = {"value": _fhir_decimal(Decimal(m.group(1))), **units}
            out["high"] = {"value": _fhir_decimal(Decimal(m.group(2))), **units}
    except InvalidOperation:
        pass
    return out


async def map_oru(ctx: MapContext) -> None:
    pid = ctx.msg.first("PID")
    if pid is None:
        raise Hl7Error("the message has no PID segment", code="100", location=("PID", 0, 0, 0))
    patient_id = await map_patient(ctx, pid)
    encounter_id = await visit(ctx, patient_id)
    coverages(ctx, patient_id)
    groups: list[tuple[Segment | None, Segment, list[Segment]]] = []
    orc: Segment | None = None
    for seg in ctx.msg.segments:
        if seg.name == "ORC":
            orc = seg
        elif seg.name == "OBR":
            groups.append((orc, seg, []))
        elif seg.name == "PID" and groups:
            break
        elif groups:
            groups[-1][2].append(seg)
    if not groups:
        raise Hl7Error("ORU^R01 needs an OBR segment", code="100", location=("OBR", 0, 0, 0))
    for n, (orc_seg, obr, members) in enumerate(groups, start=1):
        await _report(ctx, n, orc_seg, obr, members, patient_id, encounter_id)


def _report_key(ctx: MapContext, n: int, orc: Segment | None, obr: Segment) -> tuple[str, list]:
    idents = []
    for seg, field, kind in ((obr, 2, "PLAC"), (obr, 3, "FILL")):
        found = ei_identifier(seg.rep(field), ctx.ident, kind)
        if found:
            idents.append(found)
    if orc is not None and not idents:
        for field, kind in ((2, "PLAC"), (3, "FILL")):
            found = ei_identifier(orc.rep(field), ctx.ident, kind)
            if found:
                idents.append(found)
    filler = next((i for i in idents if i["type"]["coding"][0]["code"] == "FILL"), None)
    chosen = filler or (idents[0] if idents else None)
    code = codes_of(obr.rep(4))
    if chosen is not None:
        key = f"{chosen.get('system', '')}|{chosen['value']}|{code}"
    else:
        key = f"{ctx.msg.sender}|{ctx.msg.control_id}|{n}"
    return key, idents


async def _report(
    ctx: MapContext,
    n: int,
    orc: Segment | None,
    obr: Segment,
    members: list[Segment],
    patient_id: str,
    encounter_id: str | None,
) -> None:
    key, idents = _report_key(ctx, n, orc, obr)
    report_id = resource_id("DiagnosticReport", key)
    _check_code(obr.rep(4), ("OBR", obr.index, 4, 1))
    # OBR-4 is required in v2, yet real feeds leave it empty: the results are kept and the
    # report's code says why it is missing (FHIR data-absent-reason, v2-to-fhir.md 4.5)
    code = codeable(obr.rep(4)) or {"extension": [_ABSENT_UNKNOWN]}
    subject = {"reference": f"Patient/{patient_id}"}
    effective = ctx.field_dtm(obr, 7)
    effective_end = ctx.field_dtm(obr, 8)
    specimen_refs = _specimens(ctx, key, obr, members, subject, effective)

    results = []
    narrative: list[str] = []
    seen: dict[str, int] = {}
    last_obs: dict[str, Any] | None = None
    for seg in members:
        if seg.name == "NTE" and last_obs is not None:
            text = "\n".join(r.text() for r in seg.reps(3) if r)
            if text:
                last_obs.setdefault("note", []).append({"text": text})
            continue
        if seg.name != "OBX":
            continue
        if not (seg.c(3) or seg.c(3, 2)) and seg.c(2).upper() in ("TX", "FT", "ST"):
            # uncoded narrative lines: the report's text (v2-to-fhir.md 4.4), not Observations
            narrative.append("\n".join(r.text() for r in seg.reps(5)))
            last_obs = None
            continue
        obs_key = f"{obr.c(4)}|{codes_of(seg.rep(3))}|{seg.c(4)}"
        seen[obs_key] = seen.get(obs_key, 0) + 1
        obs_id = resource_id("Observation", key, obs_key, str(seen[obs_key]))
        obs = _observation(ctx, seg, subject, effective, specimen_refs)
        if encounter_id:
            obs["encounter"] = {"reference": f"Encounter/{encounter_id}"}
        ctx.put("Observation", obs_id, obs)
        last_obs = ctx.out[("Observation", obs_id)]
        results.append({"reference": f"Observation/{obs_id}"})

    report: dict[str, Any] = {
        "status": REPORT_STATUS.get(obr.c(25).upper(), "unknown"),
        "category": [REPORT_LAB],
        "code": code,
        "subject": subject,
    }
    if idents:
        report["identifier"] = idents
    if encounter_id:
        report["encounter"] = {"reference": f"Encounter/{encounter_id}"}
    if effective is not None:
        if effective_end is not None:
            report["effectivePeriod"] = {"start": effective.fhir, "end": effective_end.fhir}
        else:
            report["effectiveDateTime"] = effective.fhir
    issued = ctx.field_dtm(obr, 22)
    if issued is not None and issued.has_time:
        report["issued"] = issued.fhir
    if specimen_refs:
        report["specimen"] = specimen_refs
    if results:
        report["result"] = results
    if narrative:
        data = base64.b64encode("\n".join(narrative).encode()).decode()
        report["presentedForm"] = [{"contentType": "text/plain; charset=utf-8", "data": data}]
    ctx.put("DiagnosticReport", report_id, report)


def _specimens(
    ctx: MapContext,
    key: str,
    obr: Segment,
    members: list[Segment],
    subject: dict[str, Any],
    collected: Any,
) -> list[dict[str, str]]:
    """SPM (v2.5+) or OBR-15 (earlier versions) -> Specimen (IG SPM[Specimen], OBR[Specimen])."""
    refs = []
    for spm in (s for s in members if s.name == "SPM"):
        body: dict[str, Any] = {"subject": subject}
        ids = []
        for comp, kind in ((1, "PLAC"), (2, "FILL")):
            sub = spm.rep(2).comp(comp)
            found = ei_identifier(sub, ctx.ident, kind)
            if found:
                ids.append(found)
        if ids:
            body["identifier"] = ids
        kind_cc = codeable(spm.rep(4), table="0487")
        if kind_cc:
            body["type"] = kind_cc
        when = ctx.field_dtm(spm, 17)
        if when is not None:
            body["collection"] = {"collectedDateTime": when.fhir}
        received = ctx.field_dtm(spm, 18)
        if received is not None and received.has_time:
            body["receivedTime"] = received.fhir
        spec_id = resource_id("Specimen", key, spm.c(2) or spm.c(1) or str(spm.index))
        ctx.put("Specimen", spec_id, body)
        refs.append({"reference": f"Specimen/{spec_id}"})
    if not refs and obr.c(15):
        body = {
            "subject": subject,
            "type": codeable(obr.rep(15).comp(1), table="0070") or {"text": obr.c(15)},
        }
        if collected is not None:
            body["collection"] = {"collectedDateTime": collected.fhir}
        spec_id = resource_id("Specimen", key, "OBR-15")
        ctx.put("Specimen", spec_id, body)
        refs.append({"reference": f"Specimen/{spec_id}"})
    return refs


def adt_observation(
    ctx: MapContext, obx: Segment, patient_id: str, encounter_id: str | None
) -> dict[str, Any] | None:
    """An OBX of an ADT message (no order): an Observation on the Patient, or None when the
    OBX carries neither a code nor a value."""
    if not (obx.c(3) or obx.c(3, 2)):
        if obx.reps(5):
            raise Hl7Error(
                "OBX-3 (observation identifier) needs a code",
                code="101",
                location=("OBX", obx.index, 3, 1),
            )
        return None
    body = _observation(ctx, obx, {"reference": f"Patient/{patient_id}"}, None, [])
    body.pop("category", None)  # not a laboratory result
    if any(
        c.get("system") == "http://loinc.org" and c.get("code") in VITAL_SIGN_CODES
        for c in body["code"].get("coding", [])
    ):
        # a vital sign (FHIR R4 vitalsigns: these LOINC codes SHALL use the profile, whose
        # category is vital-signs and whose effective[x] is mandatory: without OBX-14 it is
        # the data-absent-reason `unknown`, US Core "Missing Data")
        body["category"] = [VITAL_SIGNS_CATEGORY]
        if not any(k.startswith("effective") for k in body):
            body["_effectiveDateTime"] = {"extension": [_ABSENT_UNKNOWN]}
    if encounter_id:
        body["encounter"] = {"reference": f"Encounter/{encounter_id}"}
    return body


def _observation(
    ctx: MapContext,
    obx: Segment,
    subject: dict[str, Any],
    effective: Any,
    specimens: list[dict[str, str]],
) -> dict[str, Any]:
    where = ("OBX", obx.index, 3, 1)
    _check_code(obx.rep(3), where)
    code = codeable(obx.rep(3))
    if code is None or not (obx.c(3) or obx.c(3, 4)):
        raise Hl7Error("OBX-3 (observation identifier) needs a code", code="101", location=where)
    result_status = obx.c(11).upper()
    body: dict[str, Any] = {
        "status": OBSERVATION_STATUS.get(result_status, "unknown"),
        "category": [LAB_CATEGORY],
        "code": code,
        "subject": subject,
    }
    when = ctx.field_dtm(obx, 14) or effective
    if when is not None:
        body["effectiveDateTime"] = when.fhir
    value = observation_value(ctx, obx)
    body.update(value)
    if result_status == "N" and not value:
        body["dataAbsentReason"] = {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/data-absent-reason",
                    "code": "not-asked",
                }
            ]
        }
    units = unit(obx.rep(6))
    if obx.c(7):
        body["referenceRange"] = [_reference_range(obx.c(7), units)]
    flags = [r.c(1) for r in obx.reps(8) if r.c(1)]
    if flags:
        body["interpretation"] = [
            {"coding": [{"system": INTERPRETATION_SYSTEM, "code": flag}]} for flag in flags
        ]
    method = codeable(obx.rep(17))
    if method:
        body["method"] = method
    if specimens:
        body["specimen"] = specimens[0]
    producer = identifier(obx.rep(15), ctx.ident)
    if producer or obx.c(23):
        body["performer"] = [{"display": obx.c(23) or obx.c(15, 2) or obx.c(15)}]
    return body
