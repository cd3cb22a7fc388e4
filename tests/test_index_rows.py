"""index_rows (one pass over a resource, used by the write path) gives exactly the rows of
the per-table extraction functions."""

from __future__ import annotations

from typing import Any

from app.fhir.search.extract import (
    date_rows,
    index_rows,
    quantity_rows,
    reference_rows,
    string_rows,
    token_rows,
)
from conformance.samples import SAMPLES, fill
from tests.conftest import FHIR_BASE
from tests.test_fast_validation import mapped_resources


def _bodies(tmp_path: Any) -> list[dict[str, Any]]:
    out = mapped_resources(tmp_path)
    for sample in SAMPLES.values():
        out += [fill(sample.a, "pa", "pb"), fill(sample.b, "pa", "pb")]
    out.append(
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "HR"}]},
            "subject": {"reference": f"{FHIR_BASE}/Patient/p1"},
            "valueQuantity": {"value": 72, "unit": "/min", "system": "http://unitsofmeasure.org"},
            "effectivePeriod": {"start": "2024-01-01", "end": "2024-01-02"},
        }
    )
    return out


def test_index_rows_match_the_per_table_functions(tmp_path):
    bodies = _bodies(tmp_path)
    assert len({b["resourceType"] for b in bodies}) > 10
    for body in bodies:
        found = index_rows(body, FHIR_BASE)
        assert found.tokens == token_rows(body)
        assert found.dates == date_rows(body)
        assert found.quantities == quantity_rows(body)
        assert found.strings == string_rows(body)
        assert found.references == reference_rows(body, FHIR_BASE)
    assert any(index_rows(b, FHIR_BASE).quantities for b in bodies)
    assert any(r[0].endswith(":text") for b in bodies for r in index_rows(b, FHIR_BASE).strings)


def test_a_body_without_a_type_has_no_rows():
    found = index_rows({"resourceType": 5, "id": "x"}, FHIR_BASE)
    assert (found.tokens, found.dates, found.quantities, found.strings, found.references) == (
        [],
        [],
        [],
        [],
        [],
    )
