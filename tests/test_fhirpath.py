"""The FHIRPath subset used for search index extraction."""

from __future__ import annotations

import pytest

from app.fhir.models import RESOURCE_TYPES
from app.fhir.search.fhirpath import FhirPathError, compile_path, evaluate
from app.fhir.search.registry import params_for

OBS = {
    "resourceType": "Observation",
    "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
    "subject": {"reference": "Patient/p1"},
    "performer": [{"reference": "Practitioner/d1"}, {"reference": "Patient/p1/_history/2"}],
    "valueQuantity": {"value": 72, "unit": "/min"},
    "effectiveDateTime": "2026-01-02",
}


def test_every_expression_of_every_served_type_compiles():
    for rtype in RESOURCE_TYPES:
        for param in params_for(rtype).values():
            if param.expression:
                compile_path(param.expression)
            for component in param.components:
                compile_path(component.expression, relative=True)


def test_paths_and_choice_types():
    assert evaluate("Observation.code.coding", OBS) == OBS["code"]["coding"]
    assert evaluate("(Observation.value as Quantity)", OBS) == [OBS["valueQuantity"]]
    assert evaluate("Observation.value.as(Quantity)", OBS) == [OBS["valueQuantity"]]
    assert evaluate("(Observation.value as CodeableConcept)", OBS) == []
    assert evaluate("Observation.effective", OBS) == ["2026-01-02"]
    assert evaluate("Patient.name", OBS) == []  # another type's expression selects nothing


def test_where_resolve_is():
    expr = "Observation.performer.where(resolve() is Patient)"
    assert evaluate(expr, OBS) == [{"reference": "Patient/p1/_history/2"}]
    assert evaluate("Observation.subject.where(resolve() is Group)", OBS) == []


def test_where_equals_and_union():
    patient = {
        "resourceType": "Patient",
        "telecom": [{"system": "phone", "value": "1"}, {"system": "email", "value": "a@b"}],
        "deceasedDateTime": "2020-01-01",
    }
    assert evaluate("Patient.telecom.where(system='email')", patient) == [patient["telecom"][1]]
    assert (
        evaluate(
            "Patient.telecom.where(system='phone') | Patient.telecom.where(system='email')", patient
        )
        == patient["telecom"]
    )
    assert evaluate("Patient.deceased.exists() and Patient.deceased != false", patient) == [True]
    assert evaluate(
        "Patient.deceased.exists() and Patient.deceased != false",
        {"resourceType": "Patient", "deceasedBoolean": False},
    ) == [False]


def test_relative_component():
    component = {"code": {"text": "x"}, "valueQuantity": {"value": 1}}
    fn = compile_path("value.as(Quantity) | value.as(Range)", relative=True)
    assert fn(component) == [{"value": 1}]


def test_index():
    bundle = {"resourceType": "Bundle", "entry": [{"resource": {"id": "a"}}, {"resource": {}}]}
    assert evaluate("Bundle.entry[0].resource", bundle) == [{"id": "a"}]


@pytest.mark.parametrize(
    "expr", ["Observation.code.first()", "Observation.where(x > 1)", "", "code"]
)
def test_unsupported_is_refused(expr):
    with pytest.raises(FhirPathError):
        compile_path(expr)


def test_percent_resource_in_components():
    seq = {
        "resourceType": "MolecularSequence",
        "referenceSeq": {"chromosome": {"text": "1"}},
        "variant": [{"start": 5}],
    }
    fn = compile_path("%resource.referenceSeq.chromosome", relative=True)
    assert fn(seq["variant"][0], seq) == [{"text": "1"}]


def test_common_parameter_roots_match_every_type():
    obs = {**OBS, "meta": {"tag": [{"system": "urn:t", "code": "x"}]}}
    assert evaluate("Resource.meta.tag", obs) == [{"system": "urn:t", "code": "x"}]
