"""ER7 tokenising: separators, BOM, declared delimiters, MSH-18 charset, escapes, batches."""

from __future__ import annotations

import pytest

from app.hl7.parse import Hl7Error, parse_message, split_batch

BASE = (
    "MSH|^~\\&|APP|FAC|DXF|DXF|20260101||ADT^A01|C1|P|2.5.1{extra}{sep}"
    "PID|1||M1^^^H^MR||DOE^JANE{sep}"
)


@pytest.mark.parametrize("sep", ["\r", "\n", "\r\n"])
def test_segment_separators(sep: str):
    msg = parse_message(BASE.format(extra="", sep=sep).encode())
    assert [s.name for s in msg.segments] == ["MSH", "PID"]
    assert msg.first("PID").c(5, 2) == "JANE"


def test_utf8_bom_is_skipped():
    msg = parse_message(b"\xef\xbb\xbf" + BASE.format(extra="", sep="\r").encode())
    assert msg.control_id == "C1"


def test_msh18_decides_the_character_set():
    text = BASE.format(extra="||||||8859/1", sep="\r").replace("JANE", "JOSÉ")
    msg = parse_message(text.encode("latin-1"))
    assert msg.first("PID").c(5, 2) == "JOSÉ" and msg.codec == "latin-1"


def test_undecodable_bytes_are_a_located_error():
    bad = BASE.format(extra="", sep="\r").encode().replace(b"JANE", b"J\xffNE")
    with pytest.raises(Hl7Error) as err:
        parse_message(bad)
    assert err.value.location == ("MSH", 1, 18, 1)


def test_default_charset_is_configurable():
    text = BASE.format(extra="", sep="\r").replace("JANE", "JOSÉ").encode("latin-1")
    assert parse_message(text, default_codec="latin-1").first("PID").c(5, 2) == "JOSÉ"


def test_declared_delimiters_and_escapes():
    raw = (
        "MSH#*@!$#APP#FAC#DXF#DXF#20260101##ADT*A01#C1#P#2.5\r"
        "NTE#1##a!T!b!F!c!S!d!E!e!R!f!.br!g!X41!\r"
    )
    msg = parse_message(raw.encode())
    assert msg.trigger_event == "A01"
    assert msg.first("NTE").text(3) == "a$b#c*d!e@f\ngA"


@pytest.mark.parametrize(
    "raw",
    [b"MSH|^|A|B\r", b"MSH|^^~\\&|A\r", b"MSH|0000|A\r", b"MSH|^ \\E|A\r", b"MSH"],
)
def test_bad_encoding_characters(raw: bytes):
    with pytest.raises(Hl7Error):
        parse_message(raw)


def test_explicit_null_is_not_a_value():
    msg = parse_message(b'MSH|^~\\&|A|B|C|D|2026||ADT^A08|C|P|2.5\rPID|1||M||""\r')
    pid = msg.first("PID")
    assert pid.raw(5) == '""' and pid.c(5) == "" and not pid.rep(5)


def test_batch_split_with_envelopes_and_junk():
    data = (
        b"FHS|^~\\&|A\rBHS|^~\\&|A\r"
        + BASE.format(extra="", sep="\r").encode()
        + b"// a comment\r"
        + BASE.format(extra="", sep="\n").replace("C1", "C2").encode()
        + b"BTS|2\rFTS|1\r"
    )
    items = split_batch(data)
    assert len(items) == 3
    assert items[0] == b"// a comment\r"
    assert [parse_message(i).control_id for i in items[1:]] == ["C1", "C2"]
