"""RDE^O11 -> MedicationRequest; VXU^V04 -> Immunization.

The IG's RDE_O11 and ORC[MedicationRequest] maps are "under construction" and it has no RXE
map (../shared/reference/v2-to-fhir.md section 2.8). This follows its RXO[MedicationRequest] and
RXR[MedicationRequest] rows for the matching RXE fields, and the choices of the LinuxForHealth
and FHIR-Converter templates summarised there:

| v2 | MedicationRequest |
|---|---|
| ORC-2 / ORC-3 / RXE-15 | identifier (PLAC / FILL / prescription number) |
| ORC-5 (else ORC-1) | status (tables 0038 / 0119) |
| RXE-2 | medicationCodeableConcept; with RXC components or an RXE-6 form, a Medication |
| RXE-6 / RXC-2, -3, -4 | Medication.form / ingredient item and amount (IG RXC[Medication]) |
| ORC-9 (else RXE-32) | authoredOn |
| ORC-12 (else RXE-13) | requester (identifier and name) |
| RXE-3/4/5 | dosageInstruction.doseAndRate dose (quantity or range) |
| RXE-1 or TQ1 | dosageInstruction.timing (repeat pattern, bounds) |
| RXE-7 | dosageInstruction.text |
| RXR-1 / RXR-2 / RXR-4 | dosageInstruction.route / site / method |
| RXE-10/11 | dispenseRequest.quantity |
| RXE-12 | dispenseRequest.numberOfRepeatsAllowed |
| RXE-27 | reasonCode |

VXU (IG VXU_V04, RXA[Immunization]): RXA-5 vaccineCode, RXA-3 occurrence, RXA-6/7 dose,
RXA-15 lot, RXA-16 expiry, RXA-17 manufacturer, RXA-20 completion status, RXR route/site.
"""

from __future__ import annotations

import re
from typing import Any

from app.hl7.mapping.adt import coverages, patient_observations, visit
from app.hl7.mapping.common import MapContext, codes_of, map_patient, resource_id
from app.hl7.mapping.datatypes import codeable, ei_identifier, practitioner_ref
from app.hl7.mapping.oru import _fhir_decimal, _number, unit
from app.hl7.mapping.tables import ORDER_CONTROL_STATUS, ORDER_STATUS
from app.hl7.parse import Hl7Error, Rep, Segment

__all__ = ["map_rde", "map_vxu", "timing"]

_FIXED_FREQUENCY = {
    "QD": (1, 1, "d"),
    "DAILY": (1, 1, "d"),
    "BID": (2, 1, "d"),
    "TID": (3, 1, "d"),
    "QID": (4, 1, "d"),
    "QAM": (1, 1, "d"),
    "QPM": (1, 1, "d"),
    "QHS": (1, 1, "d"),
    "QOD": (1, 2, "d"),
    "QW": (1, 1, "wk"),
}
_EVERY = re.compile(r"^Q(\d+)([SMHDWL])$")
_UNIT = {"S": "s", "M": "min", "H": "h", "D": "d", "W": "wk", "L": "mo"}


def timing(pattern: str, start: Any, end: Any) -> dict[str, Any] | None:
    """A v2 repeat pattern (table 0335: Q6H, BID, ...) and bounds -> Timing."""
    out: dict[str, Any] = {}
    repeat: dict[str, Any] = {}
    key = pattern.strip().upper()
    if key in _FIXED_FREQUENCY:
        freq, period, unit_code = _FIXED_FREQUENCY[key]
        repeat.update(frequency=freq, period=period, periodUnit=unit_code)
    else:
        m = _EVERY.match(key)
        if m:
            repeat.update(frequency=1, period=int(m.group(1)), periodUnit=_UNIT[m.group(2)])
    if start is not None or end is not None:
        bounds = {}
        if start is not None:
            bounds["start"] = start.fhir
        if end is not None:
            bounds["end"] = end.fhir
        repeat["boundsPeriod"] = bounds
    if repeat:
        out["repeat"] = repeat
    if pattern:
        out["code"] = {"text": pattern}
    return out or None


def _groups(ctx: MapContext, anchor: str) -> list[tuple[Segment | None, Segment, list[Segment]]]:
    """ORC-led order groups: (ORC, anchor segment, the segments after the anchor)."""
    groups: list[tuple[Segment | None, Segment, list[Segment]]] = []
    orc: Segment | None = None
    for seg in ctx.msg.segments:
        if seg.name == "ORC":
            orc = seg
        elif seg.name == anchor:
            groups.append((orc, seg, []))
        elif groups:
            groups[-1][2].append(seg)
    return groups


def _quantity(rep_value: str, unit_rep: Rep, where: tuple[str, int, int, int]) -> dict[str, Any]:
    return {"value": _fhir_decimal(_number(rep_value, where)), **unit(unit_rep)}


async def map_rde(ctx: MapContext) -> None:
    pid = ctx.msg.first("PID")
    if pid is None:
        raise Hl7Error("the message has no PID segment", code="100", location=("PID", 0, 0, 0))
    patient_id = await map_patient(ctx, pid)
    encounter_id = await visit(ctx, patient_id)
    coverages(ctx, patient_id)
    groups = _groups(ctx, "RXE")
    if not groups:
        raise Hl7Error("RDE^O11 needs an RXE segment", code="100", location=("RXE", 0, 0, 0))
    for n, (orc, rxe, members) in enumerate(groups, start=1):
        _medication_request(ctx, n, orc, rxe, members, patient_id, encounter_id)
    patient_observations(ctx, patient_id, encounter_id)


def _medication_request(
    ctx: MapContext,
    n: int,
    orc: Segment | None,
    rxe: Segment,
    members: list[Segment],
    patient_id: str,
    encounter_id: str | None,
) -> None:
    medication = codeable(rxe.rep(2))
    if medication is None:
        raise Hl7Error(
            "RXE-2 (give code) is required", code="101", location=("RXE", rxe.index, 2, 1)
        )
    idents = []
    if orc is not None:
        for field, kind in ((2, "PLAC"), (3, "FILL")):
            found = ei_identifier(orc.rep(field), ctx.ident, kind)
            if found:
                idents.append(found)
    if rxe.c(15):
        idents.append({"type": {"text": "prescription number"}, "value": rxe.c(15)})
    if idents:
        first = idents[0]
        key = f"{first.get('system', '')}|{first['value']}|{codes_of(rxe.rep(2))}"
    else:
        key = f"{ctx.msg.sender}|{ctx.msg.control_id}|{n}"
    status = "active"
    if orc is not None:
        status = ORDER_STATUS.get(orc.c(5).upper()) or ORDER_CONTROL_STATUS.get(
            orc.c(1).upper(), "active"
        )
    body: dict[str, Any] = {
        "status": status,
        "intent": "order",
        "medicationCodeableConcept": medication,
        "subject": {"reference": f"Patient/{patient_id}"},
    }
    if idents:
        body["identifier"] = idents
    if encounter_id:
        body["encounter"] = {"reference": f"Encounter/{encounter_id}"}
    authored = (ctx.field_dtm(orc, 9) if orc is not None else None) or ctx.field_dtm(rxe, 32)
    if authored is not None:
        body["authoredOn"] = authored.fhir
    requester = (practitioner_ref(orc.rep(12), ctx.ident) if orc is not None else None) or (
        practitioner_ref(rxe.rep(13), ctx.ident)
    )
    if requester:
        body["requester"] = requester
    dosage: dict[str, Any] = {}
    if rxe.c(7) or rxe.c(7, 2):
        dosage["text"] = rxe.c(7, 2) or rxe.c(7)
    low, high = rxe.c(3), rxe.c(4)
    dose_where = ("RXE", rxe.index, 3, 1)
    if low and high and low != high:
        dosage["doseAndRate"] = [
            {
                "doseRange": {
                    "low": _quantity(low, rxe.rep(5), dose_where),
                    "high": _quantity(high, rxe.rep(5), dose_where),
                }
            }
        ]
    elif low:
        dosage["doseAndRate"] = [{"doseQuantity": _quantity(low, rxe.rep(5), dose_where)}]
    tq1 = next((s for s in members if s.name == "TQ1"), None)
    if tq1 is not None:
        when = timing(tq1.c(3), ctx.field_dtm(tq1, 7), ctx.field_dtm(tq1, 8))
    else:
        tq = rxe.rep(1)
        when = timing(
            tq.c(2),
            ctx.field_dtm(rxe, 1, 4) if tq.c(4) else None,
            ctx.field_dtm(rxe, 1, 5) if tq.c(5) else None,
        )
    if when:
        dosage["timing"] = when
    rxr = next((s for s in members if s.name == "RXR"), None)
    if rxr is not None:
        for field, element, table in (
            (1, "route", "0162"),
            (2, "site", "0163"),
            (4, "method", "0165"),
        ):
            concept = codeable(rxr.rep(field), table=table)
            if concept:
                dosage[element] = concept
    if dosage:
        body["dosageInstruction"] = [dosage]
    dispense: dict[str, Any] = {}
    if rxe.c(10):
        dispense["quantity"] = _quantity(rxe.c(10), rxe.rep(11), ("RXE", rxe.index, 10, 1))
    if rxe.c(12).isdigit():
        dispense["numberOfRepeatsAllowed"] = int(rxe.c(12))
    if dispense:
        body["dispenseRequest"] = dispense
    reasons = [c for c in (codeable(r) for r in rxe.reps(27)) if c]
    if reasons:
        body["reasonCode"] = reasons
    medication_id = _medication(ctx, key, rxe, members)
    if medication_id is not None:
        del body["medicationCodeableConcept"]
        body["medicationReference"] = {
            "reference": f"Medication/{medication_id}",
            "display": medication.get("text") or rxe.c(2, 2) or rxe.c(2),
        }
    ctx.put("MedicationRequest", resource_id("MedicationRequest", key), body)


def _medication(ctx: MapContext, key: str, rxe: Segment, members: list[Segment]) -> str | None:
    """A Medication resource when the code alone does not say what is given: a compound or
    IV mixture (RXC components, IG RXC[Medication]) or a dosage form (RXE-6). Otherwise None
    and the request keeps medicationCodeableConcept."""
    components = [s for s in members if s.name == "RXC"]
    form = codeable(rxe.rep(6))
    if not components and form is None:
        return None
    body: dict[str, Any] = {"code": codeable(rxe.rep(2))}
    if form is not None:
        body["form"] = form
    ingredients = []
    for rxc in components:
        item = codeable(rxc.rep(2))
        if item is None:
            continue
        ingredient: dict[str, Any] = {"itemCodeableConcept": item}
        if rxc.c(3):
            amount = _quantity(rxc.c(3), rxc.rep(4), ("RXC", rxc.index, 3, 1))
            ingredient["strength"] = {"numerator": amount, "denominator": {"value": 1}}
        ingredients.append(ingredient)
    if ingredients:
        body["ingredient"] = ingredients
    medication_id = resource_id("Medication", key)
    ctx.put("Medication", medication_id, body)
    return medication_id


_RXA_STATUS = {"CP": "completed", "PA": "completed", "RE": "not-done", "NA": "not-done"}


async def map_vxu(ctx: MapContext) -> None:
    pid = ctx.msg.first("PID")
    if pid is None:
        raise Hl7Error("the message has no PID segment", code="100", location=("PID", 0, 0, 0))
    patient_id = await map_patient(ctx, pid)
    encounter_id = await visit(ctx, patient_id)
    coverages(ctx, patient_id)
    patient_observations(ctx, patient_id, encounter_id)
    for n, (orc, rxa, members) in enumerate(_groups(ctx, "RXA"), start=1):
        vaccine = codeable(rxa.rep(5))
        when = ctx.field_dtm(rxa, 3)
        if vaccine is None or when is None:
            raise Hl7Error(
                "RXA-3 (start of administration) and RXA-5 (administered code) are required",
                code="101",
                location=("RXA", rxa.index, 5 if vaccine is None else 3, 1),
            )
        body: dict[str, Any] = {
            "status": _RXA_STATUS.get(rxa.c(20).upper(), "completed"),
            "vaccineCode": vaccine,
            "patient": {"reference": f"Patient/{patient_id}"},
            "occurrenceDateTime": when.fhir,
        }
        if encounter_id:
            body["encounter"] = {"reference": f"Encounter/{encounter_id}"}
        filler = ei_identifier(orc.rep(3), ctx.ident, "FILL") if orc is not None else None
        if filler:
            body["identifier"] = [filler]
        amount = rxa.c(6)
        if amount and amount != "999":
            body["doseQuantity"] = _quantity(amount, rxa.rep(7), ("RXA", rxa.index, 6, 1))
        if rxa.c(15):
            body["lotNumber"] = rxa.c(15)
        expiry = ctx.field_dtm(rxa, 16)
        if expiry is not None:
            body["expirationDate"] = expiry.date
        if rxa.c(17) or rxa.c(17, 2):
            body["manufacturer"] = {"display": rxa.c(17, 2) or rxa.c(17)}
        rxr = next((s for s in members if s.name == "RXR"), None)
        if rxr is not None:
            route = codeable(rxr.rep(1), table="0162")
            site = codeable(rxr.rep(2), table="0163")
            if route:
                body["route"] = route
            if site:
                body["site"] = site
        key = (
            f"{filler.get('system', '')}|{filler['value']}"
            if filler
            else f"{patient_id}|{codes_of(rxa.rep(5))}|{rxa.c(3)}|{n}"
        )
        ctx.put("Immunization", resource_id("Immunization", key), body)
