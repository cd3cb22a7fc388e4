"""Docs stay in step with the code: every setting is documented."""

from __future__ import annotations

from pathlib import Path

from app.settings import Settings

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_every_setting_is_documented():
    text = (DOCS / "configuration.md").read_text()
    missing = [f"DXF_{n.upper()}" for n in Settings.model_fields if f"DXF_{n.upper()}" not in text]
    assert missing == []
