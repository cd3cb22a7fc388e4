"""Streaming reader and validator for one APCD-CDL file.

File structure (CDL §"file format", as restated in the reference notes): one record per line,
fields separated by a delimiter (`|` by default, configurable), no quoting; the first record is
the header (HD), the last the trailer (TR); an optional column-name row (`CDLMC001|...`) may follow
the header and is skipped; every detail record ends with its record type (`ME`, `MC`, `PC`, `DC`,
`PV`). The file type comes from the records, and must agree with the header and trailer.

Two passes, both streaming, so memory does not grow with the file:

1. `scan` reads the bytes once: SHA-256 (the import journal's key), the header, the trailer and
   the number of detail lines. An unusable header or trailer (missing, malformed, disagreeing
   with each other, a record count that differs from the lines present, a period that ends
   before it begins) raises FileRejected before anything is imported.
2. `lines` yields every detail line, parsed against the layout and checked element by element
   (required, length, format, record type, paid date within the header's period). A line with
   any error carries its errors and no values; the importer reports and skips it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, BinaryIO

from app.apcd.layout import DETAIL_TYPES, Layout, RecordLayout
from app.apcd.validate import ICD9_FORMATS, parse_date

__all__ = ["Envelope", "FileRejected", "LineError", "ParsedLine", "lines", "scan"]

_COLUMN_ROW = re.compile(rb"\s*CDL[A-Z]{2}\d{3}\s*")
# Longer lines are reported (and read past in chunks), never held whole: memory stays bounded
# even for a file without line breaks. The longest CDL record is a few thousand bytes.
MAX_LINE_BYTES = 64 * 1024
# Paid dates must fall inside the header's reporting period.
PAID_DATE = {"MC": "CDLMC024", "PC": "CDLPC024", "DC": "CDLDC012"}


class FileRejected(Exception):
    """The file as a whole cannot be imported; nothing from it is stored."""


@dataclass(frozen=True, slots=True)
class LineError:
    file: str
    line: int
    field_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class Envelope:
    path: Path
    sha256: str
    file_type: str
    submitter: str
    payer: str
    period_start: date
    period_end: date
    record_count: int
    production: bool
    header_line: int
    column_row_line: int | None
    trailer_line: int


@dataclass(frozen=True, slots=True)
class ParsedLine:
    line: int
    values: list[str] | None
    errors: tuple[LineError, ...] = ()


def _physical_lines(f: BinaryIO, digest: Any = None) -> Iterator[tuple[bytes, bool]]:
    """(line, too long) for each line; a too-long line is cut at MAX_LINE_BYTES."""
    while True:
        raw = f.readline(MAX_LINE_BYTES + 1)
        if not raw:
            return
        if digest is not None:
            digest.update(raw)
        if len(raw) <= MAX_LINE_BYTES or raw.endswith(b"\n"):
            yield raw, False
            continue
        while True:  # read past the rest of the line
            more = f.readline(1 << 20)
            if digest is not None:
                digest.update(more)
            if not more or more.endswith(b"\n"):
                break
        yield raw[:MAX_LINE_BYTES], True


def _split(raw: bytes, delimiter: str) -> list[str]:
    return [v.strip() for v in raw.decode("utf-8").rstrip("\r\n").split(delimiter)]


def _check_control(
    name: str, raw: bytes, rl: RecordLayout, delimiter: str
) -> tuple[list[str], list[str]]:
    try:
        values = _split(raw, delimiter)
    except UnicodeDecodeError:
        return [], [f"{name} is not valid UTF-8"]
    if len(values) != len(rl.fields):
        return values, [f"{name} has {len(values)} fields, the layout has {len(rl.fields)}"]
    problems = []
    for f, v in zip(rl.fields, values, strict=True):
        if not v:
            if f.required:
                problems.append(f"{name} {f.field_id} ({f.name}) is empty")
            continue
        reason = f.check(v) if f.check else None
        if f.max_length and len(v) > f.max_length:
            reason = f"longer than {f.max_length} characters"
        if reason:
            problems.append(f"{name} {f.field_id} ({f.name}): {reason}")
    return values, problems


def scan(path: Path, layout: Layout, delimiter: str = "|") -> Envelope:
    """Hash the file and check its header and trailer; raise FileRejected when unusable."""
    digest = hashlib.sha256()
    first: tuple[int, bytes] | None = None
    second: tuple[int, bytes] | None = None
    last: tuple[int, bytes] | None = None
    nonblank = 0
    too_long: set[int] = set()
    with path.open("rb") as f:
        for n, (raw, long_line) in enumerate(_physical_lines(f, digest), start=1):
            if not raw.strip():
                continue
            nonblank += 1
            if long_line:
                too_long.add(n)
            if first is None:
                first = (n, raw)
            elif second is None:
                second = (n, raw)
            last = (n, raw)
    if first is None or last is None or nonblank < 2:
        raise FileRejected("the file has no header and trailer records")
    if first[0] in too_long or last[0] in too_long:
        raise FileRejected(f"the header or trailer is longer than {MAX_LINE_BYTES} bytes")
    delim = delimiter.encode()
    if not first[1].lstrip().startswith(b"HD" + delim):
        raise FileRejected("the first record is not a header (HD) record")
    if not last[1].lstrip().startswith(b"TR" + delim):
        raise FileRejected("the last record is not a trailer (TR) record")
    hd, hd_problems = _check_control("header", first[1], layout.record("HD"), delimiter)
    tr, tr_problems = _check_control("trailer", last[1], layout.record("TR"), delimiter)
    if hd_problems or tr_problems:
        raise FileRejected("; ".join(hd_problems + tr_problems))
    h, t = layout.record("HD"), layout.record("TR")
    submitter, payer = hd[h.pos("CDLHD002")], hd[h.pos("CDLHD003")]
    file_type = hd[h.pos("CDLHD005")]
    for fid, label, expected in (
        ("CDLTR002", "data submitter code", submitter),
        ("CDLTR003", "payer code", payer),
        ("CDLTR005", "file type", file_type),
    ):
        if tr[t.pos(fid)] != expected:
            raise FileRejected(f"the trailer's {label} differs from the header's")
    if file_type not in layout.records:
        raise FileRejected(f"layout {layout.version} has no {file_type} record layout")
    begin, end = hd[h.pos("CDLHD006")], hd[h.pos("CDLHD007")]
    if end < begin:
        raise FileRejected("the header's period ends before it begins")
    column_row = None
    if second is not None and second is not last:
        token = second[1].split(delim, 1)[0]
        if _COLUMN_ROW.fullmatch(token):
            column_row = second[0]
    details = nonblank - 2 - (1 if column_row else 0)
    declared = int(tr[t.pos("CDLTR008")])
    if declared != details:
        raise FileRejected(
            f"the trailer declares {declared} detail records, the file has {details}"
        )
    period_start = date(int(begin[:4]), int(begin[4:]), 1)
    end_year, end_month = int(end[:4]), int(end[4:])
    next_month = date(end_year + end_month // 12, end_month % 12 + 1, 1)
    return Envelope(
        path=path,
        sha256=digest.hexdigest(),
        file_type=file_type,
        submitter=submitter,
        payer=payer,
        period_start=period_start,
        period_end=date.fromordinal(next_month.toordinal() - 1),
        record_count=details,
        production=hd[h.pos("CDLHD008")] != "T",
        header_line=first[0],
        column_row_line=column_row,
        trailer_line=last[0],
    )


def lines(
    env: Envelope, layout: Layout, delimiter: str = "|", *, after_line: int = 0
) -> Iterator[ParsedLine]:
    """Every detail line after `after_line`, parsed and checked."""
    rl = layout.record(env.file_type)
    fields = rl.fields
    width = len(fields)
    name = env.path.name
    type_id = fields[-1].field_id
    paid_pos = rl.positions.get(PAID_DATE.get(env.file_type, ""))
    skip = {env.header_line, env.trailer_line, env.column_row_line}
    # an "ICD Version Indicator" of 9 switches the ICD-10 checks to ICD-9-CM
    icd_pos = next((i for i, f in enumerate(fields) if f.name == "ICD Version Indicator"), None)
    icd9 = {i: ICD9_FORMATS[f.format] for i, f in enumerate(fields) if f.format in ICD9_FORMATS}
    required = [i for i, f in enumerate(fields) if f.required]
    with env.path.open("rb") as f:
        for n, (raw, long_line) in enumerate(_physical_lines(f), start=1):
            if n <= after_line or n in skip or not raw.strip():
                continue
            if n > env.trailer_line:
                break
            if long_line:
                reason = f"the line is longer than {MAX_LINE_BYTES} bytes"
                yield ParsedLine(n, None, (LineError(name, n, "-", reason),))
                continue
            try:
                values = _split(raw, delimiter)
            except UnicodeDecodeError:
                yield ParsedLine(n, None, (LineError(name, n, "-", "not valid UTF-8"),))
                continue
            if len(values) != width:
                reason = f"has {len(values)} fields, the {env.file_type} layout has {width}"
                yield ParsedLine(n, None, (LineError(name, n, "-", reason),))
                continue
            errors: list[LineError] = []
            if values[-1] != env.file_type:
                kind = values[-1] if values[-1] in DETAIL_TYPES else "unknown"
                errors.append(
                    LineError(name, n, type_id, f"record type {kind}, the file is {env.file_type}")
                )
            coded_icd9 = icd_pos is not None and values[icd_pos] == "9"
            # most elements are empty: look at the required ones, then at the ones with a value
            problems = [(i, "required element is empty") for i in required if not values[i]]
            for i in [i for i, v in enumerate(values) if v]:
                f_, v = fields[i], values[i]
                if f_.max_length and len(v) > f_.max_length:
                    problems.append((i, f"longer than {f_.max_length} characters"))
                elif f_.check is not None:
                    reason = icd9[i](v) if coded_icd9 and i in icd9 else f_.check(v)
                    if reason:
                        problems.append((i, reason))
            if problems:  # reported in element order
                problems.sort(key=lambda p: p[0])
                errors += [LineError(name, n, fields[i].field_id, r) for i, r in problems]
            if paid_pos is not None and not errors:
                paid = parse_date(values[paid_pos])
                if paid and not env.period_start <= paid <= env.period_end:
                    errors.append(
                        LineError(
                            name, n, fields[paid_pos].field_id, "paid date outside the HD period"
                        )
                    )
            yield ParsedLine(n, None if errors else values, tuple(errors))
