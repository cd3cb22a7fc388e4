"""CDL records to FHIR R4 resources, shaped after CARIN Blue Button 2.2.0 where a profile applies.

Spec: reference notes §6 (ME → Patient + Coverage; MC → ExplanationOfBenefit, Encounter,
Condition, Procedure, Observation; PC → pharmacy ExplanationOfBenefit + MedicationDispense;
DC → oral ExplanationOfBenefit; PV → Practitioner/Organization, PractitionerRole, Location).

Every resource has a deterministic key: a UUIDv5 of the business key (submitter, payer, member /
claim / provider id, and for a claim's parts the code or line), so importing the same record
again addresses the same resource. Members, coverage and providers use the key as their id. A
claim's resources get their ids from the importer's assigner (`Mapper.claim(assign=...)`),
which mints time-ordered ids the first time a claim is seen and keeps the key-to-id map with
the claim (app/apcd/importer.py); without an assigner the key is the id. Identifier systems
are per submitter and payer, because carrier member, claim and provider ids are unique only
within a payer. Payer-local references to practitioners and coverage are logical (by
identifier) so a claim never points at a resource that does not exist. Every resource carries
the `apcd-cdl` source tag, and clinical dates are service dates, never load dates.

US Core 6.1.0: each resource also gets `meta.profile` for the US Core profiles whose mandatory
elements it has (app.fhir.uscore.stamp_profiles). The claim Encounter's `type` (US Core: 1..*)
is the claim's E/M CPT codes, else its place of service (professional) or type of bill
(institutional) as the notes' §6.2 maps it, else the data-absent-reason `unknown`.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import quote

from app.apcd import codes as c
from app.apcd.layout import RecordLayout
from app.fhir.uscore import stamp_profiles

__all__ = ["ClaimPicture", "IdAssigner", "Mapper", "Namespace", "Res", "det_id"]

_NS = uuid.UUID("5f0c7a52-5b8e-4f0a-9a57-2d6f3c1e9b10")
Res = tuple[str, str, dict[str, Any]]  # (type, id, body)


def det_id(*parts: str) -> str:
    return str(uuid.uuid5(_NS, "|".join(parts)))


IdAssigner = Callable[[str], str]  # a claim resource's key -> its id


def _as_is(key: str) -> str:
    return key


def _iso(cdl_date: str) -> str | None:
    return f"{cdl_date[:4]}-{cdl_date[4:6]}-{cdl_date[6:8]}" if cdl_date else None


def _cc(system: str, code: str, display: str | None = None) -> dict[str, Any]:
    coding: dict[str, Any] = {"system": system, "code": code}
    if display:
        coding["display"] = display
    return {"coding": [coding]}


def _money(value: Decimal) -> dict[str, Any]:
    return {"value": float(value), "currency": "USD"}


def _period(start: str | None, end: str | None) -> dict[str, str]:
    out = {}
    if start:
        out["start"] = start
    if end:
        out["end"] = end
    return out


def _npi_ref(npi: str, display: str | None = None) -> dict[str, Any]:
    ref: dict[str, Any] = {"identifier": {"system": c.NPI, "value": npi}}
    if display:
        ref["display"] = display
    return ref


@dataclass(frozen=True, slots=True)
class Namespace:
    """Identifier systems and id prefixes for one submitter + payer."""

    submitter: str
    payer: str

    @property
    def key(self) -> str:
        return f"{self.submitter}|{self.payer}"

    def system(self, kind: str) -> str:
        submitter, payer = quote(self.submitter, safe=""), quote(self.payer, safe="")
        return f"urn:dxf-bridge:apcd:{submitter}:{payer}:{kind}"

    def id(self, *parts: str) -> str:
        return det_id(self.submitter, self.payer, *parts)

    def payer_org_id(self) -> str:
        return det_id("payer", self.payer)


@dataclass(slots=True)
class ClaimPicture:
    claim_id: str
    version: int
    void: bool
    member_id: str
    resources: list[Res]


class Row:
    """One record's values by element suffix (`"024"` for CDLMC024)."""

    __slots__ = ("v",)

    def __init__(self, suffixes: tuple[str, ...], values: list[str]) -> None:
        self.v = dict(zip(suffixes, values, strict=True))

    def __getitem__(self, suffix: str) -> str:
        return self.v.get(suffix, "")


def _meta(profile: str | None) -> dict[str, Any]:
    meta: dict[str, Any] = {"tag": [dict(c.SOURCE_TAG)]}
    if profile:
        meta["profile"] = [profile]
    return meta


def _profiled(resources: Iterable[Res]) -> list[Res]:
    """The resources, each with the US Core profiles it meets added to meta.profile."""
    out = list(resources)
    for _type, _id, body in out:
        stamp_profiles(body)
    return out


_UNKNOWN = _cc("http://terminology.hl7.org/CodeSystem/data-absent-reason", "unknown", "Unknown")


def _dates(rows: Iterable[Row], *suffixes: str) -> list[str]:
    return sorted(d for r in rows for s in suffixes if (d := r[s]))


class Mapper:
    """Maps the records of one file (one namespace) to resources."""

    def __init__(self, ns: Namespace, rl: RecordLayout) -> None:
        self.ns = ns
        self.rl = rl
        self.kind = rl.record_type  # in claim resource ids: MC and PC claim numbers may clash
        self._suffixes = tuple(f.field_id[-3:] for f in rl.fields)
        self._assign: IdAssigner = _as_is

    def _claim_id(self, *parts: str) -> str:
        """The id of one of a claim's resources: its key (deterministic from the namespace,
        the claim type, the claim id and what the resource is) through the claim's assigner."""
        return self._assign(self.ns.id(self.kind, *parts))

    def row(self, values: list[str]) -> Row:
        return Row(self._suffixes, values)

    # ---- shared ------------------------------------------------------------------------------

    def payer_organization(self) -> Res:
        body = {
            "resourceType": "Organization",
            "meta": _meta(c.PROFILE["Organization"]),
            "identifier": [{"system": "urn:dxf-bridge:apcd:payer-code", "value": self.ns.payer}],
            "active": True,
            "type": [_cc(c.ORG_TYPE, "pay", "Payer")],
            "name": f"APCD payer {self.ns.payer}",
        }
        stamp_profiles(body)
        return ("Organization", self.ns.payer_org_id(), body)

    def member_patient(
        self,
        patient_id: str,
        member_id: str,
        *,
        family: str = "",
        given: Iterable[str] = (),
        gender: str = "",
        birth: str = "",
        address: dict[str, Any] | None = None,
        extra_identifiers: Iterable[dict[str, str]] = (),
    ) -> Res:
        ident = [
            {
                "type": _cc(c.C4BB_IDENTIFIER, "um", "Unique Member ID"),
                "system": self.ns.system("member"),
                "value": member_id,
            },
            *extra_identifiers,
        ]
        body: dict[str, Any] = {
            "resourceType": "Patient",
            "meta": _meta(c.PROFILE["Patient"]),
            "identifier": ident,
        }
        names = [g for g in given if g]
        if family or names:
            name: dict[str, Any] = {"use": "official"}
            if family:
                name["family"] = family
            if names:
                name["given"] = names
            body["name"] = [name]
        if gender in c.GENDER:
            body["gender"] = c.GENDER[gender]
        if birth:
            body["birthDate"] = _iso(birth)
        if address:
            body["address"] = [address]
        stamp_profiles(body)
        return ("Patient", patient_id, body)

    def claim_patient(self, patient_id: str, r: Row) -> Res:
        """The Patient a claim's own member fields describe (used only when none exists)."""
        member, family, given, gender, birth, zip_code = (
            r[s] for s in c.CLAIM_MEMBER_FIELDS[self.kind]
        )
        return self.member_patient(
            patient_id,
            member,
            family=family,
            given=[given],
            gender=gender,
            birth=birth,
            address={"postalCode": zip_code} if zip_code else None,
        )

    def _coverage_ref(self, member_id: str) -> dict[str, Any]:
        return {
            "type": "Coverage",
            "identifier": {"system": self.ns.system("member"), "value": member_id},
        }

    # ---- ME ----------------------------------------------------------------------------------

    def member(
        self, r: Row, patient_id: str, extra_identifiers: list[dict[str, str]]
    ) -> tuple[Res, Res]:
        """(Patient, Coverage) for one eligibility span."""
        member_id = r["061"]
        address = {
            k: v
            for k, v in (
                ("line", [r["023"]] if r["023"] else None),
                ("city", r["024"]),
                ("state", r["025"]),
                ("postalCode", r["026"]),
                ("district", r["027"]),
                ("country", r["028"]),
            )
            if v
        }
        ids = list(extra_identifiers)
        if r["075"]:
            ids.append({"system": c.MBI, "value": r["075"]})
        patient = self.member_patient(
            patient_id,
            member_id,
            family=r["020"],
            given=[r["021"], r["022"]],
            gender=r["018"],
            birth=r["019"],
            address=address or None,
            extra_identifiers=ids,
        )
        relationship = c.RELATIONSHIP_CODES.get(r["017"], "other" if r["017"] else "self")
        classes = []
        if r["007"]:
            cls: dict[str, Any] = {"type": _cc(c.COVERAGE_CLASS, "group"), "value": r["007"]}
            if r["045"]:
                cls["name"] = r["045"]
            classes.append(cls)
        if r["003"]:
            classes.append({"type": _cc(c.COVERAGE_CLASS, "plan"), "value": r["003"]})
        if r["009"]:
            classes.append({"type": _cc(c.COVERAGE_CLASS, "class"), "value": r["009"]})
        coverage: dict[str, Any] = {
            "resourceType": "Coverage",
            "meta": _meta(c.PROFILE["Coverage"]),
            "identifier": [
                {
                    "type": _cc(c.V2_0203, "MB", "Member Number"),
                    "system": self.ns.system("member"),
                    "value": member_id,
                }
            ],
            "status": "active",
            "beneficiary": {"reference": f"Patient/{patient_id}"},
            "relationship": _cc(c.RELATIONSHIP, relationship),
            "period": _period(_iso(r["050"]), _iso(r["051"])),
            "payor": [{"reference": f"Organization/{self.ns.payer_org_id()}"}],
        }
        if r["062"] or r["011"]:
            coverage["subscriberId"] = r["062"] or r["011"]
        if relationship == "self":
            coverage["subscriber"] = {"reference": f"Patient/{patient_id}"}
        if r["015"]:
            coverage["dependent"] = r["015"]
        if classes:
            coverage["class"] = classes
        if r["040"] == "Y":
            coverage["order"] = 1
        cov_id = self.ns.id("coverage", member_id, r["003"], r["007"], r["050"])
        stamp_profiles(coverage)
        return patient, ("Coverage", cov_id, coverage)

    # ---- claims ------------------------------------------------------------------------------

    def claim(
        self, rows: list[Row], patient_id: str, assign: IdAssigner | None = None
    ) -> ClaimPicture:
        """The resources of one claim version (its lines at the highest version number).

        Each resource of the claim has a key, deterministic from the claim's identity and what
        the resource is; `assign` turns a key into the resource's id (references between the
        claim's resources use the same ids). Without it the key is the id."""
        kind = self.rl.record_type
        self._assign = assign or _as_is
        try:
            if kind == "MC":
                picture = self._medical(rows, patient_id)
            elif kind == "PC":
                picture = self._pharmacy(rows, patient_id)
            else:
                picture = self._dental(rows, patient_id)
        finally:
            self._assign = _as_is
        picture.resources = _profiled(picture.resources)
        return picture

    @staticmethod
    def latest(rows: list[Row]) -> tuple[int, list[Row]]:
        version = max(int(r["007"]) for r in rows)
        by_line: dict[int, Row] = {}
        for r in rows:
            if int(r["007"]) == version:
                by_line[int(r["006"])] = r
        return version, [by_line[k] for k in sorted(by_line)]

    def _eob_base(
        self,
        rows: list[Row],
        patient_id: str,
        *,
        claim_type: str,
        profile: str,
        void: bool,
        paid: str,
        dos: list[str],
        member_id: str,
    ) -> dict[str, Any]:
        first = rows[0]
        claim_id = first["005"]
        eob: dict[str, Any] = {
            "resourceType": "ExplanationOfBenefit",
            "meta": _meta(c.PROFILE[profile]),
            "identifier": [
                {
                    "type": _cc(c.C4BB_IDENTIFIER, "uc", "Unique Claim ID"),
                    "system": self.ns.system("claim"),
                    "value": claim_id,
                }
            ],
            "status": "entered-in-error" if void else "active",
            "type": _cc(c.CLAIM_TYPE, claim_type),
            "use": "claim",
            "patient": {"reference": f"Patient/{patient_id}"},
            "billablePeriod": _period(_iso(dos[0]), _iso(dos[-1])) if dos else None,
            "created": _iso(paid),
            "insurer": {"reference": f"Organization/{self.ns.payer_org_id()}"},
            "outcome": "complete",
            "insurance": [{"focal": True, "coverage": self._coverage_ref(member_id)}],
        }
        if not eob["billablePeriod"]:
            del eob["billablePeriod"]
        if first["008"]:
            eob["related"] = [
                {
                    "claim": {
                        "identifier": {"system": self.ns.system("claim"), "value": first["008"]}
                    },
                    "relationship": _cc(c.RELATED_CLAIM, "prior"),
                }
            ]
        return eob

    def _provider_ref(self, npi: str, local_id: str) -> dict[str, Any]:
        if npi:
            return _npi_ref(npi)
        if local_id:
            return {"identifier": {"system": self.ns.system("provider"), "value": local_id}}
        return {"display": "billing provider not given"}

    @staticmethod
    def _adjudication(r: Row, table: tuple[tuple[str, str, str], ...]) -> list[dict[str, Any]]:
        out = []
        for suffix, system, code in table:
            if r[suffix]:
                out.append({"category": _cc(system, code), "amount": _money(Decimal(r[suffix]))})
        return out

    @staticmethod
    def _totals(items: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], Decimal]:
        sums: dict[tuple[str, str], Decimal] = {}
        for item in items:
            for adj in item.get("adjudication", ()):
                coding = adj["category"]["coding"][0]
                if coding["code"] in c.TOTAL_CODES and "amount" in adj:
                    key = (coding["system"], coding["code"])
                    sums[key] = sums.get(key, Decimal(0)) + Decimal(str(adj["amount"]["value"]))
        total = [{"category": _cc(s, code), "amount": _money(v)} for (s, code), v in sums.items()]
        return total, sums.get((c.C4BB_ADJUDICATION, "paidtoprovider"), Decimal(0))

    def _finish_eob(self, eob: dict[str, Any], items: list[dict[str, Any]], paid: str) -> None:
        eob["item"] = items
        total, paid_amount = self._totals(items)
        if total:
            eob["total"] = total
        eob["payment"] = {
            "type": _cc(c.PAYMENT_TYPE, "complete"),
            "date": _iso(paid),
            "amount": _money(paid_amount),
        }

    @staticmethod
    def _is_void(rows: list[Row], line_type: str, status: str) -> bool:
        return any(
            r[line_type] in c.VOID_LINE_TYPES or (status and r[status] in c.VOID_CLAIM_STATUS)
            for r in rows
        )

    def _medical(self, all_rows: list[Row], patient_id: str) -> ClaimPicture:
        version, rows = self.latest(all_rows)
        first = rows[0]
        claim_id, member_id = first["005"], first["161"]
        tob = first["032"].lstrip("0") if first["032"] else ""
        icd9 = first["036"] == "9"  # ICD Version Indicator: ICD-9-CM coded (v2.1 back-files)
        dx_system = c.ICD9CM if icd9 else c.ICD10CM
        px_system = c.ICD9CM if icd9 else c.ICD10PCS
        void = self._is_void(rows, "160", "157") or (len(tob) == 3 and tob[2] == "8")
        if tob:
            subtype = "inpatient" if tob[1] in "12" else "outpatient"
            claim_type, profile = "institutional", subtype
        else:
            subtype, claim_type, profile = "", "professional", "professional"
        dos = _dates(rows, "119", "120")
        paid = max(r["024"] for r in rows)
        eob = self._eob_base(
            rows,
            patient_id,
            claim_type=claim_type,
            profile=profile,
            void=void,
            paid=paid,
            dos=dos,
            member_id=member_id,
        )
        eob_id = self._claim_id("eob", claim_id)
        enc_id = self._claim_id("encounter", claim_id)
        enc_ref = {"reference": f"Encounter/{enc_id}"}
        subject = {"reference": f"Patient/{patient_id}"}
        out: list[Res] = []
        if subtype:
            eob["subType"] = _cc(c.C4BB_SUBTYPE, subtype)
        eob["provider"] = self._provider_ref(first["148"], first["147"])

        # care team: rendering, attending, referring (deduplicated by provider and role)
        team: list[dict[str, Any]] = []
        seen: set[tuple[str, str]] = set()
        for r in rows:
            roles = ((r["135"], "rendering"), (r["154"], "attending"), (r["152"], "referring"))
            for npi, role in roles:
                if npi and (npi, role) not in seen:
                    seen.add((npi, role))
                    member: dict[str, Any] = {
                        "sequence": len(team) + 1,
                        "provider": _npi_ref(npi),
                        "role": _cc(c.C4BB_CARE_TEAM, role),
                    }
                    if role == "rendering" and r["142"]:
                        member["qualification"] = _cc(c.NUCC, r["142"])
                    team.append(member)
        if team:
            eob["careTeam"] = team

        # supporting information (institutional)
        info: list[dict[str, Any]] = []

        def add_info(category: str, **value: Any) -> None:
            info.append(
                {"sequence": len(info) + 1, "category": _cc(c.C4BB_SUPPORTING, category), **value}
            )

        if tob:
            add_info("typeofbill", code=_cc(c.TYPE_OF_BILL, first["032"]))
            if first["025"]:
                add_info(
                    "admissionperiod", timingPeriod=_period(_iso(first["025"]), _iso(first["029"]))
                )
            if first["027"]:
                add_info("admtype", code=_cc(c.ADMIT_TYPE, first["027"]))
            if first["028"]:
                add_info("pointoforigin", code=_cc(c.POINT_OF_ORIGIN, first["028"]))
            if first["031"]:
                add_info("discharge-status", code=_cc(c.DISCHARGE_STATUS, first["031"]))
        if info:
            eob["supportingInfo"] = info

        # diagnoses -> EOB.diagnosis + one Condition per code
        diagnoses: list[tuple[str, str, str]] = []  # (code, type, poa)
        if first["037"]:
            diagnoses.append((first["037"], "principal", first["062"]))
        if first["034"] and tob:
            diagnoses.append((first["034"], "admitting", ""))
        if first["035"]:
            diagnoses.append((first["035"], "externalcauseofinjury", ""))
        for n in range(24):
            code = first[f"{38 + n:03d}"]
            if code:
                diagnoses.append((code, "other" if tob else "secondary", first[f"{63 + n:03d}"]))
        eob_dx = []
        conditions: dict[str, str] = {}
        recorded = _iso(dos[0]) if dos else None
        for code, dx_type, poa in diagnoses:
            system = c.DIAGNOSIS_TYPE if dx_type in ("principal", "admitting") else c.C4BB_DIAGNOSIS
            entry: dict[str, Any] = {
                "sequence": len(eob_dx) + 1,
                "diagnosisCodeableConcept": _cc(dx_system, code),
                "type": [_cc(system, dx_type)],
            }
            if poa and tob:
                entry["onAdmission"] = _cc(c.POA, poa)
            eob_dx.append(entry)
            if code not in conditions:
                cond_id = self._claim_id("condition", claim_id, code)
                conditions[code] = cond_id
                cond: dict[str, Any] = {
                    "resourceType": "Condition",
                    "meta": _meta(None),
                    "category": [_cc(c.CONDITION_CATEGORY, "encounter-diagnosis")],
                    "code": _cc(dx_system, code),
                    "subject": subject,
                    "encounter": enc_ref,
                }
                if recorded:
                    cond["recordedDate"] = recorded
                if void:
                    cond["verificationStatus"] = _cc(c.CONDITION_VERIFICATION, "entered-in-error")
                out.append(("Condition", cond_id, cond))
        if eob_dx:
            eob["diagnosis"] = eob_dx

        # ICD-10-PCS procedures -> EOB.procedure + Procedure
        claim_period = _period(_iso(dos[0]), _iso(dos[-1])) if dos else None
        eob_px = []
        for n in range(26):
            code = first[f"{93 + n:03d}"]
            if not code:
                continue
            eob_px.append(
                {
                    "sequence": len(eob_px) + 1,
                    "type": [_cc(c.C4BB_PROCEDURE, "principal" if n == 0 else "other")],
                    "procedureCodeableConcept": _cc(px_system, code),
                }
            )
            out.append(
                self._procedure(
                    ("pcs", claim_id, code), px_system, code, subject, enc_ref, claim_period, void
                )
            )
        if eob_px:
            eob["procedure"] = eob_px

        # lines -> EOB.item (+ Procedure / Observation for CPT/HCPCS)
        items = []
        emergency = any(r["087"].startswith("045") for r in rows) or first["033"] in c.EMERGENCY_POS
        for r in rows:
            item: dict[str, Any] = {"sequence": int(r["006"])}
            if r["087"]:
                item["revenue"] = _cc(c.REVENUE, r["087"])
            code = r["088"]
            if code:
                item["productOrService"] = _cc(c.cpt_or_hcpcs_system(code), code)
            else:
                item["productOrService"] = _cc(
                    "http://terminology.hl7.org/CodeSystem/data-absent-reason", "not-applicable"
                )
            mods = [r[f"{n:03d}"] for n in range(89, 93) if r[f"{n:03d}"]]
            if mods:
                item["modifier"] = [_cc(c.cpt_or_hcpcs_system(code or "0"), m) for m in mods]
            start, end = _iso(r["119"]), _iso(r["120"]) or _iso(r["119"])
            if start == end:
                item["servicedDate"] = start
            else:
                item["servicedPeriod"] = _period(start, end)
            if r["033"]:
                item["locationCodeableConcept"] = _cc(c.POS, r["033"])
            if r["121"]:
                item["quantity"] = {"value": float(Decimal(r["121"]))}
            if r["133"]:
                item["detail"] = [{"sequence": 1, "productOrService": _cc(c.NDC, r["133"])}]
            adjudication = self._adjudication(r, c.MC_AMOUNTS)
            if r["159"]:
                adjudication.append(
                    {
                        "category": _cc(c.C4BB_DISCRIMINATOR, "adjustmentreason"),
                        "reason": _cc(c.CARC, r["159"]),
                    }
                )
            if r["137"] in ("Y", "N"):
                adjudication.append(
                    {
                        "category": _cc(c.C4BB_DISCRIMINATOR, "benefitpaymentstatus"),
                        "reason": _cc(
                            c.C4BB_PAYER_STATUS,
                            "innetwork" if r["137"] == "Y" else "outofnetwork",
                        ),
                    }
                )
            if adjudication:
                item["adjudication"] = adjudication
            items.append(item)
            if code and c.is_cpt_category_ii(code):
                obs_id = self._claim_id("observation", claim_id, r["006"])
                obs: dict[str, Any] = {
                    "resourceType": "Observation",
                    "meta": _meta(None),
                    "status": "entered-in-error" if void else "final",
                    "code": _cc(c.CPT, code),
                    "subject": subject,
                    "encounter": enc_ref,
                }
                if start:
                    obs["effectiveDateTime"] = start
                out.append(("Observation", obs_id, obs))
            elif code and not (
                code.isdigit() and c.EM_CODE_RANGE[0] <= int(code) <= c.EM_CODE_RANGE[1]
            ):
                out.append(
                    self._procedure(
                        ("line", claim_id, r["006"]),
                        c.cpt_or_hcpcs_system(code),
                        code,
                        subject,
                        enc_ref,
                        _period(start, end),
                        void,
                    )
                )
        self._finish_eob(eob, items, paid)

        # the encounter the claim describes
        if tob and tob[1] in "12":
            enc_class = "IMP"
        elif emergency:
            enc_class = "EMER"
        elif (tob and tob[0] == "3") or first["033"] in c.HOME_POS:
            enc_class = "HH"
        else:
            enc_class = "AMB"
        if enc_class == "IMP" and first["025"]:
            enc_period = _period(_iso(first["025"]), _iso(first["029"]))
        else:
            enc_period = claim_period or {}
        encounter: dict[str, Any] = {
            "resourceType": "Encounter",
            "meta": _meta(None),
            "identifier": [{"system": self.ns.system("claim"), "value": claim_id}],
            "status": "entered-in-error" if void else "finished",
            "class": {"system": c.ACT_CODE, "code": enc_class},
            "type": self._encounter_type(rows, tob),
            "subject": subject,
        }
        if enc_period:
            encounter["period"] = enc_period
        if conditions:
            encounter["diagnosis"] = [
                {"condition": {"reference": f"Condition/{cid}"}, "rank": i + 1}
                for i, cid in enumerate(conditions.values())
            ]
        hosp = {}
        if first["028"] and tob:
            hosp["admitSource"] = _cc(c.POINT_OF_ORIGIN, first["028"])
        if first["031"] and tob:
            hosp["dischargeDisposition"] = _cc(c.DISCHARGE_STATUS, first["031"])
        if hosp:
            encounter["hospitalization"] = hosp
        return ClaimPicture(
            claim_id,
            version,
            void,
            member_id,
            [("ExplanationOfBenefit", eob_id, eob), ("Encounter", enc_id, encounter), *out],
        )

    @staticmethod
    def _encounter_type(rows: list[Row], tob: str) -> list[dict[str, Any]]:
        """E/M CPT codes of the lines, else POS (professional) or TOB (institutional), else
        unknown (US Core Encounter.type 1..*; reference notes §6.2)."""
        em = sorted(
            {
                code
                for r in rows
                if (code := r["088"]).isdigit()
                and c.EM_CODE_RANGE[0] <= int(code) <= c.EM_CODE_RANGE[1]
            }
        )
        if em:
            return [_cc(c.CPT, code) for code in em]
        first = rows[0]
        if tob and first["032"]:
            return [_cc(c.TYPE_OF_BILL, first["032"])]
        if first["033"]:
            return [_cc(c.POS, first["033"])]
        return [_UNKNOWN]

    def _procedure(
        self,
        key: tuple[str, ...],
        system: str,
        code: str,
        subject: dict[str, Any],
        encounter: dict[str, Any],
        period: dict[str, str] | None,
        void: bool,
    ) -> Res:
        body: dict[str, Any] = {
            "resourceType": "Procedure",
            "meta": _meta(None),
            "status": "entered-in-error" if void else "completed",
            "code": _cc(system, code),
            "subject": subject,
            "encounter": encounter,
        }
        if period:
            body["performedPeriod"] = period
        return ("Procedure", self._claim_id("procedure", *key), body)

    def _pharmacy(self, all_rows: list[Row], patient_id: str) -> ClaimPicture:
        version, rows = self.latest(all_rows)
        first = rows[0]
        claim_id, member_id = first["005"], first["068"]
        void = self._is_void(rows, "066", "")
        fills = _dates(rows, "023")
        paid = max(r["024"] for r in rows)
        eob = self._eob_base(
            rows,
            patient_id,
            claim_type="pharmacy",
            profile="pharmacy",
            void=void,
            paid=paid,
            dos=fills,
            member_id=member_id,
        )
        eob["provider"] = self._provider_ref(first["057"], first["055"])
        subject = {"reference": f"Patient/{patient_id}"}
        if first["051"]:
            eob["careTeam"] = [
                {
                    "sequence": 1,
                    "provider": _npi_ref(first["051"]),
                    "role": _cc(c.C4BB_CARE_TEAM, "prescribing"),
                }
            ]
        info: list[dict[str, Any]] = []
        if first["033"]:
            info.append(
                {
                    "sequence": len(info) + 1,
                    "category": _cc(c.C4BB_SUPPORTING, "dayssupply"),
                    "valueQuantity": {"value": int(first["033"])},
                }
            )
        if first["026"].isdigit():
            info.append(
                {
                    "sequence": len(info) + 1,
                    "category": _cc(c.C4BB_SUPPORTING, "refillnum"),
                    "valueQuantity": {"value": int(first["026"])},
                }
            )
        if first["028"]:
            info.append(
                {
                    "sequence": len(info) + 1,
                    "category": _cc(c.C4BB_SUPPORTING, "dawcode"),
                    "code": _cc(
                        "http://terminology.hl7.org/CodeSystem/NCPDPDispensedAsWrittenOrProductSelectionCode",
                        first["028"],
                    ),
                }
            )
        if info:
            eob["supportingInfo"] = info
        items = []
        out: list[Res] = []
        for r in rows:
            ndc = _cc(c.NDC, r["025"])
            item: dict[str, Any] = {
                "sequence": int(r["006"]),
                "productOrService": ndc,
                "servicedDate": _iso(r["023"]),
            }
            quantity: dict[str, Any] = {}
            if r["032"]:
                quantity = {"value": float(Decimal(r["032"]))}
                if r["034"]:
                    quantity["unit"] = r["034"]
                item["quantity"] = quantity
            adjudication = self._adjudication(r, c.PC_AMOUNTS)
            if adjudication:
                item["adjudication"] = adjudication
            items.append(item)
            dispense: dict[str, Any] = {
                "resourceType": "MedicationDispense",
                "meta": _meta(None),
                "identifier": [
                    {"system": self.ns.system("claim-line"), "value": f"{claim_id}/{r['006']}"}
                ],
                "status": "entered-in-error" if void else "completed",
                "medicationCodeableConcept": ndc,
                "subject": subject,
                "whenHandedOver": _iso(r["023"]),
            }
            if r["035"]:
                dispense["identifier"].append(
                    {"system": self.ns.system("prescription"), "value": r["035"]}
                )
            if r["057"]:
                dispense["performer"] = [{"actor": _npi_ref(r["057"])}]
            if quantity:
                dispense["quantity"] = quantity
            if r["033"]:
                dispense["daysSupply"] = {
                    "value": int(r["033"]),
                    "unit": "d",
                    "system": "http://unitsofmeasure.org",
                    "code": "d",
                }
            if r["051"]:
                dispense["contained"] = [
                    {
                        "resourceType": "MedicationRequest",
                        "id": "rx",
                        "status": "completed",
                        "intent": "order",
                        "medicationCodeableConcept": ndc,
                        "subject": subject,
                        "requester": _npi_ref(r["051"]),
                    }
                ]
                dispense["authorizingPrescription"] = [{"reference": "#rx"}]
            out.append(
                (
                    "MedicationDispense",
                    self._claim_id("dispense", claim_id, r["006"]),
                    dispense,
                )
            )
        self._finish_eob(eob, items, paid)
        return ClaimPicture(
            claim_id,
            version,
            void,
            member_id,
            [("ExplanationOfBenefit", self._claim_id("eob", claim_id), eob), *out],
        )

    def _dental(self, all_rows: list[Row], patient_id: str) -> ClaimPicture:
        version, rows = self.latest(all_rows)
        first = rows[0]
        claim_id, member_id = first["005"], first["034"]
        void = self._is_void(rows, "033", "032")
        dos = _dates(rows, "013", "014")
        paid = max(r["012"] for r in rows)
        eob = self._eob_base(
            rows,
            patient_id,
            claim_type="oral",
            profile="oral",
            void=void,
            paid=paid,
            dos=dos,
            member_id=member_id,
        )
        eob["provider"] = self._provider_ref(first["030"], first["029"])
        if first["028"]:
            eob["careTeam"] = [
                {
                    "sequence": 1,
                    "provider": _npi_ref(first["028"]),
                    "role": _cc(c.C4BB_CARE_TEAM, "rendering"),
                }
            ]
        if first["020"]:
            eob["diagnosis"] = [
                {
                    "sequence": 1,
                    "diagnosisCodeableConcept": _cc(c.ICD10CM, first["020"]),
                    "type": [_cc(c.DIAGNOSIS_TYPE, "principal")],
                }
            ]
        info: list[dict[str, Any]] = []
        items = []
        for r in rows:
            item: dict[str, Any] = {
                "sequence": int(r["006"]),
                "productOrService": _cc(c.CDT, r["016"]),
                "servicedDate": _iso(r["013"]),
            }
            teeth = [t.strip() for t in r["017"].split(",") if t.strip()]
            areas = [a.strip() for a in r["018"].split(",") if a.strip()]
            sites = [(c.TOOTH, t) for t in teeth] + [(c.ORAL_AREA, a) for a in areas]
            if sites:
                item["bodySite"] = _cc(*sites[0])
                extra = []
                for system, code in sites[1:]:
                    info.append(
                        {
                            "sequence": len(info) + 1,
                            "category": _cc(c.C4BB_SUPPORTING, "additionalbodysite"),
                            "code": _cc(system, code),
                        }
                    )
                    extra.append(len(info))
                if extra:
                    item["informationSequence"] = extra
            if r["019"] and teeth:
                item["subSite"] = [_cc(c.SURFACE, s) for s in r["019"]]
            if r["015"]:
                item["locationCodeableConcept"] = _cc(c.POS, r["015"])
            adjudication = self._adjudication(r, c.DC_AMOUNTS)
            if adjudication:
                item["adjudication"] = adjudication
            items.append(item)
        if info:
            eob["supportingInfo"] = info
        self._finish_eob(eob, items, paid)
        return ClaimPicture(
            claim_id,
            version,
            void,
            member_id,
            [("ExplanationOfBenefit", self._claim_id("eob", claim_id), eob)],
        )

    # ---- PV ----------------------------------------------------------------------------------

    def provider(self, r: Row) -> list[Res]:
        local_id = r["003"]
        ident = [{"system": self.ns.system("provider"), "value": local_id}]
        if r["005"]:
            ident.insert(0, {"type": _cc(c.V2_0203, "NPI"), "system": c.NPI, "value": r["005"]})
        address = {
            k: v
            for k, v in (
                ("line", [r["014"]] if r["014"] else None),
                ("city", r["015"]),
                ("state", r["016"]),
                ("postalCode", r["017"]),
                ("district", r["018"]),
                ("country", r["019"]),
            )
            if v
        }
        out: list[Res] = []
        if r["006"] == "2":
            if r["004"]:
                ident.append({"type": _cc(c.V2_0203, "TAX"), "value": r["004"]})
            org: dict[str, Any] = {
                "resourceType": "Organization",
                "meta": _meta(c.PROFILE["Organization"]),
                "identifier": ident,
                "active": True,
                "type": [_cc(c.ORG_TYPE, "prov", "Healthcare Provider")],
                "name": r["012"],
            }
            if address:
                org["address"] = [address]
            out.append(("Organization", self.ns.id("provider", local_id), org))
            return _profiled(out)
        name: dict[str, Any] = {"family": r["012"]}
        given = [g for g in (r["010"], r["011"]) if g]
        if given:
            name["given"] = given
        if r["013"]:
            name["suffix"] = [r["013"]]
        prac_id = self.ns.id("provider", local_id)
        out.append(
            (
                "Practitioner",
                prac_id,
                {
                    "resourceType": "Practitioner",
                    "meta": _meta(c.PROFILE["Practitioner"]),
                    "identifier": ident,
                    "active": True,
                    "name": [name],
                },
            )
        )
        role: dict[str, Any] = {
            "resourceType": "PractitionerRole",
            "meta": _meta(None),
            "identifier": [{"system": self.ns.system("provider-role"), "value": local_id}],
            "active": True,
            "practitioner": {"reference": f"Practitioner/{prac_id}"},
        }
        period = _period(_iso(r["027"]), _iso(r["028"]))
        if period:
            role["period"] = period
        if r["025"]:
            role["organization"] = _npi_ref(r["025"], r["024"] or None)
        specialties = [_cc(c.NUCC, t) for t in (r["020"], r["021"], r["022"]) if t]
        if specialties:
            role["specialty"] = specialties
        if address:
            loc_id = self.ns.id("location", local_id)
            out.append(
                (
                    "Location",
                    loc_id,
                    {
                        "resourceType": "Location",
                        "meta": _meta(None),
                        "status": "active",
                        "address": address,
                    },
                )
            )
            role["location"] = [{"reference": f"Location/{loc_id}"}]
        if r["026"]:
            role["telecom"] = [{"system": "phone", "value": r["026"], "use": "work"}]
        out.append(("PractitionerRole", self.ns.id("provider-role", local_id), role))
        return _profiled(out)
