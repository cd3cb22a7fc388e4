"""Patient compartment membership (https://hl7.org/fhir/R4/compartmentdefinition-patient.html)."""

from __future__ import annotations

from app.fhir.compartments import patient_ids_of, reference_target

BASE = "http://example.org/fhir"


def test_reference_forms():
    assert reference_target("Patient/1", BASE) == ("Patient", "1")
    assert reference_target("Patient/1/_history/3", BASE) == ("Patient", "1")
    assert reference_target(f"{BASE}/Patient/1", BASE) == ("Patient", "1")
    assert reference_target("http://other.org/fhir/Patient/1", BASE) is None
    assert reference_target("#contained", BASE) is None
    assert reference_target("urn:uuid:abc", BASE) is None
    assert reference_target("Patient?identifier=x", BASE) is None


def test_membership_by_type():
    cases = [
        (
            {
                "resourceType": "Patient",
                "id": "p1",
                "link": [{"other": {"reference": "Patient/p2"}}],
            },
            {"p1", "p2"},
        ),
        (
            {
                "resourceType": "Observation",
                "subject": {"reference": "Patient/p1"},
                "performer": [{"reference": "Patient/p2"}, {"reference": "Practitioner/x"}],
            },
            {"p1", "p2"},
        ),
        ({"resourceType": "Encounter", "subject": {"reference": "Group/g"}}, set()),
        (
            {
                "resourceType": "Coverage",
                "beneficiary": {"reference": "Patient/b"},
                "subscriber": {"reference": "Patient/s"},
                "payor": [{"reference": "Organization/o"}],
            },
            {"b", "s"},
        ),
        (
            {
                "resourceType": "Procedure",
                "subject": {"reference": "Patient/p"},
                "performer": [{"actor": {"reference": "Patient/q"}}],
            },
            {"p", "q"},
        ),
        ({"resourceType": "Task", "for": {"reference": "Patient/t"}}, {"t"}),
        ({"resourceType": "Practitioner", "id": "x"}, set()),
        ({"resourceType": "Observation", "subject": {"reference": f"{BASE}/Patient/abs"}}, {"abs"}),
    ]
    for resource, expected in cases:
        assert patient_ids_of(resource, BASE) == expected, resource["resourceType"]
