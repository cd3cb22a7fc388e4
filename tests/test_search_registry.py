"""The search parameter registry comes from the official R4 definitions, for every type served."""

from __future__ import annotations

import pytest

from app.fhir.models import RESOURCE_TYPES
from app.fhir.search.registry import params_for


def test_every_served_type_has_the_common_parameters():
    for rtype in RESOURCE_TYPES:
        params = params_for(rtype)
        assert params["_id"].type == "token"
        assert params["_lastUpdated"].type == "date"
        assert params["_tag"].expression == "Resource.meta.tag"


@pytest.mark.parametrize(
    ("rtype", "code", "kind"),
    [
        # US Core required searches
        ("Patient", "identifier", "token"),
        ("Patient", "name", "string"),
        ("Patient", "birthdate", "date"),
        ("Patient", "gender", "token"),
        ("Encounter", "patient", "reference"),
        ("Encounter", "date", "date"),
        ("Observation", "patient", "reference"),
        ("Observation", "category", "token"),
        ("Observation", "code", "token"),
        ("Observation", "date", "date"),
        ("Observation", "value-quantity", "quantity"),
        ("Coverage", "beneficiary", "reference"),
        ("ExplanationOfBenefit", "patient", "reference"),
    ],
)
def test_us_core_parameters(rtype, code, kind):
    param = params_for(rtype)[code]
    assert param.type == kind
    assert param.expression and param.expression.lstrip("(").startswith(rtype)


def test_expressions_are_narrowed_to_the_type():
    code = params_for("Observation")["code"]
    assert code.expression == "Observation.code"  # not the shared multi-type union
    patient = params_for("Encounter")["patient"]
    assert patient.target == ("Patient",)


def test_composite_components():
    cvq = params_for("Observation")["code-value-quantity"]
    assert cvq.type == "composite"
    assert [c.param for c in cvq.components] == ["code", "value-quantity"]


def test_unknown_type():
    with pytest.raises(KeyError):
        params_for("Unicorn")
