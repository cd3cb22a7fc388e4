"""Patient/$match on our side: candidates from the index, scores and grades, onlyCertainMatches
and count, the caller's policy, bad input."""

from __future__ import annotations

from typing import Any

import pytest

from app.fhir.matching import GRADES, MATCH_GRADE, WEIGHTS, score_match
from tests.conftest import FHIR_JSON, bearer

MRN = "urn:oid:2.16.840.1.113883.3.dxf.mrn"


def person(mrn: str | None = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Patient",
        "name": [{"family": "Matchperson", "given": ["Robin"]}],
        "gender": "female",
        "birthDate": "1971-07-14",
        "address": [{"line": ["1 Main St"], "city": "Eureka", "postalCode": "95501"}],
        "telecom": [{"system": "phone", "value": "(707) 555-0142"}],
    }
    if mrn is not None:
        body["identifier"] = [{"system": MRN, "value": mrn}]
    body.update(extra)
    return body


def params(wanted: dict[str, Any], **more: Any) -> dict[str, Any]:
    parameter: list[dict[str, Any]] = [{"name": "resource", "resource": wanted}]
    if "only_certain" in more:
        parameter.append({"name": "onlyCertainMatches", "valueBoolean": more["only_certain"]})
    if "count" in more:
        parameter.append({"name": "count", "valueInteger": more["count"]})
    return {"resourceType": "Parameters", "parameter": parameter}


async def _create(client, auth, body: dict[str, Any]) -> str:
    r = await client.post("/Patient", json=body, headers={**auth, **FHIR_JSON})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def _match(client, headers, body: dict[str, Any], status: int = 200) -> dict[str, Any]:
    r = await client.post("/Patient/$match", json=body, headers={**headers, **FHIR_JSON})
    assert r.status_code == status, r.text
    return r.json()


def _results(bundle: dict[str, Any]) -> list[tuple[str, float, str]]:
    out = []
    for e in bundle.get("entry", []):
        if e["search"]["mode"] != "match":
            continue
        [grade] = [x["valueCode"] for x in e["search"]["extension"] if x["url"] == MATCH_GRADE]
        out.append((e["resource"]["id"], e["search"]["score"], grade))
    return out


@pytest.fixture
async def people(client, auth) -> dict[str, str]:
    return {
        "same": await _create(client, auth, person("R-1")),
        # same demographics, no identifier: a probable match
        "twin": await _create(client, auth, person()),
        # same name and birth date only: possible
        "namesake": await _create(
            client,
            auth,
            {
                "resourceType": "Patient",
                "name": [{"family": "Matchperson"}],
                "birthDate": "1971-07-14",
            },
        ),
        # same name and birth date but another MRN in the same system: certainly not
        "other_mrn": await _create(client, auth, person("R-2")),
        "stranger": await _create(
            client, auth, person("R-3", name=[{"family": "Elsewise"}], birthDate="1990-01-01")
        ),
    }


async def test_match_scores_grades_and_sorts(client, auth, people):
    bundle = await _match(client, auth, params(person("R-1")))
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "searchset"
    got = _results(bundle)
    assert [g[0] for g in got] == [people["same"], people["twin"], people["namesake"]]
    assert got[0][1:] == (1.0, "certain")
    assert got[1][2] == "probable" and got[2][2] == "possible"
    assert [s for _, s, _ in got] == sorted((s for _, s, _ in got), reverse=True)
    assert bundle["total"] == 3
    # neither the stranger nor the certainly-not match (same system, other MRN) is returned
    assert people["other_mrn"] not in [g[0] for g in got]


async def test_only_certain_matches_and_count(client, auth, people):
    got = _results(await _match(client, auth, params(person("R-1"), only_certain=True)))
    assert got == [(people["same"], 1.0, "certain")]
    got = _results(await _match(client, auth, params(person("R-1"), count=1)))
    assert [g[0] for g in got] == [people["same"]]
    # two certain matches: with onlyCertainMatches, none is returned
    await _create(client, auth, person("R-1"))
    bundle = await _match(client, auth, params(person("R-1"), only_certain=True))
    assert _results(bundle) == []
    [outcome] = [e["resource"] for e in bundle["entry"] if e["search"]["mode"] == "outcome"]
    assert outcome["issue"][0]["code"] == "multiple-matches"


async def test_match_by_identifier_alone_finds_the_patient(client, auth, people):
    wanted = {"resourceType": "Patient", "identifier": [{"system": MRN, "value": "R-1"}]}
    assert _results(await _match(client, auth, params(wanted))) == [
        (people["same"], 0.55, "probable")
    ]


async def test_match_under_a_patient_token_sees_only_its_own_patient(client, make_token, people):
    mine = bearer(make_token("patient/Patient.rs", patient=people["twin"]))
    got = _results(await _match(client, mine, params(person("R-1"))))
    assert [g[0] for g in got] == [people["twin"]]
    no_patient = bearer(make_token("system/Observation.rs"))
    await _match(client, no_patient, params(person("R-1")), status=403)
    r = await client.post("/Patient/$match", json=params(person("R-1")), headers=FHIR_JSON)
    assert r.status_code == 401


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"resourceType": "Patient"}, 400),
        ({"resourceType": "Parameters", "parameter": []}, 400),
        (params({"resourceType": "Observation"}), 400),
        (params(person(), count=0), 400),
        (params(person(), only_certain="yes"), 400),
        ({**params(person()), "parameter": [*params(person())["parameter"], {"name": "x"}]}, 400),
        (params({"resourceType": "Patient", "gender": "female"}), 422),
        (params({"resourceType": "Patient", "birthDate": "not a date"}), 422),
    ],
)
async def test_bad_match_input_is_refused(client, auth, body, status):
    outcome = await _match(client, auth, body, status=status)
    assert outcome["resourceType"] == "OperationOutcome"


async def test_match_is_post_only_and_declared(client, auth):
    r = await client.get("/Patient/$match", headers=auth)
    assert r.status_code == 405
    cs = (await client.get("/metadata")).json()
    pat = next(r for r in cs["rest"][0]["resource"] if r["type"] == "Patient")
    assert {
        "name": "match",
        "definition": "http://hl7.org/fhir/OperationDefinition/Patient-match",
    } in pat["operation"]


# ---- the weighting ------------------------------------------------------------------------------


def test_weights_add_up_to_one_and_identifier_dominates():
    assert round(sum(f.agree for f in WEIGHTS), 9) == 1.0
    identifier = next(f for f in WEIGHTS if f.name == "identifier")
    assert identifier.agree > sum(f.agree for f in WEIGHTS if f.name != "identifier")
    assert [floor for _, floor in GRADES] == sorted((floor for _, floor in GRADES), reverse=True)


def test_score_each_feature():
    base = person("R-1")
    assert score_match(base, base).score == 1.0
    # demographics alone reach a probable match at best
    assert score_match(person(), base).grade == "probable"
    # a birth date that disagrees costs its weight; with gender too it is certainly not
    older = person("R-1", birthDate="1970-07-14")
    assert score_match(older, base).score == pytest.approx(1.0 - 0.15 - 0.15)
    assert score_match(person("R-1", birthDate="1970-07-14", gender="male"), base).grade == (
        "certainly-not"
    )
    # a birth date at another precision is no evidence either way
    assert score_match(person("R-1", birthDate="1971"), base).score == pytest.approx(0.85)
    # names compare without case or accents; phones by their digits; addresses by postal code
    accented = person(
        "R-1",
        name=[{"family": "MÁTCHPERSON", "given": ["robin"]}],
        telecom=[{"system": "phone", "value": "707.555.0142"}],
        address=[{"postalCode": "95501-1234"}],
    )
    assert score_match(accented, base).score == 1.0
    # an identifier without a system matches the value in any system
    bare = {"resourceType": "Patient", "identifier": [{"value": "R-1"}]}
    assert score_match(bare, base).agreed == ("identifier",)
    # unknown gender is no evidence
    assert "gender" not in score_match(person("R-1", gender="unknown"), base).agreed
