"""Seeded synthetic APCD-CDL files (ME, MC, PC, DC, PV) for tests and benchmarks.

Everything is made up: names come from short fixed lists, identifiers are random, NPIs are random
9-digit numbers given a valid check digit. Codes are real code formats (a few common ICD-10-CM,
ICD-10-PCS, CPT/HCPCS, CDT and NDC codes) so the files pass validation, except a configurable
share of lines that are deliberately broken (a bad code, date, NPI check digit or length), and
each break is one the validator reports. Claims have 1-4 lines; a share of claims is re-sent
later in the file as a replacement (version + 1) or a void (claim line type V).

The same seed gives the same files byte for byte. Files are written line by line, so a
million-line medical file needs no more memory than a small one.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import TextIO

from app.apcd.layout import Layout, load_layout
from app.apcd.validate import npi_is_valid

__all__ = ["SynthResult", "make_npi", "write_apcd_files"]

FAMILY = ["Rivera", "Nguyen", "Okafor", "Larsen", "Haddad", "Moreno", "Kowalski", "Tanaka"]
GIVEN = ["Ana", "Ben", "Chen", "Dara", "Eli", "Fatima", "Gus", "Hana", "Ivan", "Jo"]
STREETS = ["Oak St", "Pine Ave", "Main St", "Cedar Ln", "Harbor Blvd", "Mission Rd"]
CITIES = [("Sacramento", "95814"), ("Fresno", "93721"), ("Oakland", "94612"), ("Eureka", "95501")]
ICD10CM = ["E119", "I10", "J449", "E785", "M545", "Z0000", "R079", "N390", "K219", "F329"]
ICD10PCS = ["0DTJ4ZZ", "0SRC0J9", "02703DZ", "0FT44ZZ"]
CPT_PROC = ["80053", "83036", "71046", "93000", "36415", "G0439", "J1100", "20610"]
CPT_EM = ["99213", "99214", "99203"]
CPT_CAT2 = ["3044F", "3074F", "3078F"]
REVENUE = ["0450", "0300", "0250", "0120", "0636"]
NDC = ["00093715601", "00378180110", "68180051301", "00071015523", "59762330201"]
CDT = ["D0120", "D1110", "D2391", "D0274", "D2740"]
TAXONOMY = ["207Q00000X", "208D00000X", "207R00000X", "1223G0001X"]


def make_npi(rng: random.Random) -> str:
    base = str(rng.choice("12")) + "".join(str(rng.randrange(10)) for _ in range(8))
    for check in "0123456789":
        if npi_is_valid(base + check):
            return base + check
    raise AssertionError("unreachable: one check digit always fits")


@dataclass(slots=True)
class SynthResult:
    files: dict[str, Path]
    lines: dict[str, int]
    bad_lines: dict[str, int]


class _File:
    """One CDL file being written: header, optional column row, details, trailer."""

    def __init__(
        self, path: Path, layout: Layout, ftype: str, submitter: str, payer: str, columns: bool
    ) -> None:
        self.rl = layout.record(ftype)
        self.pos = {f.field_id[-3:]: i for i, f in enumerate(self.rl.fields)}
        self.ftype, self.submitter, self.payer = ftype, submitter, payer
        self.count = 0
        self.bad = 0
        self.f: TextIO = path.open("w", encoding="utf-8", newline="\n")
        self.f.write(f"HD|{submitter}|{payer}|SYNTHETIC|{ftype}|202401|202412|T|synthetic\n")
        if columns:
            self.f.write("|".join(f.field_id for f in self.rl.fields) + "\n")

    def blank(self) -> list[str]:
        values = [""] * len(self.rl.fields)
        values[-1] = self.ftype
        values[self.pos["001"]] = self.submitter
        values[self.pos["002"]] = self.payer
        return values

    def set(self, values: list[str], suffix: str, value: object) -> None:
        values[self.pos[suffix]] = str(value)

    def write(self, values: list[str]) -> None:
        self.f.write("|".join(values) + "\n")
        self.count += 1

    def close(self) -> None:
        self.f.write(
            f"TR|{self.submitter}|{self.payer}|SYNTHETIC|{self.ftype}|20250115||{self.count}\n"
        )
        self.f.close()


def _d(day: date) -> str:
    return day.strftime("%Y%m%d")


def _break(rng: random.Random, f: _File, values: list[str]) -> None:
    """Make one deliberate, detectable error in a detail line."""
    choices = {
        "MC": [("037", "XYZ"), ("119", "20241345"), ("135", "1234567890"), ("088", "ABCDEFG")],
        "PC": [("025", "12345"), ("023", "20240230"), ("051", "1234567890")],
        "DC": [("016", "X9999"), ("013", "2024-01-01"), ("017", "99")],
        "ME": [("019", "19991399"), ("018", "Q"), ("061", "")],
        "PV": [("005", "1234567890"), ("006", "7"), ("003", "")],
    }[f.ftype]
    suffix, bad = rng.choice(choices)
    f.set(values, suffix, bad)
    f.bad += 1


def _amounts(rng: random.Random) -> tuple[str, str, str, str]:
    charge = rng.randrange(5000, 500000) / 100
    allowed = round(charge * rng.uniform(0.4, 0.9), 2)
    copay = rng.choice([0, 10, 20, 35])
    paid = round(max(allowed - copay, 0), 2)
    return f"{charge:.2f}", f"{allowed:.2f}", f"{paid:.2f}", f"{copay:.2f}"


def write_apcd_files(
    outdir: Path,
    *,
    members: int,
    seed: int,
    bad_share: float = 0.01,
    medical_lines: int | None = None,
    layout: str = "3.0.1",
    submitter: str = "SYNTH01",
    payer: str = "PAYER01",
    column_row: bool = False,
) -> SynthResult:
    """Write ME, MC, PC, DC and PV files into `outdir`; `medical_lines` sizes the MC file."""
    rng = random.Random(seed)
    lay = load_layout(layout)
    outdir.mkdir(parents=True, exist_ok=True)
    names = {t: outdir / f"synth-{seed}-{t.lower()}.txt" for t in ("ME", "MC", "PC", "DC", "PV")}
    files = {t: _File(p, lay, t, submitter, payer, column_row) for t, p in names.items()}
    member_ids = [f"M{seed:04d}{i:07d}" for i in range(members)]
    providers = [make_npi(rng) for _ in range(max(4, members // 10))]

    # providers
    pv = files["PV"]
    for n, npi in enumerate(providers):
        v = pv.blank()
        person = n % 4 != 0
        pv.set(v, "003", f"PRV{n:06d}")
        pv.set(v, "005", npi)
        pv.set(v, "006", "1" if person else "2")
        if person:
            pv.set(v, "010", rng.choice(GIVEN))
        pv.set(v, "012", rng.choice(FAMILY) if person else f"{rng.choice(CITIES)[0]} Clinic")
        city, zip_code = rng.choice(CITIES)
        pv.set(v, "014", f"{rng.randrange(1, 999)} {rng.choice(STREETS)}")
        pv.set(v, "015", city)
        pv.set(v, "016", "CA")
        pv.set(v, "017", zip_code)
        pv.set(v, "020", rng.choice(TAXONOMY))
        if rng.random() < bad_share:
            _break(rng, pv, v)
        pv.write(v)

    # members: one or two eligibility spans each
    me = files["ME"]
    demographics = {}
    for mid in member_ids:
        gender = rng.choice("MFFMU")
        birth = date(1940, 1, 1) + timedelta(days=rng.randrange(30000))
        family, given = rng.choice(FAMILY), rng.choice(GIVEN)
        demographics[mid] = (gender, _d(birth), family, given)
        street = f"{rng.randrange(1, 999)} {rng.choice(STREETS)}"
        city, zip_code = rng.choice(CITIES)
        group = f"GRP{rng.randrange(100):03d}"
        spans = (
            [("20240101", "20240630"), ("20240701", "")]
            if rng.random() < 0.3
            else [("20240101", "")]
        )
        for start, end in spans:
            v = me.blank()
            for suffix, value in (
                ("003", "PLAN-A" if start == "20240101" else "PLAN-B"),
                ("004", "MD"),
                ("005", "2024"),
                ("006", "01"),
                ("007", group),
                ("017", "18"),
                ("018", gender),
                ("019", _d(birth)),
                ("020", family),
                ("021", given),
                ("023", street),
                ("024", city),
                ("025", "CA"),
                ("026", zip_code),
                ("040", "Y"),
                ("050", start),
                ("051", end),
                ("061", mid),
                ("062", mid),
            ):
                me.set(v, suffix, value)
            if rng.random() < bad_share:
                _break(rng, me, v)
            me.write(v)

    # medical claims
    mc = files["MC"]
    target = medical_lines if medical_lines is not None else members * 6
    # claims re-sent at the end, kept as joined lines (bounded: memory stays flat)
    resend: list[tuple[str, list[str]]] = []
    claim_no = 0
    first_pass = target - target // 8  # room for the replacements and voids sent afterwards
    while mc.count < first_pass:
        claim_no += 1
        lines = _medical_claim(rng, mc, member_ids, demographics, providers, claim_no)
        lines = lines[: max(1, first_pass - mc.count)]
        if len(resend) < 10_000 and rng.random() < 0.07:
            kind = "V" if len(resend) % 3 == 1 else "R"
            resend.append((kind, ["|".join(v) for v in lines]))
        for v in lines:
            if rng.random() < bad_share:
                _break(rng, mc, v)
            mc.write(v)
    for kind, joined in resend:
        if mc.count + len(joined) > target:
            continue
        for text in joined:
            v = text.split("|")
            mc.set(v, "007", int(v[mc.pos["007"]]) + 1)
            mc.set(v, "160", kind)
            if kind == "R":
                mc.set(v, "125", f"{float(v[mc.pos['125']] or 0) + 1:.2f}")
            mc.write(v)
    while mc.count < target:  # top up to the exact size with one-line claims
        claim_no += 1
        v = _medical_claim(rng, mc, member_ids, demographics, providers, claim_no)[0]
        mc.write(v)

    # pharmacy claims
    pc = files["PC"]
    for n in range(members * 2):
        mid = rng.choice(member_ids)
        gender, birth, family, given = demographics[mid]
        fill = date(2024, 1, 1) + timedelta(days=rng.randrange(330))
        charge, allowed, paid, copay = _amounts(rng)
        v = pc.blank()
        for suffix, value in (
            ("005", f"RX{n:09d}"),
            ("006", 1),
            ("007", 0),
            ("018", gender),
            ("019", birth),
            ("020", family),
            ("021", given),
            ("023", _d(fill)),
            ("024", _d(fill + timedelta(days=3))),
            ("025", rng.choice(NDC)),
            ("026", rng.choice(["00", "01", "02"])),
            ("028", "0"),
            ("032", rng.choice([30, 60, 90])),
            ("033", rng.choice([30, 90])),
            ("034", "EA"),
            ("035", f"{rng.randrange(10**7):07d}"),
            ("036", charge),
            ("037", paid),
            ("038", allowed),
            ("043", copay),
            ("051", rng.choice(providers)),
            ("057", rng.choice(providers)),
            ("066", "O"),
            ("068", mid),
            ("069", mid),
        ):
            pc.set(v, suffix, value)
        if rng.random() < bad_share:
            _break(rng, pc, v)
        pc.write(v)

    # dental claims
    dc = files["DC"]
    for n in range(max(1, members // 2)):
        mid = rng.choice(member_ids)
        gender, birth, _family, _given = demographics[mid]
        day = date(2024, 1, 1) + timedelta(days=rng.randrange(330))
        for line in range(1, rng.randint(1, 3) + 1):
            charge, allowed, paid, copay = _amounts(rng)
            v = dc.blank()
            for suffix, value in (
                ("005", f"DC{n:09d}"),
                ("006", line),
                ("007", 0),
                ("010", gender),
                ("011", birth),
                ("012", _d(day + timedelta(days=10))),
                ("013", _d(day)),
                ("015", "11"),
                ("016", rng.choice(CDT)),
                ("017", rng.choice(["3", "14", "19,20", ""])),
                ("018", rng.choice(["", "UR", "LL"])),
                ("019", rng.choice(["", "MO", "B"])),
                ("021", charge),
                ("022", paid),
                ("023", allowed),
                ("028", rng.choice(providers)),
                ("030", rng.choice(providers)),
                ("033", "O"),
                ("034", mid),
            ):
                dc.set(v, suffix, value)
            if not v[dc.pos["017"]]:
                dc.set(v, "019", "")
            if rng.random() < bad_share:
                _break(rng, dc, v)
            dc.write(v)

    for f in files.values():
        f.close()
    return SynthResult(
        names,
        {t: f.count for t, f in files.items()},
        {t: f.bad for t, f in files.items()},
    )


def _medical_claim(
    rng: random.Random,
    mc: _File,
    member_ids: list[str],
    demographics: dict[str, tuple[str, str, str, str]],
    providers: list[str],
    claim_no: int,
) -> list[list[str]]:
    mid = rng.choice(member_ids)
    gender, birth, family, given = demographics[mid]
    institutional = rng.random() < 0.3
    start = date(2024, 1, 1) + timedelta(days=rng.randrange(300))
    stay = rng.randrange(1, 6) if institutional else 0
    end = start + timedelta(days=stay)
    paid = end + timedelta(days=rng.randrange(10, 30))
    dx = rng.sample(ICD10CM, rng.randint(1, 4))
    common: list[tuple[str, object]] = [
        ("003", "PLAN-A"),
        ("005", f"CLM{claim_no:010d}"),
        ("007", 0),
        ("017", "18"),
        ("018", gender),
        ("019", birth),
        ("020", family),
        ("021", given),
        ("024", _d(paid)),
        ("037", dx[0]),
        ("148", rng.choice(providers)),
        ("147", f"PRV{rng.randrange(1000):06d}"),
        ("157", "1"),
        ("160", "O"),
        ("161", mid),
        ("162", mid),
    ]
    for n, code in enumerate(dx[1:]):
        common.append((f"{38 + n:03d}", code))
    if institutional:
        common += [
            ("032", rng.choice(["111", "131"])),
            ("025", _d(start)),
            ("029", _d(end)),
            ("027", "1"),
            ("028", "1"),
            ("031", "01"),
            ("062", "Y"),
            ("154", rng.choice(providers)),
        ]
        if rng.random() < 0.5:
            common.append(("093", rng.choice(ICD10PCS)))
    else:
        common.append(("033", rng.choice(["11", "11", "22", "23"])))
    out = []
    codes: Iterator[str] = iter(
        [rng.choice(CPT_EM)] + [rng.choice(CPT_PROC + CPT_CAT2) for _ in range(3)]
    )
    for line in range(1, rng.randint(1, 4) + 1):
        v = mc.blank()
        for suffix, value in common:
            mc.set(v, suffix, value)
        charge, allowed, paid_amt, copay = _amounts(rng)
        for suffix, value in (
            ("006", line),
            ("088", next(codes)),
            ("119", _d(start)),
            ("120", _d(end)),
            ("121", 1),
            ("123", charge),
            ("125", paid_amt),
            ("126", copay),
            ("131", allowed),
            ("135", rng.choice(providers)),
            ("137", rng.choice("YN")),
        ):
            mc.set(v, suffix, value)
        if institutional:
            mc.set(v, "087", rng.choice(REVENUE))
        out.append(v)
    return out
