"""CDL layouts as data: one CSV file per CDL version under app/apcd/layouts/.

Each row is one element of one record type, in file order: record_type, field_id, name,
data_type, max_length, requirement (required/optional), format (the value check, see
app.apcd.validate) and confidence. A record is parsed by position, so the row order is the
layout. Supporting another CDL version (v2.1 back-files, v4.x) means adding a file
`cdl-<version>.csv`; `scripts/gen_apcd_layout.py` generates 3.0.1 from the project's data
dictionary.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from app.apcd.validate import Check, compile_format

__all__ = ["DETAIL_TYPES", "Field", "Layout", "LayoutError", "RecordLayout", "load_layout"]

LAYOUT_DIR = Path(__file__).resolve().parent / "layouts"
DETAIL_TYPES = ("ME", "MC", "PC", "DC", "PV")
_COLUMNS = {"record_type", "field_id", "name", "data_type", "max_length", "requirement", "format"}


class LayoutError(ValueError):
    """A layout file that cannot be used."""


@dataclass(frozen=True, slots=True)
class Field:
    field_id: str
    name: str
    max_length: int | None
    required: bool
    format: str
    check: Check | None


@dataclass(frozen=True, slots=True)
class RecordLayout:
    record_type: str
    fields: tuple[Field, ...]
    positions: dict[str, int] = field(default_factory=dict)

    def pos(self, field_id: str) -> int:
        return self.positions[field_id]


@dataclass(frozen=True, slots=True)
class Layout:
    version: str
    records: dict[str, RecordLayout]

    def record(self, record_type: str) -> RecordLayout:
        return self.records[record_type]


def available_versions() -> list[str]:
    return sorted(p.stem.removeprefix("cdl-") for p in LAYOUT_DIR.glob("cdl-*.csv"))


@cache
def load_layout(version_or_path: str) -> Layout:
    """The layout for a CDL version (`3.0.1`) or a layout file path."""
    path = Path(version_or_path)
    if not (path.suffix == ".csv" and path.is_file()):
        path = LAYOUT_DIR / f"cdl-{version_or_path}.csv"
        if not path.is_file():
            known = ", ".join(available_versions()) or "none"
            raise LayoutError(f"no CDL layout {version_or_path!r} (available: {known})")
    fields: dict[str, list[Field]] = {}
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = _COLUMNS - set(reader.fieldnames or ())
        if missing:
            raise LayoutError(f"{path.name}: missing columns {sorted(missing)}")
        for n, row in enumerate(reader, start=2):
            rtype = row["record_type"].strip()
            length = row["max_length"].strip()
            requirement = row["requirement"].strip()
            if requirement not in ("required", "optional"):
                raise LayoutError(f"{path.name} line {n}: requirement must be required/optional")
            try:
                check = compile_format(row["format"].strip())
                max_length = int(length) if length else None
            except ValueError as exc:
                raise LayoutError(f"{path.name} line {n}: {exc}") from None
            fields.setdefault(rtype, []).append(
                Field(
                    row["field_id"].strip(),
                    row["name"].strip(),
                    max_length,
                    requirement == "required",
                    row["format"].strip(),
                    check,
                )
            )
    for needed in ("HD", "TR"):
        if needed not in fields:
            raise LayoutError(f"{path.name}: no {needed} record layout")
    records = {
        rtype: RecordLayout(rtype, tuple(fl), {f.field_id: i for i, f in enumerate(fl)})
        for rtype, fl in fields.items()
    }
    return Layout(path.stem.removeprefix("cdl-"), records)
