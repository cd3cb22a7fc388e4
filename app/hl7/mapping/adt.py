"""ADT events -> Patient, Encounter, AllergyIntolerance, Condition, Coverage, RelatedPerson.

IG message maps ADT_A01/A02/A03/A05/A09/A11 and segment maps PV1[Encounter], PV2[Encounter],
AL1[AllergyIntolerance], DG1[Condition], IN1[Coverage] (../shared/reference/v2-to-fhir.md
sections 2.1, 2.5; requirements.md section 5.4). Event semantics:

| event | effect on the Encounter |
|---|---|
| A01 A04 A06 A07 | admit/register/change class: status in-progress, class from PV1-2 |
| A05 | pre-admit: planned |
| A02 | transfer: the new PV1-3 location is active, the previous ones completed |
| A12 | cancel transfer: the latest location is dropped, the one before it active again |
| A03 | discharge: finished, period.end from PV1-45 (else the event time) |
| A13 | cancel discharge: in-progress again, period.end and discharge disposition removed |
| A11 | cancel admit/visit: cancelled |
| A08 | update: everything the message carries, but not the status |
| A28 A31 | person only: no Encounter (their PV1 is a placeholder) |
| A40 | merge: MRG-1's Patient becomes inactive, `link` replaced-by the PID Patient, which gets
|      | `link` replaces; resources that referenced the retired Patient now reference the survivor |

US Core 6.1 makes Encounter.type mandatory: until a PV1-4 (admission type) arrives it is the
data-absent-reason `unknown` (US Core "Missing Data"), which a later PV1-4 replaces.
"""

from __future__ import annotations

from typing import Any

from app.hl7.mapping.common import MapContext, codes_of, map_patient, merge, resource_id
from app.hl7.mapping.datatypes import codeable, identifier, practitioner_ref
from app.hl7.mapping.tables import (
    ALLERGY_CATEGORY,
    ALLERGY_SEVERITY,
    DATA_ABSENT_UNKNOWN,
    ENCOUNTER_CLASS,
    EVENT_ENCOUNTER_STATUS,
    PARTICIPANT_TYPES,
    V3_ACT_CODE,
)
from app.hl7.parse import Hl7Error, Rep, Segment

__all__ = ["ADT_EVENTS", "map_adt"]

ADT_EVENTS = frozenset(
    "A01 A02 A03 A04 A05 A06 A07 A08 A11 A12 A13 A28 A31 A40".split()  # noqa: SIM905
)
_PERSON_ONLY = {"A28", "A31"}


async def map_adt(ctx: MapContext) -> None:
    event = ctx.msg.trigger_event
    if event == "A40":
        await _merge(ctx)
        return
    pid = ctx.msg.first("PID")
    if pid is None:
        raise Hl7Error("the message has no PID segment", code="100", location=("PID", 0, 0, 0))
    patient_id = await map_patient(ctx, pid)
    encounter_id = None
    pv1 = ctx.msg.first("PV1")
    if pv1 is not None and event not in _PERSON_ONLY:
        encounter_id = await _encounter(ctx, event, pv1, patient_id)
    if event not in _PERSON_ONLY:
        ctx.adt_subjects.append((patient_id, encounter_id, None))
    for al1 in ctx.msg.all("AL1"):
        _allergy(ctx, al1, patient_id)
    for dg1 in ctx.msg.all("DG1"):
        _condition(ctx, dg1, patient_id, encounter_id)
    coverages(ctx, patient_id)
    patient_observations(ctx, patient_id, encounter_id)


async def visit(ctx: MapContext, patient_id: str) -> str | None:
    """The Encounter of a non-ADT message (ORU, RDE, VXU): PV1 with a visit number updates
    what it carries, like A08, and never changes the status of a known Encounter."""
    pv1 = ctx.msg.first("PV1")
    if pv1 is None or not pv1.c(19):
        return None
    return await _encounter(ctx, "", pv1, patient_id)


def coverages(ctx: MapContext, patient_id: str) -> None:
    for in1 in ctx.msg.all("IN1"):
        _coverage(ctx, in1, patient_id)


def patient_observations(ctx: MapContext, patient_id: str, encounter_id: str | None) -> None:
    """OBX outside an order (ADT vital signs, RDE/VXU answers) -> Observation on the Patient
    (IG ADT_A01 / VXU_V04 OBX[Observation]); value by OBX-2 as for results."""
    from app.hl7.mapping.oru import adt_observation

    seen: dict[str, int] = {}
    for obx in ctx.msg.all("OBX"):
        key = f"{codes_of(obx.rep(3))}|{obx.c(4)}"
        seen[key] = seen.get(key, 0) + 1
        body = adt_observation(ctx, obx, patient_id, encounter_id)
        if body is None:
            continue
        scope = encounter_id or patient_id
        ctx.put("Observation", resource_id("Observation", scope, key, str(seen[key])), body)


def _location_display(rep: Rep) -> str:
    """PL (point of care^room^bed^facility^...^building^floor^description) as text."""
    parts = [rep.c(4), rep.c(7), rep.c(8), rep.c(1), rep.c(2), rep.c(3)]
    text = " ".join(p for p in parts if p)
    return rep.c(9) or text


def encounter_key(ctx: MapContext, pv1: Segment, patient_id: str) -> tuple[str, dict | None]:
    """PV1-19 visit number (type VN); without one, the patient and the admit time, or the
    message itself (IG PV1[Encounter]; v2-to-fhir.md section 6.3)."""
    visit = identifier(pv1.rep(19), ctx.ident, type_code="VN")
    if visit is not None:
        return resource_id("Encounter", visit.get("system", ""), visit["value"]), visit
    admit = pv1.c(44)
    if admit:
        return resource_id("Encounter", patient_id, "admit", admit), None
    return resource_id("Encounter", patient_id, ctx.msg.sender, ctx.msg.control_id), None


async def _encounter(ctx: MapContext, event: str, pv1: Segment, patient_id: str) -> str:
    encounter_id, visit = encounter_key(ctx, pv1, patient_id)
    stored = await ctx.current("Encounter", encounter_id)
    if ctx.is_stale(stored):
        return encounter_id
    pv2 = ctx.msg.first("PV2")
    body: dict[str, Any] = {"subject": {"reference": f"Patient/{patient_id}"}}
    removed: set[str] = set()
    if visit is not None:
        ids = [visit]
        alt = identifier(pv1.rep(50), ctx.ident)
        if alt:
            ids.append(alt)
        body["identifier"] = ids
    patient_class = pv1.c(2).upper()
    if patient_class:
        code, display = ENCOUNTER_CLASS.get(patient_class, ("AMB", "ambulatory"))
        body["class"] = {"system": V3_ACT_CODE, "code": code, "display": display}
    elif not stored:
        body["class"] = {"system": V3_ACT_CODE, "code": "AMB", "display": "ambulatory"}
    admit_type = codeable(pv1.rep(4), table="0007")
    if admit_type:
        body["type"] = [admit_type]
    service = codeable(pv1.rep(10), table="0069")
    if service:
        body["serviceType"] = service
    reason = codeable(pv2.rep(3)) if pv2 else None
    if reason:
        body["reasonCode"] = [reason]

    period = dict((stored or {}).get("period", {}))
    start = ctx.field_dtm(pv1, 44)
    end = ctx.field_dtm(pv1, 45)
    if start is not None:
        period["start"] = start.fhir
    if end is not None:
        period["end"] = end.fhir
    status = EVENT_ENCOUNTER_STATUS.get(event)
    if event == "A03":
        if "end" not in period and ctx.event is not None:
            period["end"] = ctx.event.fhir
    elif event == "A13":
        period.pop("end", None)
    elif end is not None and status in ("in-progress", None):
        status = "finished"
    if period:
        body["period"] = period
    elif stored and "period" in stored:
        removed.add("period")
    if event == "A13" and "period" in body and not body["period"]:
        removed.add("period")
    if status is None:
        # IG PatientClass[EncounterStatus]: what PV1-2 says when the event says nothing
        default = {"P": "planned", "U": "unknown"}.get(patient_class, "in-progress")
        status = (stored or {}).get("status", default)
    body["status"] = status

    participants = []
    for n, code in PARTICIPANT_TYPES.items():
        for rep in pv1.reps(n):
            who = practitioner_ref(rep, ctx.ident)
            if who:
                participants.append(
                    {
                        "type": [
                            {
                                "coding": [
                                    {
                                        "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                                        "code": code,
                                    }
                                ]
                            }
                        ],
                        "individual": who,
                    }
                )
    if participants:
        body["participant"] = participants

    hospitalization = dict((stored or {}).get("hospitalization", {}))
    pre = identifier(pv1.rep(5), ctx.ident)
    if pre:
        hospitalization["preAdmissionIdentifier"] = pre
    admit_source = codeable(pv1.rep(14), table="0023")
    if admit_source:
        hospitalization["admitSource"] = admit_source
    disposition = codeable(pv1.rep(36), table="0112")
    if disposition:
        hospitalization["dischargeDisposition"] = disposition
    if event == "A13":
        hospitalization.pop("dischargeDisposition", None)
    if hospitalization:
        body["hospitalization"] = hospitalization
    elif stored and "hospitalization" in stored:
        removed.add("hospitalization")

    locations = _locations(ctx, event, pv1, stored)
    if locations:
        body["location"] = locations
    merged = merge(stored, body, removed)
    if not merged.get("type"):  # US Core Encounter.type 1..*: PV1-4 has never been sent
        merged["type"] = [DATA_ABSENT_UNKNOWN]
    ctx.stamp_event(merged)
    ctx.put("Encounter", encounter_id, {k: v for k, v in merged.items() if k != "id"})
    return encounter_id


def _locations(
    ctx: MapContext, event: str, pv1: Segment, stored: dict[str, Any] | None
) -> list[dict[str, Any]]:
    """Location history (IG PV1-3 active / PV1-6 prior completed): a transfer closes the
    current location and opens the new one; a cancelled transfer reverses that."""
    history = [dict(x) for x in (stored or {}).get("location", [])]
    current = pv1.rep(3)
    display = _location_display(current) if current else ""
    when = ctx.event.fhir if ctx.event is not None and ctx.event.has_time else None
    if event == "A12":
        if history and history[-1].get("status") == "active":
            history.pop()
        if history:
            history[-1]["status"] = "active"
            history[-1].get("period", {}).pop("end", None)
            if not history[-1].get("period"):
                history[-1].pop("period", None)
        return history
    if not display:
        return history
    status = "planned" if pv1.c(2).upper() == "P" or event == "A05" else "active"
    if event in ("A03",):
        status = "completed"
    if history and history[-1]["location"].get("display") == display:
        history[-1]["status"] = status
        return history
    for item in history:
        if item.get("status") in ("active", "planned"):
            item["status"] = "completed"
            if when:
                item.setdefault("period", {})["end"] = when
    entry: dict[str, Any] = {"location": {"display": display}, "status": status}
    if when and status == "active":
        entry["period"] = {"start": when}
    history.append(entry)
    return history


def _allergy(ctx: MapContext, al1: Segment, patient_id: str) -> None:
    """AL1 -> AllergyIntolerance (IG AL1[AllergyIntolerance])."""
    code = codeable(al1.rep(3))
    if code is None:
        return
    key = al1.c(3) or al1.c(3, 2)
    body: dict[str, Any] = {
        "clinicalStatus": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical",
                    "code": "active",
                }
            ]
        },
        "code": code,
        "patient": {"reference": f"Patient/{patient_id}"},
    }
    category = ALLERGY_CATEGORY.get(al1.c(2).upper())
    if category:
        body["category"] = [category]
    criticality = ALLERGY_SEVERITY.get(al1.c(4).upper())
    if criticality:
        body["criticality"] = criticality
    reactions = [{"text": r.c(1) or r.c(2)} for r in al1.reps(5) if r.c(1) or r.c(2)]
    if reactions:
        body["reaction"] = [{"manifestation": reactions}]
    onset = ctx.field_dtm(al1, 6)
    if onset is not None:
        body["onsetDateTime"] = onset.fhir
    ctx.put("AllergyIntolerance", resource_id("AllergyIntolerance", patient_id, key), body)


def _condition(ctx: MapContext, dg1: Segment, patient_id: str, encounter_id: str | None) -> None:
    """DG1 -> Condition, category encounter-diagnosis (IG DG1[Condition])."""
    code = codeable(dg1.rep(3))
    if code is None and dg1.c(4):
        code = {"text": dg1.c(4)}
    if code is None:
        return
    key = dg1.c(3) or dg1.c(4)
    body: dict[str, Any] = {
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/condition-category",
                        "code": "encounter-diagnosis",
                    }
                ]
            }
        ],
        "code": code,
        "subject": {"reference": f"Patient/{patient_id}"},
    }
    if encounter_id:
        body["encounter"] = {"reference": f"Encounter/{encounter_id}"}
    onset = ctx.field_dtm(dg1, 5)
    if onset is not None:
        body["onsetDateTime"] = onset.fhir
    scope = encounter_id or patient_id
    ctx.put("Condition", resource_id("Condition", scope, key), body)


def _coverage(ctx: MapContext, in1: Segment, patient_id: str) -> None:
    """IN1 -> Coverage (IG IN1[Coverage]): payor from IN1-4 (or IN1-3), subscriber id IN1-36."""
    payor_name = in1.c(4)
    payor_id = identifier(in1.rep(3), ctx.ident)
    if not (payor_name or payor_id or in1.c(2)):
        return
    payor: dict[str, Any] = {}
    if payor_id:
        payor["identifier"] = payor_id
    payor["display"] = payor_name or in1.c(2) or payor_id["value"]  # type: ignore[index]
    body: dict[str, Any] = {
        "status": "active",
        "beneficiary": {"reference": f"Patient/{patient_id}"},
        "payor": [payor],
    }
    policy = in1.c(36)
    if policy:
        body["subscriberId"] = policy
        body["identifier"] = [{"value": policy}]
    plan_type = codeable(in1.rep(15), table="0086")
    if plan_type:
        body["type"] = plan_type
    start = ctx.field_dtm(in1, 12)
    end = ctx.field_dtm(in1, 13)
    if start or end:
        body["period"] = {
            **({"start": start.fhir} if start else {}),
            **({"end": end.fhir} if end else {}),
        }
    key = "|".join([in1.c(2), in1.c(3), policy, in1.c(1)])
    ctx.put("Coverage", resource_id("Coverage", patient_id, key), body)


async def _merge(ctx: MapContext) -> None:
    """A40: for each PID/MRG pair, retire MRG-1's Patient into PID's (see the module table)."""
    pairs: list[tuple[Segment, Segment]] = []
    pid: Segment | None = None
    for seg in ctx.msg.segments:
        if seg.name == "PID":
            pid = seg
        elif seg.name == "MRG" and pid is not None:
            pairs.append((pid, seg))
            pid = None
    if not pairs:
        raise Hl7Error(
            "ADT^A40 needs a PID followed by an MRG segment", code="100", location=("MRG", 0, 0, 0)
        )
    for pid, mrg in pairs:
        survivor_id = await map_patient(ctx, pid, full=False)
        old = identifier(mrg.rep(1), ctx.ident)
        if old is None:
            raise Hl7Error(
                "MRG-1 (prior patient identifier list) is required",
                code="101",
                location=("MRG", mrg.index, 1, 1),
            )
        retired_id = resource_id("Patient", old.get("system", ""), old["value"])
        if retired_id == survivor_id:
            raise Hl7Error(
                "MRG-1 names the surviving patient itself: a patient cannot be merged into itself",
                code="102",
                location=("MRG", mrg.index, 1, 1),
            )
        await _retire(ctx, retired_id, survivor_id, old)
        await _repoint(ctx, retired_id, survivor_id)
        ctx.adt_subjects.append((survivor_id, None, retired_id))


def _links(body: dict[str, Any], other: str, link_type: str) -> None:
    ref = f"Patient/{other}"
    links = [x for x in body.get("link", []) if x.get("other", {}).get("reference") != ref]
    links.append({"other": {"reference": ref}, "type": link_type})
    body["link"] = links


async def _retire(ctx: MapContext, retired_id: str, survivor_id: str, old: dict) -> None:
    survivor = dict(await ctx.current("Patient", survivor_id) or {})
    _links(survivor, retired_id, "replaces")
    retired_ids = [dict(old, use="old")]
    survivor_idents = survivor.get("identifier", [])
    if not any(i.get("value") == old["value"] for i in survivor_idents):
        survivor["identifier"] = [*survivor_idents, dict(old, use="old")]
    ctx.put("Patient", survivor_id, {k: v for k, v in survivor.items() if k != "id"})
    retired = dict(await ctx.current("Patient", retired_id) or {"identifier": retired_ids})
    retired["active"] = False
    _links(retired, survivor_id, "replaced-by")
    ctx.stamp_event(retired)
    ctx.put("Patient", retired_id, {k: v for k, v in retired.items() if k not in ("id", "meta")})


async def _repoint(ctx: MapContext, retired_id: str, survivor_id: str) -> None:
    """Point every stored resource that references the retired Patient at the survivor (the
    Provenance of earlier messages keeps its history untouched)."""
    old_ref = f"Patient/{retired_id}"
    new_ref = f"Patient/{survivor_id}"
    for rtype, rid in await ctx.referrers("Patient", retired_id):
        if rtype in ("Provenance",) or (rtype == "Patient" and rid in (retired_id, survivor_id)):
            continue
        body = await ctx.current(rtype, rid)
        if body is None:
            continue
        ctx.put(
            rtype,
            rid,
            {k: v for k, v in _swap(body, old_ref, new_ref).items() if k not in ("id", "meta")},
        )


def _swap(value: Any, old: str, new: str) -> Any:
    if isinstance(value, dict):
        return {
            k: (new if k == "reference" and v == old else _swap(v, old, new))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_swap(v, old, new) for v in value]
    return value
