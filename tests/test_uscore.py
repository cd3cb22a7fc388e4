"""US Core 6.1.0: the table, the claims the CapabilityStatement makes from it, and the
meta.profile the HL7v2 and APCD-CDL mappers stamp on what they write."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest

from app.fhir.models import validate_resource
from app.fhir.rest import metadata
from app.fhir.rest.router import ROUTES
from app.fhir.search.criteria import search_params
from app.fhir.uscore import (
    BY_SLUG,
    PROFILES,
    SEARCH_PATHS,
    TypeCapabilities,
    instance_of,
    missing,
    populated,
    stamp_profiles,
    unmet,
)
from app.hl7.mapping.common import resource_id
from app.hl7.service import Hl7Service
from app.settings import Settings
from conformance.uscore_samples import AUXILIARY, ORDER, SAMPLES, fill
from tests.apcd_files import NPI_A, cdl_file, medical, record
from tests.hl7_messages import er7, evn, msh, oru, pid, pv1
from tests.test_apcd_import import importer, stored

_US = "http://hl7.org/fhir/us/core/StructureDefinition/"
SYSTEM = "urn:dxf-bridge:v2:assigning-authority:GOODHOSP"


def _canonical(slug: str) -> str:
    return f"{_US}{slug}|6.1.0"


# ---- the table ------------------------------------------------------------------------------


def test_every_shall_search_parameter_has_a_path_the_kit_can_search_by() -> None:
    for profile in PROFILES:
        for combo in profile.searches:
            for param in combo:
                assert param in SEARCH_PATHS[profile.type], (profile.slug, param)
        assert set(profile.comparators) <= {p for c in profile.searches for p in c}


def test_each_kit_sample_is_a_valid_complete_instance_of_its_profile() -> None:
    """The kit's samples are what the us-core group checks a server against: each must be
    valid FHIR R4, an instance of its profile, carry every mandatory element and fill every
    must-support element and extension, or the group would test less than it says."""
    ids = {slug: f"id-{n}" for n, slug in enumerate(ORDER)}
    assert set(SAMPLES) == set(BY_SLUG)
    for slug, profile in BY_SLUG.items():
        body = fill(SAMPLES[slug], ids)
        validate_resource(body)
        assert instance_of(body, profile), slug
        assert missing(body, profile) == [], slug
        assert [e for e in profile.must_support if not populated(body, e)] == [], slug
        urls = {e["url"] for e in body.get("extension", [])}
        assert set(profile.extensions) <= urls, slug
    for body in AUXILIARY.values():
        validate_resource(body)


def test_mandatory_children_apply_where_their_parent_is() -> None:
    patient = BY_SLUG["us-core-patient"]
    body: dict[str, Any] = {
        "resourceType": "Patient",
        "identifier": [{"system": "urn:x", "value": "1"}],
        "name": [{"family": "A"}],
        "gender": "female",
    }
    assert missing(body, patient) == []
    body["telecom"] = [{"value": "555"}]  # telecom is optional, its system is not
    assert missing(body, patient) == ["telecom.system"]
    del body["telecom"], body["gender"]
    assert missing(body, patient) == ["gender"]
    vital = BY_SLUG["us-core-heart-rate"]
    obs = fill(SAMPLES["us-core-heart-rate"], {"us-core-patient": "p"})
    del obs["effectiveDateTime"]
    assert missing(obs, vital) == ["effective[x]"]
    # US Core "Missing Data": a data-absent-reason on the primitive is the element present
    obs["_effectiveDateTime"] = {"extension": [{"url": "x", "valueCode": "unknown"}]}
    assert missing(obs, vital) == []
    obs["valueQuantity"]["code"] = "bpm"
    assert missing(obs, vital) == ["valueQuantity.code (UCUM /min)"]


def test_stamp_prefers_the_specific_profile_and_claims_nothing_unmet() -> None:
    heart = fill(SAMPLES["us-core-heart-rate"], {"us-core-patient": "p"})
    assert stamp_profiles(heart) == [_canonical("us-core-heart-rate")]
    assert stamp_profiles(heart) == []  # already there
    odd = copy.deepcopy(heart)
    odd.pop("meta")
    odd["valueQuantity"]["code"] = "bpm"  # not the heart rate's unit: still a vital sign
    assert stamp_profiles(odd) == [_canonical("us-core-vital-signs")]
    bare = {"resourceType": "Observation", "status": "final", "code": {"text": "x"}}
    assert stamp_profiles(bare) == [] and "meta" not in bare


# ---- the claim ------------------------------------------------------------------------------


def _caps(params: dict[str, str], **over: Any) -> TypeCapabilities:
    base: dict[str, Any] = {
        "interactions": frozenset({"read", "search-type", "create"}),
        "params": params,
        "multiple_or": frozenset(params),
        "includes": frozenset(),
        "revincludes": frozenset({"Provenance:target"}),
        "operations": frozenset(),
        "chainable": lambda _r, _p: True,
    }
    return TypeCapabilities(**{**base, **over})


def test_unmet_names_each_missing_shall() -> None:
    patient = BY_SLUG["us-core-patient"]
    full = dict.fromkeys(("_id", "identifier", "gender"), "token") | {
        "name": "string",
        "birthdate": "date",
    }
    assert unmet(patient, _caps(full)) == []
    assert unmet(patient, _caps({k: v for k, v in full.items() if k != "birthdate"})) == [
        "search parameter birthdate"
    ]
    assert unmet(patient, _caps(full, revincludes=frozenset())) == ["_revinclude Provenance:target"]
    docs = BY_SLUG["us-core-documentreference"]
    params = dict.fromkeys(("_id", "patient", "type", "category"), "token") | {"date": "date"}
    assert unmet(docs, _caps(params)) == ["operation $docref"]
    assert "comparators gt, ge, lt, le on date" in unmet(docs, _caps({**params, "date": "token"}))
    role = BY_SLUG["us-core-practitionerrole"]
    role_params = {"specialty": "token", "practitioner": "reference"}
    assert unmet(role, _caps(role_params, revincludes=frozenset())) == []
    assert unmet(role, _caps(role_params, chainable=lambda _r, p: p != "name")) == [
        "chained search practitioner.name"
    ]


def _statement() -> dict[str, Any]:
    metadata._statement.cache_clear()
    try:
        return metadata.capability_statement(ROUTES, Settings())
    finally:
        metadata._statement.cache_clear()


def _entries(cs: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["type"]: e for e in cs["rest"][0]["resource"]}


def test_the_statement_claims_the_profiles_the_server_meets() -> None:
    cs = _statement()
    entries = _entries(cs)
    assert _canonical("us-core-patient") in entries["Patient"]["supportedProfile"]
    observation = set(entries["Observation"]["supportedProfile"])
    assert {_canonical("us-core-observation-lab"), _canonical("us-core-heart-rate")} <= observation
    claimed = {
        p
        for e in entries.values()
        for p in e.get("supportedProfile", ())
        if p.startswith("http://hl7.org/fhir/us/core/")  # Subscription names the backport's
    }
    assert len(claimed) == len(PROFILES) - 1
    # $docref is not served, so US Core DocumentReference is not claimed
    assert "supportedProfile" not in entries["DocumentReference"]
    assert cs["instantiates"] == [
        "http://hl7.org/fhir/us/core/CapabilityStatement/us-core-server|6.1.0"
    ]
    assert cs["implementationGuide"] == [
        "http://hl7.org/fhir/us/core/ImplementationGuide/hl7.fhir.us.core|6.1.0"
    ]


def test_a_registry_without_a_shall_parameter_drops_the_claim(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def without_birthdate(rtype: str) -> dict[str, str]:
        params = dict(search_params(rtype))
        if rtype == "Patient":
            params.pop("birthdate")
        return params

    monkeypatch.setattr(metadata, "search_params", without_birthdate)
    cs = _statement()
    entries = _entries(cs)
    assert "supportedProfile" not in entries["Patient"]
    assert "birthdate" not in {p["name"] for p in entries["Patient"]["searchParam"]}
    assert entries["Observation"]["supportedProfile"]  # other claims stand
    # without US Core Patient the server no longer meets the US Core Server statement
    assert "instantiates" not in cs and "implementationGuide" not in cs


def test_a_route_table_without_search_claims_nothing() -> None:
    routes = [r for r in ROUTES if r.interaction != "search-type"]
    metadata._statement.cache_clear()
    try:
        cs = metadata.capability_statement(routes, Settings())
    finally:
        metadata._statement.cache_clear()
    profiles = {
        p
        for e in _entries(cs).values()
        for p in e.get("supportedProfile", ())
        if p.startswith("http://hl7.org/fhir/us/core/")
    }
    # only the read-only profiles (Medication, Provenance) remain
    assert profiles == {_canonical("us-core-medication"), _canonical("us-core-provenance")}
    assert "instantiates" not in cs


# ---- the mappers ----------------------------------------------------------------------------


@pytest.fixture
def hl7(db, settings: Settings) -> Hl7Service:
    return Hl7Service(db, settings)


async def _read(hl7: Hl7Service, rtype: str, rid: str) -> dict[str, Any]:
    return orjson.loads((await hl7.repo.read(rtype, rid)).content)


async def _send(hl7: Hl7Service, message: bytes) -> None:
    result = await hl7.handle(message, "test")
    assert result.code == "AA", result.ack


def _pv1_without_type() -> str:
    fields = pv1().split("|")
    fields[4] = ""
    return "|".join(fields)


async def test_adt_resources_carry_the_us_core_profiles_they_meet(hl7: Hl7Service) -> None:
    when = "20260301101500-0800"
    vitals = "OBX|1|NM|8867-4^Heart rate^LN||72|/min^^UCUM|||||F"
    await _send(
        hl7,
        er7(
            msh("ADT^A01", "U1", when=when),
            evn("A01", when),
            pid(sex=""),
            _pv1_without_type(),
            vitals,
            "DG1|1||I10^Essential hypertension^I10|||A",
        ),
    )
    patient = await _read(hl7, "Patient", resource_id("Patient", SYSTEM, "MRN1001"))
    assert patient["gender"] == "unknown"  # no PID-8: US Core missing data
    assert patient["meta"]["profile"] == [_canonical("us-core-patient")]
    encounter_id = resource_id("Encounter", SYSTEM, "V5001")
    encounter = await _read(hl7, "Encounter", encounter_id)
    assert encounter["type"][0]["coding"][0]["code"] == "unknown"
    assert encounter["meta"]["profile"] == [_canonical("us-core-encounter")]
    [obs] = await stored(hl7.db, "Observation")
    assert obs["category"][0]["coding"][0]["code"] == "vital-signs"
    assert obs["_effectiveDateTime"]["extension"][0]["valueCode"] == "unknown"  # no OBX-14
    assert obs["meta"]["profile"] == [_canonical("us-core-heart-rate")]
    [condition] = await stored(hl7.db, "Condition")
    assert condition["meta"]["profile"] == [_canonical("us-core-condition-encounter-diagnosis")]
    provenance = await stored(hl7.db, "Provenance")
    assert all(p["meta"]["profile"] == [_canonical("us-core-provenance")] for p in provenance)
    # a later PV1-4 replaces the unknown type; PID-8 replaces the unknown gender
    later = "20260301111500-0800"
    await _send(hl7, er7(msh("ADT^A08", "U2", when=later), evn("A08", later), pid(), pv1()))
    encounter = await _read(hl7, "Encounter", encounter_id)
    assert [c["code"] for t in encounter["type"] for c in t["coding"]] == ["E"]
    patient = await _read(hl7, "Patient", resource_id("Patient", SYSTEM, "MRN1001"))
    assert patient["gender"] == "female"


async def test_oru_results_carry_the_laboratory_profiles(hl7: Hl7Service) -> None:
    await _send(hl7, oru("L1", "OBX|1|NM|2345-7^Glucose^LN||95|mg/dL|70-99||||F"))
    [obs] = await stored(hl7.db, "Observation")
    assert obs["meta"]["profile"] == [_canonical("us-core-observation-lab")]
    [report] = await stored(hl7.db, "DiagnosticReport")
    assert report["meta"]["profile"] == [_canonical("us-core-diagnosticreport-lab")]


async def test_apcd_resources_carry_us_core_profiles_where_they_meet_them(db, tmp_path) -> None:
    claims = [
        medical("EM1", 1, f033="11", f088="99213"),  # an office visit: E/M code
        medical("PR1", 1, f033="11", f088="93000"),  # no E/M code: place of service
    ]
    path = cdl_file(tmp_path / "mc.txt", "MC", claims)
    assert (await importer(db).import_file(path)).rejected == 0
    encounters = {e["identifier"][0]["value"]: e for e in await stored(db, "Encounter")}
    assert encounters["EM1"]["type"][0]["coding"][0]["code"] == "99213"
    assert encounters["PR1"]["type"][0]["coding"][0]["code"] == "11"
    for encounter in encounters.values():
        assert _canonical("us-core-encounter") in encounter["meta"]["profile"]
    for condition in await stored(db, "Condition"):
        assert _canonical("us-core-condition-encounter-diagnosis") in condition["meta"]["profile"]
    for procedure in await stored(db, "Procedure"):
        assert _canonical("us-core-procedure") in procedure["meta"]["profile"]
    pv = record(
        "PV", f003="P1", f005=NPI_A, f006="1", f012="Example", f014="2 Test Ave", f015="Fresno"
    )
    path = cdl_file(tmp_path / "pv.txt", "PV", [pv])
    assert (await importer(db).import_file(path)).rejected == 0
    [practitioner] = await stored(db, "Practitioner")
    assert _canonical("us-core-practitioner") in practitioner["meta"]["profile"]
    assert "C4BB-Practitioner" in practitioner["meta"]["profile"][0]  # CARIN BB kept first
    for location in await stored(db, "Location"):  # no name in the CDL: US Core needs one
        assert "profile" not in location["meta"]
