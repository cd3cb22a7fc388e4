"""What every message map shares: the mapping context, deterministic ids, the Patient from
PID/PD1/NK1 (IG `PID[Patient]`, `PD1[Patient]`, `NK1[Patient]`/`NK1[RelatedPerson]`; see
../shared/reference/v2-to-fhir.md sections 2.2-2.4) and the Provenance of each message (IG
`MSH[Provenance-Source]`, section 2.9).

Identity (v2-to-fhir.md section 6.3): a resource's id is a UUID derived from its type and its
business identifiers, so a replayed or updating message lands on the same resource. Event order:
Patient and Encounter carry the time of the ADT event that last wrote them (an extension); an
older event arriving late does not overwrite them. ADT is the authority on Patient and Encounter:
other messages (ORU, RDE, VXU) create them when they do not exist yet, but never change or
re-stamp existing ones, so a lab feed's copy of the demographics cannot undo a registration.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from app.hl7.mapping.datatypes import (
    Dtm,
    IdentitySettings,
    address,
    codeable,
    contact_point,
    human_name,
    identifier,
    parse_dtm,
    practitioner_ref,
)
from app.hl7.mapping.tables import ADMINISTRATIVE_SEX, v2_table
from app.hl7.parse import Hl7Error, Message, Rep, Segment

__all__ = [
    "EVENT_TIME_URL",
    "MapContext",
    "map_patient",
    "provenance",
    "resource_id",
]

_NAMESPACE = uuid.UUID("6f1f2c2e-4b8e-4d0e-9a57-0c0f6e2b7d11")
EVENT_TIME_URL = "urn:dxf-bridge:fhir:StructureDefinition:hl7v2-event-time"
MESSAGE_SYSTEM = "urn:dxf-bridge:hl7v2-message"

Lookup = Callable[[str, str], Awaitable[dict[str, Any] | None]]
Referrers = Callable[[str, str], Awaitable[list[tuple[str, str]]]]


def resource_id(resource_type: str, *keys: str) -> str:
    """A stable id for a resource from its business key (RFC 4122 name-based UUID)."""
    return str(uuid.uuid5(_NAMESPACE, "\x1f".join([resource_type, *keys])))


@dataclass
class MapContext:
    """One message being mapped: the message, identity settings, what already exists (read in
    the same transaction), and the resources produced so far (in write order)."""

    msg: Message
    ident: IdentitySettings
    lookup: Lookup
    referrers: Referrers
    out: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    event: Dtm | None = None
    authoritative: bool = False  # ADT: may change an existing Patient / Encounter
    # ADT: (patient id, encounter id, retired patient id) per event subject, for the outbox
    adt_subjects: list[tuple[str, str | None, str | None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.authoritative = self.msg.message_code == "ADT"
        evn = self.msg.first("EVN")
        raw = (evn.c(2) if evn else "") or self.msg.msh.c(7)
        where = ("EVN", evn.index, 2, 1) if evn and evn.c(2) else ("MSH", 1, 7, 1)
        self.event = self.dtm(raw, where) if raw else None

    def dtm(self, value: str, where: tuple[str, int, int, int]) -> Dtm:
        return parse_dtm(value, self.ident.zone, where=where)

    def field_dtm(self, seg: Segment, n: int, component: int = 1) -> Dtm | None:
        value = seg.c(n, component)
        return self.dtm(value, (seg.name, seg.index, n, component)) if value else None

    def put(self, resource_type: str, resource_id: str, body: dict[str, Any]) -> None:
        body = {"resourceType": resource_type, "id": resource_id, **body}
        self.out[(resource_type, resource_id)] = body

    async def current(self, resource_type: str, resource_id: str) -> dict[str, Any] | None:
        """The resource as this message has it so far, else as stored, else None."""
        if (resource_type, resource_id) in self.out:
            return self.out[(resource_type, resource_id)]
        return await self.lookup(resource_type, resource_id)

    def stamp_event(self, body: dict[str, Any]) -> None:
        if self.event is None or not self.authoritative:
            return
        others = [e for e in body.get("extension", []) if e.get("url") != EVENT_TIME_URL]
        body["extension"] = [*others, {"url": EVENT_TIME_URL, "valueDateTime": self.event.fhir}]

    def is_stale(self, stored: dict[str, Any] | None) -> bool:
        """True when `stored` must not change: it was written by a later event than this
        message's, or this message is not an ADT message and it exists already."""
        if stored is None:
            return False
        if not self.authoritative:
            return True
        if self.event is None:
            return False
        for ext in stored.get("extension", []):
            if ext.get("url") == EVENT_TIME_URL:
                try:
                    seen = datetime.fromisoformat(ext["valueDateTime"].replace("Z", "+00:00"))
                except (KeyError, ValueError):
                    return False
                if seen.tzinfo is None:
                    return False
                return seen > self.event.instant
        return False


def merge(stored: dict[str, Any] | None, new: dict[str, Any], removed: set[str]) -> dict[str, Any]:
    """Partial update (A08/A31 and every event): the elements the message carries replace the
    stored ones; elements it does not carry are kept; explicit HL7 nulls (`""`) remove."""
    if stored is None:
        return dict(new)
    out = {k: v for k, v in stored.items() if k not in ("meta", "text") and k not in removed}
    out.update(new)
    return out


# ---- Patient ------------------------------------------------------------------------------------


def patient_identifiers(pid: Segment, ident: IdentitySettings) -> list[dict[str, Any]]:
    """PID-2, PID-3 (every repetition), PID-4 in order, then PID-19 as SSN (IG PID[Patient])."""
    out: list[dict[str, Any]] = []
    for n in (2, 3, 4):
        for rep in pid.reps(n):
            found = identifier(rep, ident)
            if found and found not in out:
                out.append(found)
    dln = pid.rep(20)
    if dln.c(1):
        license_id: dict[str, Any] = {
            "type": {"coding": [{"system": v2_table("0203"), "code": "DL"}]},
            "value": dln.c(1),
        }
        if dln.c(2):
            license_id["assigner"] = {"display": dln.c(2)}
        out.append(license_id)
    ssn = pid.c(19)
    if ssn:
        out.append(
            {
                "type": {"coding": [{"system": v2_table("0203"), "code": "SS"}]},
                "system": "http://hl7.org/fhir/sid/us-ssn",
                "value": ssn,
            }
        )
    return out


def patient_key(pid: Segment, ident: IdentitySettings) -> tuple[str, dict[str, Any]]:
    """The Patient's id and its key identifier: the first PID-3 (else PID-2, PID-4) repetition."""
    for n in (3, 2, 4):
        for rep in pid.reps(n):
            found = identifier(rep, ident)
            if found:
                return resource_id("Patient", found.get("system", ""), found["value"]), found
    raise Hl7Error(
        "PID-3 (patient identifier list) is required",
        code="101",
        location=("PID", pid.index, 3, 1),
    )


_NK1_CONTACT_ONLY = {"EMR", "E", "F", "I", "S", "C", "O"}


async def map_patient(ctx: MapContext, pid: Segment, *, full: bool = True) -> str:
    """PID (+ PD1, NK1 that follow it) -> Patient, merged over what is stored. Returns the id."""
    patient_id, _ = patient_key(pid, ctx.ident)
    stored = await ctx.current("Patient", patient_id)
    if ctx.is_stale(stored):
        return patient_id
    body: dict[str, Any] = {}
    removed: set[str] = set()

    def carry(key: str, n: int, value: Any) -> None:
        if value not in (None, [], {}):
            body[key] = value
        elif pid.raw(n) == '""':
            removed.add(key)

    idents = patient_identifiers(pid, ctx.ident)
    if stored:
        for old in stored.get("identifier", []):
            if old not in idents:
                idents.append(old)
    body["identifier"] = idents
    names = [n for n in (human_name(r) for r in pid.reps(5)) if n]
    names += [{**n, "use": "nickname"} for n in (human_name(r) for r in pid.reps(9)) if n]
    carry("name", 5, names)
    birth = ctx.field_dtm(pid, 7)
    if birth is not None:
        body["birthDate"] = birth.date
        if birth.has_time:
            body.setdefault("_birthDate", {})["extension"] = [
                {
                    "url": "http://hl7.org/fhir/StructureDefinition/patient-birthTime",
                    "valueDateTime": birth.fhir,
                }
            ]
    elif pid.raw(7) == '""':
        removed.update({"birthDate", "_birthDate"})
    sex = pid.c(8).upper()
    if sex:
        if sex not in ADMINISTRATIVE_SEX:
            raise Hl7Error(
                "PID-8 is not a value of HL7 table 0001",
                code="103",
                location=("PID", pid.index, 8, 1),
            )
        body["gender"] = ADMINISTRATIVE_SEX[sex]
    carry("address", 11, [a for a in (address(r) for r in pid.reps(11)) if a])
    telecom = [t for t in (contact_point(r, "home") for r in pid.reps(13)) if t]
    telecom += [t for t in (contact_point(r, "work") for r in pid.reps(14)) if t]
    carry("telecom", 13, telecom)
    language = codeable(pid.rep(15))
    if language:
        body["communication"] = [{"language": language}]
    carry("maritalStatus", 16, codeable(pid.rep(16), table="0002"))
    deceased = ctx.field_dtm(pid, 29)
    if deceased is not None:
        body["deceasedDateTime"] = deceased.fhir
        removed.add("deceasedBoolean")
    elif pid.c(30).upper() in ("Y", "N"):
        body["deceasedBoolean"] = pid.c(30).upper() == "Y"
        removed.add("deceasedDateTime")
    if pid.c(25).isdigit():
        body["multipleBirthInteger"] = int(pid.c(25))
    elif pid.c(24).upper() in ("Y", "N"):
        body["multipleBirthBoolean"] = pid.c(24).upper() == "Y"
    if full:
        await _pd1_nk1(ctx, pid, patient_id, body)
    body["active"] = stored.get("active", True) if stored else True
    merged = merge(stored, body, removed)
    # US Core Patient.gender 1..1 (required binding): `unknown` until a PID-8 says otherwise,
    # the code table 0001 "U" maps to as well (US Core "Missing Data")
    merged.setdefault("gender", "unknown")
    ctx.stamp_event(merged)
    ctx.put("Patient", patient_id, {k: v for k, v in merged.items() if k not in ("id",)})
    return patient_id


def _following(ctx: MapContext, seg: Segment, names: tuple[str, ...]) -> list[Segment]:
    """The segments right after `seg` with one of `names` (its group), until another PID/MSH."""
    out = []
    for later in ctx.msg.segments[seg.index :]:
        if later.name in ("PID", "MSH", "MRG"):
            break
        if later.name in names:
            out.append(later)
    return out


async def _pd1_nk1(ctx: MapContext, pid: Segment, patient_id: str, body: dict[str, Any]) -> None:
    for pd1 in _following(ctx, pid, ("PD1",))[:1]:
        practitioners = [p for p in (practitioner_ref(r, ctx.ident) for r in pd1.reps(4)) if p]
        orgs = [{"display": r.c(1)} for r in pd1.reps(3) if r.c(1)]
        if practitioners or orgs:
            body["generalPractitioner"] = orgs + practitioners
    contacts = []
    for nk1 in _following(ctx, pid, ("NK1",)):
        contact: dict[str, Any] = {}
        relationship = codeable(nk1.rep(3), table="0063")
        role = codeable(nk1.rep(7), table="0131")
        rels = [r for r in (relationship, role) if r]
        if rels:
            contact["relationship"] = rels
        name = human_name(nk1.rep(2))
        if name:
            contact["name"] = name
        telecom = [t for t in (contact_point(r, "home") for r in nk1.reps(5)) if t]
        telecom += [t for t in (contact_point(r, "work") for r in nk1.reps(6)) if t]
        if telecom:
            contact["telecom"] = telecom
        addr = address(nk1.rep(4))
        if addr:
            contact["address"] = addr
        sex = ADMINISTRATIVE_SEX.get(nk1.c(15).upper())
        if sex:
            contact["gender"] = sex
        if nk1.c(13):
            contact["organization"] = {"display": nk1.c(13)}
        if not contact:
            continue
        contacts.append(contact)
        rel_code = nk1.c(3).upper()
        if name and rel_code not in _NK1_CONTACT_ONLY:
            key = nk1.c(1) or str(len(contacts))
            related: dict[str, Any] = {
                "active": True,
                "patient": {"reference": f"Patient/{patient_id}"},
                "name": [name],
            }
            if relationship:
                related["relationship"] = [relationship]
            for src, dst in (("telecom", "telecom"), ("gender", "gender")):
                if src in contact:
                    related[dst] = contact[src]
            if addr:
                related["address"] = [addr]
            birth = ctx.field_dtm(nk1, 16)
            if birth is not None:
                related["birthDate"] = birth.date
            ctx.put("RelatedPerson", resource_id("RelatedPerson", patient_id, key), related)
    if contacts:
        body["contact"] = contacts


# ---- Provenance -------------------------------------------------------------------------------


def provenance(ctx: MapContext, message_key: str, journal_id: int, recorded: str) -> None:
    """One Provenance per message (IG MSH[Provenance-Source]): the resources it wrote, when,
    from which sender, and the journal entry holding the original bytes."""
    targets = [{"reference": f"{rtype}/{rid}"} for (rtype, rid) in ctx.out if rtype != "Provenance"]
    if not targets:
        return
    msh = ctx.msg.msh
    sender = msh.c(4) or msh.c(4, 2) or msh.c(3) or msh.c(3, 2) or "unknown sender"
    body: dict[str, Any] = {
        "target": targets,
        "recorded": recorded,
        "activity": {
            "coding": [{"system": v2_table("0003"), "code": ctx.msg.trigger_event}],
            "text": f"HL7v2 {ctx.msg.message_type}",
        },
        "agent": [
            {
                "type": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type",
                            "code": "author",
                        }
                    ]
                },
                "who": {"display": sender},
            }
        ],
        "entity": [
            {
                "role": "source",
                "what": {
                    "identifier": {"system": MESSAGE_SYSTEM, "value": str(journal_id)},
                    "display": f"HL7v2 {ctx.msg.message_type} control id {ctx.msg.control_id}",
                },
            }
        ],
    }
    if ctx.event is not None and ctx.event.has_time:
        body["occurredDateTime"] = ctx.event.fhir
    ctx.put("Provenance", resource_id("Provenance", message_key), body)


def codes_of(rep: Rep) -> str:
    """A stable text key for a coded value (for ids), never for display."""
    return "|".join(p for p in (rep.c(3), rep.c(1), rep.c(2) if not rep.c(1) else "") if p)
