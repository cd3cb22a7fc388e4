"""`dxf-bridge synth apcd` and `dxf-bridge import-apcd`, end to end through main()."""

from __future__ import annotations

import asyncio
import csv
import io

import orjson
import pytest
from pydantic import ValidationError
from sqlalchemy import func, select

from app.apcd.report import ProgressBar
from app.apcd.synth import write_apcd_files
from app.cli import main
from app.db import Database
from app.settings import Settings
from app.store.tables import apcd_import, resource
from tests.apcd_files import cdl_file, medical


def _query(url: str, statement):  # a fresh handle: the CLI runs its own event loop
    async def go():
        db = Database(url)
        try:
            async with db.read() as conn:
                return [tuple(r) for r in await conn.execute(statement)]
        finally:
            await db.dispose()

    return asyncio.run(go())


def _counts(db) -> dict[str, int]:
    statement = select(resource.c.res_type, func.count()).group_by(resource.c.res_type)
    return dict(_query(db.url, statement))


def test_synth_is_seeded_and_marks_its_bad_lines(tmp_path):
    a = write_apcd_files(tmp_path / "a", members=30, seed=11, bad_share=0.05)
    b = write_apcd_files(tmp_path / "b", members=30, seed=11, bad_share=0.05)
    for kind in ("ME", "MC", "PC", "DC", "PV"):
        assert a.files[kind].read_bytes() == b.files[kind].read_bytes()
    assert sum(a.bad_lines.values()) > 0
    text = a.files["MC"].read_text().splitlines()
    assert text[0].startswith("HD|") and text[-1].startswith("TR|")
    assert text[-1].endswith(f"|{len(text) - 2}")
    claim_lines = [line.split("|") for line in text[1:-1]]
    assert any(v[-5] == "R" for v in claim_lines) and any(v[-5] == "V" for v in claim_lines)


def test_import_command_end_to_end(db, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DXF_DATABASE_URL", db.url)
    out = tmp_path / "synth"
    assert (
        main(["synth", "apcd", "--members", "25", "--seed", "4", "--bad-share", "0.04", str(out)])
        == 0
    )
    made = write_apcd_files(tmp_path / "again", members=25, seed=4, bad_share=0.04)
    files = [str(out / made.files[k].name) for k in ("ME", "PV", "MC", "PC", "DC")]
    report = tmp_path / "errors.csv"
    assert main(["import-apcd", *files, "--report", str(report)]) == 0
    printed = capsys.readouterr().out
    assert "synth-4-mc.txt: imported; MC lines read" in printed
    assert "total: 5 file(s)" in printed
    with report.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == sum(made.bad_lines.values())
    assert all(r["line"].isdigit() and r["field_id"] for r in rows)
    counts = _counts(db)
    assert 0 < counts["Patient"] <= 25
    assert counts["ExplanationOfBenefit"] > 0 and counts["MedicationDispense"] > 0

    # a second run changes nothing
    assert main(["import-apcd", *files]) == 0
    assert "already-imported" in capsys.readouterr().out
    assert _counts(db) == counts

    # dry run, a JSON report and a rejected file (exit code 1)
    bad = cdl_file(tmp_path / "bad.txt", "MC", [medical("C1")], count=9)
    report_json = tmp_path / "errors.json"
    code = main(["import-apcd", "--dry-run", str(bad), "--report", str(report_json)])
    assert code == 1
    rows = orjson.loads(report_json.read_bytes())
    assert rows == [
        {
            "file": "bad.txt",
            "line": None,
            "field_id": "",
            "reason": "the trailer declares 9 detail records, the file has 1",
        }
    ]
    assert main(["import-apcd", "--layout", "0.0", files[0]]) == 2
    assert main(["import-apcd", str(tmp_path / "missing.txt")]) == 2

    assert _query(db.url, select(apcd_import.c.status)) == [("complete",)] * 5


def test_progress_bar_shows_rate_and_eta():
    out = io.StringIO()
    bar = ProgressBar(out, width=10, min_interval=0.0)
    bar("mc.txt", 0, 1000)
    bar("mc.txt", 500, 1000)
    bar("mc.txt", 1000, 1000)
    text = out.getvalue()
    assert "\rmc.txt [#####.....]  50% 500/1,000 lines" in text
    assert "lines/s ETA " in text
    assert "[##########] 100% 1,000/1,000 lines" in text
    assert text.endswith("\n")


def test_apcd_settings_are_validated(monkeypatch):
    monkeypatch.setenv("DXF_APCD_LINK_IDENTIFIERS", "CDLME075=http://hl7.org/fhir/sid/us-mbi")
    monkeypatch.setenv("DXF_APCD_VALIDATION_WORKERS", "0")
    settings = Settings()
    assert settings.apcd_link_identifiers.startswith("CDLME075=")
    assert (settings.apcd_validation_workers, settings.apcd_batch_lines) == (0, 2000)
    for name, bad in (
        ("DXF_APCD_LINK_IDENTIFIERS", "CDLMC161=urn:x"),
        ("DXF_APCD_VALIDATION_WORKERS", "-1"),
        ("DXF_APCD_DELIMITER", "||"),
        ("DXF_APCD_BATCH_LINES", "0"),
    ):
        with monkeypatch.context() as m:
            m.setenv(name, bad)
            with pytest.raises(ValidationError):
                Settings()


def test_an_unmigrated_database_gets_a_clear_answer(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DXF_DATABASE_URL", f"sqlite:///{tmp_path / 'empty.db'}")
    path = cdl_file(tmp_path / "mc.txt", "MC", [medical("C1")])
    assert main(["import-apcd", str(path)]) == 1
    err = capsys.readouterr().err
    assert "database error (OperationalError)" in err and "dxf-bridge migrate" in err
