"""APCD-CDL layouts, value checks and the streaming reader (no database)."""

from __future__ import annotations

import csv
import hashlib
import importlib.util
from pathlib import Path

import pytest

from app.apcd import reader
from app.apcd.layout import LayoutError, load_layout
from app.apcd.reader import FileRejected, lines, scan
from app.apcd.validate import compile_format, npi_is_valid
from tests.apcd_files import LAYOUT, NPI_A, cdl_file, medical, member


def test_layout_is_data_with_every_file_type():
    assert set(LAYOUT.records) == {"HD", "TR", "ME", "MC", "PC", "DC", "PV"}
    mc = LAYOUT.record("MC")
    assert mc.fields[0].field_id == "CDLMC001"
    assert mc.fields[-1].field_id == "CDLMC899"
    assert mc.fields[mc.pos("CDLMC037")].format == "icd10cm"
    assert mc.fields[mc.pos("CDLMC005")].required
    assert mc.fields[mc.pos("CDLMC005")].max_length == 35


def test_another_version_loads_by_adding_a_layout_file(tmp_path):
    path = tmp_path / "cdl-2.1.csv"
    path.write_text(
        "record_type,field_id,name,data_type,max_length,requirement,format,confidence\n"
        "HD,CDLHD001,Record Type,text,2,required,enum:HD,x\n"
        "TR,CDLTR001,Record Type,text,2,required,enum:TR,x\n"
        "ME,CDLME061,Member ID,varchar,50,required,,x\n"
        "ME,CDLME899,Record Type,char,2,required,enum:ME,x\n",
        encoding="utf-8",
    )
    layout = load_layout(str(path))
    assert layout.version == "2.1"
    assert [f.field_id for f in layout.record("ME").fields] == ["CDLME061", "CDLME899"]
    with pytest.raises(LayoutError, match="no CDL layout"):
        load_layout("9.9.9")
    bad = tmp_path / "cdl-bad.csv"
    bad.write_text(
        "record_type,field_id,name,data_type,max_length,requirement,format\n"
        "HD,CDLHD001,Record Type,text,2,required,nonsense\n",
        encoding="utf-8",
    )
    with pytest.raises(LayoutError, match="unknown format"):
        load_layout(str(bad))


@pytest.mark.parametrize(
    ("fmt", "good", "bad"),
    [
        ("icd10cm", ["E119", "I10", "Z0000", "S72001A", "U071"], ["E11.9", "119", "E1", "e119"]),
        ("icd10pcs", ["0DTJ4ZZ", "02703DZ"], ["0DTJ4Z", "0DTJ4ZI", "0DTJ4ZZZ"]),
        ("cpt_hcpcs", ["99213", "3044F", "0001U", "G0439", "J1100"], ["9921", "W1234", "3044X"]),
        ("ndc", ["00093715601"], ["0009371560", "0009-3715-601"]),
        ("date", ["20240229", "19991231"], ["20230229", "2024-01-01", "20241301"]),
        ("npi", [NPI_A], ["1234567890", "3234567893", "123456789"]),
        ("enum:M,F,U", ["M", "U"], ["X", "male"]),
    ],
)
def test_value_checks(fmt, good, bad):
    check = compile_format(fmt)
    assert check is not None
    assert [check(v) for v in good] == [None] * len(good)
    assert all(check(v) for v in bad)


def test_npi_check_digit():
    assert npi_is_valid("1234567893")
    assert not npi_is_valid("1234567894")


def test_scan_reads_header_trailer_and_skips_the_column_row(tmp_path):
    path = cdl_file(tmp_path / "f.txt", "ME", [member("A"), member("B")], column_row=True)
    env = scan(path, LAYOUT)
    assert (env.file_type, env.submitter, env.payer, env.record_count) == (
        "ME",
        "SUB01",
        "PAY01",
        2,
    )
    assert env.column_row_line == 2
    parsed = list(lines(env, LAYOUT))
    assert [p.line for p in parsed] == [3, 4]
    assert all(p.values is not None for p in parsed)


def test_delimiter_is_configurable(tmp_path):
    path = cdl_file(tmp_path / "f.txt", "ME", [member("A")], delimiter="*")
    with pytest.raises(FileRejected):
        scan(path, LAYOUT)
    env = scan(path, LAYOUT, "*")
    assert [p.values is not None for p in lines(env, LAYOUT, "*")] == [True]


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"count": 3}, "declares 3 detail records, the file has 2"),
        ({"trailer": "TR|OTHER|PAY01|TEST|ME|20250101||2"}, "data submitter code differs"),
        ({"trailer": "TR|SUB01|PAY01|TEST|MC|20250101||2"}, "file type differs"),
        ({"trailer": "TR|SUB01|PAY01|TEST|ME|20250101||two"}, "CDLTR008"),
        ({"trailer": "ME|SUB01"}, "not a trailer"),
        ({"period": ("202412", "202401")}, "ends before it begins"),
        ({"period": ("202413", "202412")}, "CDLHD006"),
    ],
)
def test_unusable_header_or_trailer_rejects_the_file(tmp_path, kwargs, reason):
    path = cdl_file(tmp_path / "f.txt", "ME", [member("A"), member("B")], **kwargs)
    with pytest.raises(FileRejected, match=reason):
        scan(path, LAYOUT)


def test_empty_or_headerless_files_are_rejected(tmp_path):
    (tmp_path / "empty.txt").write_text("", encoding="utf-8")
    with pytest.raises(FileRejected, match="no header"):
        scan(tmp_path / "empty.txt", LAYOUT)
    (tmp_path / "nohd.txt").write_text(member("A") + "\nTR|SUB01|PAY01|T|ME|20250101||1\n")
    with pytest.raises(FileRejected, match="not a header"):
        scan(tmp_path / "nohd.txt", LAYOUT)


def test_bad_lines_name_the_element_and_reason_without_the_value(tmp_path):
    good = medical("C1")
    bad_code = medical("C2", f037="E11.9")
    missing = medical("C3", f161="")
    wrong_type = member("X")  # an ME record in an MC file
    short = "SUB01|PAY01|MC"
    late_paid = medical("C4", f024="20250301")
    bad_npi = medical("C5", f135="1234567890")
    path = cdl_file(
        tmp_path / "mc.txt", "MC", [good, bad_code, missing, wrong_type, short, late_paid, bad_npi]
    )
    env = scan(path, LAYOUT)
    parsed = {p.line: p for p in lines(env, LAYOUT)}
    assert parsed[2].values is not None and not parsed[2].errors
    assert [(e.field_id, e.reason) for e in parsed[3].errors] == [
        ("CDLMC037", "not a valid ICD-10-CM code")
    ]
    assert [(e.field_id, e.reason) for e in parsed[4].errors] == [
        ("CDLMC161", "required element is empty")
    ]
    assert parsed[5].values is None and parsed[5].errors[0].field_id == "-"
    assert "has 3 fields" in parsed[6].errors[0].reason
    assert [(e.field_id, e.reason) for e in parsed[7].errors] == [
        ("CDLMC024", "paid date outside the HD period")
    ]
    assert parsed[8].errors[0].field_id == "CDLMC135"
    for p in parsed.values():
        for e in p.errors:
            assert e.file == "mc.txt" and e.line == p.line
            assert "E11.9" not in e.reason and "1234567890" not in e.reason


def test_a_record_of_another_type_is_a_line_error(tmp_path):
    rl = LAYOUT.record("ME")
    line = member("A").split("|")
    line[-1] = "PV"
    path = cdl_file(tmp_path / "me.txt", "ME", ["|".join(line)])
    env = scan(path, LAYOUT)
    (parsed,) = list(lines(env, LAYOUT))
    assert parsed.values is None
    assert parsed.errors[0].field_id == rl.fields[-1].field_id
    assert "record type PV, the file is ME" in parsed.errors[0].reason


def test_an_overlong_line_is_a_line_error_and_is_never_held_whole(tmp_path, monkeypatch):
    monkeypatch.setattr(reader, "MAX_LINE_BYTES", 4096)
    path = cdl_file(tmp_path / "me.txt", "ME", [member("A"), "X" * 50_000, member("B")])
    env = scan(path, LAYOUT)
    assert env.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    parsed = list(lines(env, LAYOUT))
    assert [p.line for p in parsed] == [2, 3, 4]
    assert parsed[1].values is None
    assert parsed[1].errors[0].reason == "the line is longer than 4096 bytes"
    assert parsed[2].values is not None
    (tmp_path / "nolf.txt").write_bytes(b"HD|" + b"Y" * 100_000)
    with pytest.raises(FileRejected):
        scan(tmp_path / "nolf.txt", LAYOUT)


REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "apcd-cdl-fields.csv"


@pytest.mark.skipif(not REFERENCE.is_file(), reason="the shared CDL data dictionary is not here")
def test_the_shipped_layout_is_what_the_generator_makes_from_the_data_dictionary():
    spec = importlib.util.spec_from_file_location(
        "gen_apcd_layout", Path(__file__).resolve().parents[1] / "scripts" / "gen_apcd_layout.py"
    )
    assert spec is not None and spec.loader is not None
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    with gen.OUT.open(newline="", encoding="utf-8") as f:
        shipped = list(csv.reader(f))
    assert shipped == [gen.COLUMNS, *gen.build(REFERENCE)]
    # and the ME/MC/PC ids, names and lengths are the dictionary's
    with REFERENCE.open(newline="", encoding="utf-8") as f:
        reference = {
            r["field_id"]: (r["name"], r["max_length"])
            for r in csv.DictReader(f)
            if r["file_type"] in ("ME", "MC", "PC")
        }
    for row in shipped[1:]:
        if row[0] in ("ME", "MC", "PC"):
            assert reference[row[1]] == (row[2], row[4])
