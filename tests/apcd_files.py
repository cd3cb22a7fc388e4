"""Builders for small synthetic APCD-CDL files (no real PHI: made-up names and ids)."""

from __future__ import annotations

from pathlib import Path

from app.apcd.layout import load_layout

LAYOUT = load_layout("3.0.1")
SUBMITTER, PAYER = "SUB01", "PAY01"
# valid NPIs (Luhn check digit over 80840 + 9 digits)
NPI_A, NPI_B, NPI_C = "1234567893", "1245319599", "1003000126"


def record(ftype: str, **fields: object) -> str:
    """A detail line; keyword names are element suffixes (`f024` for CDLMC024)."""
    rl = LAYOUT.record(ftype)
    values = [""] * len(rl.fields)
    values[-1] = ftype
    values[rl.pos(f"CDL{ftype}001")] = SUBMITTER
    values[rl.pos(f"CDL{ftype}002")] = PAYER
    for key, value in fields.items():
        values[rl.pos(f"CDL{ftype}{key[1:]}")] = str(value)
    return "|".join(values)


def cdl_file(
    path: Path,
    ftype: str,
    lines: list[str],
    *,
    count: int | None = None,
    column_row: bool = False,
    trailer: str | None = None,
    period: tuple[str, str] = ("202401", "202412"),
    delimiter: str = "|",
) -> Path:
    head = f"HD|{SUBMITTER}|{PAYER}|TEST PAYER|{ftype}|{period[0]}|{period[1]}|T|synthetic"
    out = [head]
    if column_row:
        out.append("|".join(f.field_id for f in LAYOUT.record(ftype).fields))
    out += lines
    n = len(lines) if count is None else count
    out.append(
        trailer if trailer is not None else f"TR|{SUBMITTER}|{PAYER}|TEST|{ftype}|20250101||{n}"
    )
    text = "\n".join(out) + "\n"
    if delimiter != "|":
        text = text.replace("|", delimiter)
    path.write_text(text, encoding="utf-8")
    return path


def member(member_id: str = "MEM001", start: str = "20240101", **extra: object) -> str:
    fields: dict[str, object] = {
        "f003": "PLAN-A",
        "f007": "GRP1",
        "f017": "18",
        "f018": "F",
        "f019": "19800214",
        "f020": "Testperson",
        "f021": "Alex",
        "f023": "1 Test St",
        "f024": "Sacramento",
        "f025": "CA",
        "f026": "95814",
        "f050": start,
        "f061": member_id,
        "f062": member_id,
    }
    fields.update(extra)
    return record("ME", **fields)


def medical(
    claim: str = "CLM1", line: int = 1, version: int = 0, member_id: str = "MEM001", **extra: object
) -> str:
    fields: dict[str, object] = {
        "f005": claim,
        "f006": line,
        "f007": version,
        "f018": "F",
        "f019": "19800214",
        "f024": "20240320",
        "f037": "E119",
        "f088": "80053",
        "f119": "20240301",
        "f120": "20240301",
        "f123": "100.00",
        "f125": "80.00",
        "f131": "90.00",
        "f135": NPI_A,
        "f148": NPI_B,
        "f160": "O",
        "f161": member_id,
    }
    fields.update(extra)
    return record("MC", **fields)


def pharmacy(claim: str = "RX1", member_id: str = "M1", **extra: object) -> str:
    fields: dict[str, object] = {
        "f005": claim,
        "f006": 1,
        "f007": 0,
        "f023": "20240305",
        "f024": "20240310",
        "f025": "00093715601",
        "f032": "30",
        "f033": "30",
        "f035": "7654321",
        "f036": "50.00",
        "f037": "40.00",
        "f051": NPI_A,
        "f057": NPI_B,
        "f068": member_id,
    }
    fields.update(extra)
    return record("PC", **fields)
