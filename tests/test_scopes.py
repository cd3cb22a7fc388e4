"""SMART scope grammar (v1 and v2) compiled into an AccessPolicy."""

from __future__ import annotations

import pytest

from app.auth.scopes import parse_scope, policy_from_scopes
from app.errors import Forbidden


@pytest.mark.parametrize(
    ("scope", "context", "rtype", "perms"),
    [
        ("patient/Observation.read", "patient", "Observation", "rs"),
        ("user/Patient.write", "user", "Patient", "cud"),
        ("system/*.*", "system", "*", "cruds"),
        ("system/*.read", "system", "*", "rs"),
        ("patient/Observation.rs", "patient", "Observation", "rs"),
        ("system/*.cruds", "system", "*", "cruds"),
        ("user/Encounter.cu", "user", "Encounter", "cu"),
        ("patient/Patient.r", "patient", "Patient", "r"),
    ],
)
def test_parse_clinical_scopes(scope, context, rtype, perms):
    grant = parse_scope(scope)
    assert grant is not None
    assert (grant.context, grant.resource_type, grant.permissions) == (
        context,
        rtype,
        frozenset(perms),
    )


@pytest.mark.parametrize(
    "scope",
    [
        "openid",
        "fhirUser",
        "launch/patient",
        "offline_access",
        "patient/Observation.sr",  # v2 letters out of order
        "patient/Observation.rr",
        "patient/Observation.x",
        "admin/*.read",
        "patient/observation.read",
        "patient/Observation.rs?category=laboratory",  # constraints: not honoured -> no grant
    ],
)
def test_non_grants(scope):
    assert parse_scope(scope) is None


def test_policy_system_is_unrestricted():
    policy = policy_from_scopes(["system/*.rs"], None)
    assert policy.restriction("Observation", "r") is None
    with pytest.raises(Forbidden):
        policy.restriction("Observation", "c")


def test_policy_patient_confines_to_compartment():
    policy = policy_from_scopes(["patient/Observation.rs", "patient/Patient.r"], "p1")
    assert policy.restriction("Observation", "s") == "p1"
    assert policy.restriction("Patient", "r") == "p1"
    with pytest.raises(Forbidden):
        policy.restriction("Patient", "s")
    with pytest.raises(Forbidden):
        policy.restriction("Encounter", "r")


def test_patient_scopes_without_patient_context_grant_nothing():
    policy = policy_from_scopes(["patient/*.rs"], None)
    with pytest.raises(Forbidden):
        policy.restriction("Observation", "r")


def test_user_grant_beats_patient_grant():
    policy = policy_from_scopes(["patient/*.rs", "user/Observation.rs"], "p1")
    assert policy.restriction("Observation", "r") is None
    assert policy.restriction("Condition", "r") == "p1"
