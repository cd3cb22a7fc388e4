"""Every message of the shared HL7v2 corpus (../shared/corpus/hl7v2, skipped when absent):
each gets an ACK and never a crash; messages in the valid folders are accepted unless listed
below with the reason we refuse them (the same list is in docs/hl7v2.md); every file under
malformed/ gets at least one AE/AR/CE/CR; and where another converter's expected output exists,
the key facts agree except for the disagreements listed (and explained in docs/hl7v2.md)."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import select

from app.db import Database
from app.hl7.parse import split_batch
from app.hl7.service import Hl7Service
from app.settings import Settings
from app.store.tables import resource

CORPUS = Path(__file__).resolve().parent.parent.parent / "shared" / "corpus" / "hl7v2"
FILES = sorted(CORPUS.rglob("*.hl7")) if CORPUS.is_dir() else []
pytestmark = pytest.mark.skipif(not FILES, reason="the shared HL7v2 corpus is not present")

ACCEPTED = {"AA", "CA"}

# (file, message index in the file) -> (ERR-3 code, why the refusal is right)
REFUSALS: dict[tuple[str, int], tuple[str, str]] = {
    ("ADT_A01/gcp__adt_a01.hl7", 0): ("103", "PID-8 is '2', not a table 0001 value"),
    ("ORU_R01/mirth__small.hl7", 0): ("102", "PID-7 'Aug 15, 1942' is not a DTM"),
    ("ORU_R01/rs__ORU_deidentified.hl7", 0): ("102", "PID-7 'PIDDOB!' is not a DTM"),
    ("ORU_R01/rs__oru_r01-full.hl7", 0): ("102", "PID-7 '0000' is not a real date"),
    ("ORU_R01/rs__sample_oru_CDPH_NBS_20241021-001.hl7", 0): (
        "102",
        "OBX-14 has 15 digits: no real date",
    ),
    ("ORU_R01/rubyhl7__ORU_R01_2.5.1_SampleTestCase6.hl7", 0): (
        "103",
        "OBX-3 20995-1 fails the LOINC check digit",
    ),
    ("ORU_R01/rubyhl7__realm-animal-rabies.hl7", 0): ("102", "OBR-22 hour 30"),
    ("ORU_R01/rubyhl7__realm-campylobacter-jejuni.hl7", 0): ("102", "OBR-22 hour 30"),
    ("ORU_R01/rubyhl7__realm-hepatitis-c-virus.hl7", 0): ("102", "OBR-22 hour 30"),
    ("ORU_R01/rubyhl7__realm-lead-laboratory-result.hl7", 0): (
        "100",
        "a PID segment wrapped onto a second line: the continuation is not a segment",
    ),
    ("ORU_R01/rubyhl7__realm-lead-laboratory-result.hl7", 1): ("102", "OBR-22 hour 30"),
    ("ORU_R01/rubyhl7__realm-minimal-message.hl7", 0): ("102", "OBR-22 hour 30"),
    ("batch/rubyhl7__realm-batch.hl7", 0): ("102", "OBR-22 hour 30"),
    ("batch/rubyhl7__realm-batch.hl7", 1): ("102", "OBR-22 hour 30"),
    ("batch/hapi__messages.hl7", 0): ("100", "C-style comments between messages"),
    **{
        ("batch/hapi__messages.hl7", n): ("200", "BAR^P01 is not a supported message type")
        for n in (2, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13)
    },
    ("batch/hapi__messages.hl7", 3): ("200", "an ACK: acknowledgements are not ingested"),
    **{
        ("batch/hapi__messages.hl7", n): ("200", "ORM^O01 is not a supported message type")
        for n in (14, 15, 16)
    },
    **{
        ("batch/hapi__messages.hl7", n): ("200", "QRY^Q01 is not a supported message type")
        for n in (17, 18)
    },
    **{
        ("batch/mirth__TestADT.hl7", n): (
            "205",
            "the batch reuses MSH-10 603266 for different messages from the same sender",
        )
        for n in (18, 33, 48, 63, 78, 93, 108, 123)
    },
    ("other/efferent__Sample-ORM.hl7", 0): ("200", "ORM is not supported"),
    ("other/gcp__rde_o01_ex1.hl7", 0): ("201", "RDE^O01 is not supported (RDE^O11 is)"),
    ("other/gcp__rde_o01_ex3.hl7", 0): ("201", "RDE^O01 is not supported (RDE^O11 is)"),
    ("other/hapi__cv.04_001_chem.hl7", 0): ("200", "ERP is not supported"),
    ("other/hl7ig__Message.hl7_MDM_T02.hl7", 0): ("200", "MDM is not supported"),
    ("other/rs__hl7_2.6.hl7", 0): ("200", "ORM is not supported"),
    ("other/rs__hl7_2.7.hl7", 0): ("200", "ORM is not supported"),
    ("other/rubyhl7__lotsunknowns.hl7", 0): ("200", "ORM is not supported"),
}


def _err(ack: str) -> str:
    """The table 0357 code of an ACK's ERR segment, in either ERR layout."""
    for seg in ack.split("\r"):
        if not seg.startswith("ERR"):
            continue
        fs = seg[3]
        fields = seg.split(fs)
        if len(fields) > 3 and fields[3]:  # v2.5+: ERR-3 code^text^HL70357
            return fields[3][:3]
        for part in fields[1].replace("&", "^").replace("}", "^").split("^"):  # ERR-1 (ELD)
            if len(part) == 3 and part.isdigit():
                return part
    return ""


@pytest.fixture
def hl7(db: Database, settings: Settings) -> Hl7Service:
    return Hl7Service(db, settings)


async def _ingest(hl7: Hl7Service, path: Path) -> list[tuple[str, str]]:
    out = []
    for item in split_batch(path.read_bytes()) or [path.read_bytes()]:
        result = await hl7.handle(item, "test")
        assert result.ack.startswith("MSH") and "\rMSA" in result.ack
        out.append((result.code, result.ack))
    return out


@pytest.mark.parametrize("path", FILES, ids=[str(p.relative_to(CORPUS)) for p in FILES])
async def test_every_corpus_message_is_answered(hl7: Hl7Service, db: Database, path: Path):
    name = str(path.relative_to(CORPUS))
    folder = path.parent.name
    answers = await _ingest(hl7, path)
    if folder == "malformed":
        assert any(code not in ACCEPTED for code, _ in answers), name
        return
    for n, (code, ack) in enumerate(answers):
        if folder == "fragments":
            # fragments exercise one segment and mostly lack a PID-3: any answer, never a crash
            assert code in {"AA", "AE", "AR", "CA", "CE", "CR"}
            continue
        refusal = REFUSALS.get((name, n))
        if refusal is None:
            assert code in ACCEPTED, (name, n, ack)
        else:
            assert code not in ACCEPTED and _err(ack) == refusal[0], (name, n, ack)
    if folder != "fragments" and any(code in ACCEPTED for code, _ in answers):
        async with db.read() as conn:
            types = {r.res_type for r in await conn.execute(select(resource.c.res_type))}
        assert {"Patient", "Provenance"} <= types


def test_the_refusal_list_names_real_messages():
    for name, _ in REFUSALS:
        assert (CORPUS / name).is_file(), name


# ---- agreement with other converters' expected output --------------------------------------------

EXPECTED = sorted(
    p for p in CORPUS.glob("*/*.expected.*.json") if p.parent.name not in ("fragments", "other")
)

# (expected file, fact) -> why we differ (docs/hl7v2.md "Disagreements")
ZONE = "no offset in the message: we apply DXF_HL7_DEFAULT_TIMEZONE, they another zone"
VXU_OBX = "VXU OBX 30963-3 and 64994-7 become Observations (IG VXU_V04); FHIR-Converter skips them"
PV2_9 = "PV2-9 is the expected discharge: FHIR-Converter writes it as period.end, we do not (IG)"
NO_PID_8 = (
    "no PID-8: US Core Patient.gender is 1..1, so we write 'unknown' (US Core Missing Data); "
    "Whistle leaves gender out"
)
DISAGREEMENTS: dict[tuple[str, str], str] = {
    ("ADT_A04/msfc__ADT-A04-01.expected.fhir-converter.json", "Encounter.period.end"): PV2_9,
    ("ADT_A11/msfc__ADT-A11-01.expected.fhir-converter.json", "Encounter.period.end"): PV2_9,
    ("ADT_A01/gcp__adt_a01_ex2.expected.whistle.json", "Encounter.period.start"): ZONE,
    ("ADT_A01/gcp__adt_a01_ex3.expected.whistle.json", "Encounter.period.start"): ZONE,
    ("ADT_A04/gcp__adt_a04_ex1.expected.whistle.json", "Encounter.period.start"): ZONE,
    ("ADT_A08/gcp__adt_a08_ex1.expected.whistle.json", "Encounter.class"): (
        "PV1-2 'I' is inpatient (IMP); Whistle writes 'unknown'"
    ),
    ("VXU_V04/msfc__VXU-V04-01.expected.fhir-converter.json", "Observation.codes"): VXU_OBX,
    ("VXU_V04/msfc__VXU-V04-02.expected.fhir-converter.json", "Observation.codes"): VXU_OBX,
    ("ORU_R01/gcp__oru_r01_ex6.expected.whistle.json", "Observation.values"): (
        "NM '<15': we keep a Quantity with comparator '<'; Whistle keeps the text"
    ),
    ("ORU_R01/msfc__ORU-R01-01.expected.fhir-converter.json", "Observation.codes"): (
        "OBX-2 RP: we keep the pointer as an attachment; FHIR-Converter drops the OBX"
    ),
    ("ORU_R01/rs__sample_oru_20241015-001.expected.reportstream.json", "Observation.values"): (
        "FT escapes (\\.br\\) are decoded to line breaks; ReportStream keeps them raw"
    ),
    ("ORU_R01/gcp__oru_r01_ex1.expected.whistle.json", "Patient.gender"): NO_PID_8,
    ("ORU_R01/gcp__oru_r01_ex2.expected.whistle.json", "Patient.gender"): NO_PID_8,
}


def _instant(text: str | None) -> datetime | str | None:
    if not text or len(text) <= 10:
        return text
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _by_type(resources: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for r in resources:
        out.setdefault(r["resourceType"], []).append(r)
    return out


def _code(o: dict[str, Any]) -> str | None:
    return ((o.get("code") or {}).get("coding") or [{}])[0].get("code")


def _value(o: dict[str, Any]) -> Any:
    if "valueQuantity" in o:
        return ("Q", float(o["valueQuantity"].get("value", "nan")))
    if "valueString" in o:
        return ("S", o["valueString"])
    if "valueCodeableConcept" in o:
        return ("C", ((o["valueCodeableConcept"].get("coding") or [{}])[0]).get("code"))
    return None


def _facts(theirs: dict[str, list[dict]], ours: dict[str, list[dict]]) -> dict[str, tuple]:
    """The facts that differ: name -> (theirs, ours)."""
    diff: dict[str, tuple] = {}
    if theirs.get("Patient") and ours.get("Patient"):
        t = theirs["Patient"][0]
        o = next(p for p in ours["Patient"] if p.get("active", True))
        for key in ("birthDate", "gender"):
            if t.get(key) != o.get(key):
                diff[f"Patient.{key}"] = (t.get(key), o.get(key))
        t_names = {n.get("family") for n in t.get("name", []) if n.get("family")}
        o_names = {n.get("family") for n in o.get("name", []) if n.get("family")}
        if not o_names <= t_names:
            diff["Patient.name"] = (sorted(t_names), sorted(o_names))
        t_ids = {i.get("value") for i in t.get("identifier", []) if i.get("value")}
        o_ids = {i.get("value") for i in o.get("identifier", []) if i.get("value")}
        if not o_ids <= t_ids or not o_ids:
            diff["Patient.identifier"] = (sorted(t_ids), sorted(o_ids))
    if theirs.get("Encounter") and ours.get("Encounter"):
        t, o = theirs["Encounter"][0], ours["Encounter"][0]
        if (t.get("class") or {}).get("code") != (o.get("class") or {}).get("code"):
            diff["Encounter.class"] = (t.get("class"), o.get("class"))
        for key in ("start", "end"):
            ts, os_ = (t.get("period") or {}).get(key), (o.get("period") or {}).get(key)
            if ts and _instant(ts) != _instant(os_):
                diff[f"Encounter.period.{key}"] = (ts, os_)
    t_obs, o_obs = theirs.get("Observation", []), ours.get("Observation", [])
    t_codes, o_codes = {_code(x) for x in t_obs}, {_code(x) for x in o_obs}
    if o_obs and not o_codes <= t_codes:
        diff["Observation.codes"] = (sorted(map(str, t_codes)), sorted(map(str, o_codes)))
    ours_values = {(_code(x), _value(x)) for x in o_obs}
    missing = [
        (_code(x), _value(x))
        for x in t_obs
        if _value(x) is not None
        and _code(x) in o_codes
        and (_code(x), _value(x)) not in ours_values
    ]
    if missing:
        diff["Observation.values"] = (missing[:3], sorted(map(str, ours_values))[:3])
    return diff


@pytest.mark.parametrize("expected", EXPECTED, ids=[str(p.relative_to(CORPUS)) for p in EXPECTED])
async def test_key_facts_agree_with_other_converters(hl7: Hl7Service, db: Database, expected: Path):
    name = str(expected.relative_to(CORPUS))
    message = expected.parent / (expected.name.split(".expected.")[0] + ".hl7")
    answers = await _ingest(hl7, message)
    if not any(code in ACCEPTED for code, _ in answers):
        # refused on purpose: nothing to compare, but the refusal must be a listed one
        source = str(message.relative_to(CORPUS))
        assert all((source, n) in REFUSALS for n in range(len(answers))), source
        return
    bundle = json.loads(expected.read_text())
    theirs = _by_type([e["resource"] for e in bundle.get("entry", []) if "resource" in e])
    async with db.read() as conn:
        rows = (await conn.execute(select(resource.c.content))).all()
    ours = _by_type([orjson.loads(r.content) for r in rows if r.content])
    differ = _facts(theirs, ours)
    allowed = {fact for (file, fact) in DISAGREEMENTS if file == name}
    assert set(differ) == allowed, {k: v for k, v in differ.items() if k not in allowed}
    # a sample of what must hold whatever the other converter did
    assert ours.get("Patient") and ours.get("Provenance")
