"""Search beyond single parameters: quantity, number, composite, token :text, uri :below and
:above, chains, _has, _sort with keyset paging, _include/_revinclude, _summary, _elements,
_total and lenient handling. Each runs on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from tests.conftest import FHIR_JSON, bearer
from tests.factories import encounter, observation, patient


async def _create(client, auth, body: dict[str, Any]) -> str:
    r = await client.post(f"/{body['resourceType']}", json=body, headers={**auth, **FHIR_JSON})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def _ids(client, auth, query: str, **kw: Any) -> set[str]:
    r = await client.get(f"/{query}", headers=auth, **kw)
    assert r.status_code == 200, (query, r.text)
    return {
        e["resource"]["id"] for e in r.json().get("entry", []) if e["search"]["mode"] == "match"
    }


def _bp(patient_id: str, systolic: float, unit: str = "mm[Hg]") -> dict[str, Any]:
    body = observation(patient_id, code="8480-6", value=systolic)
    body["valueQuantity"] = {
        "value": systolic,
        "unit": unit,
        "system": "http://unitsofmeasure.org",
        "code": unit,
    }
    body["code"]["coding"][0]["display"] = "Systolic blood pressure"
    body["code"]["text"] = "Systolic BP"
    return body


async def test_quantity_number_and_composite(client, auth):
    pid = await _create(client, auth, patient("q1"))
    low = await _create(client, auth, _bp(pid, 118))
    high = await _create(client, auth, _bp(pid, 142.5))
    rate = await _create(client, auth, observation(pid, code="8867-4", value=142.5))
    loinc = "http://loinc.org"
    ucum = "http://unitsofmeasure.org"
    for query, expect in [
        ("Observation?value-quantity=118", {low}),
        ("Observation?value-quantity=1.2e2", {low}),  # 115 <= v < 125 by its precision
        ("Observation?value-quantity=120", set()),
        ("Observation?value-quantity=142.5", {high, rate}),
        ("Observation?value-quantity=142", set()),  # 141.5 <= v < 142.5
        ("Observation?value-quantity=gt130", {high, rate}),
        ("Observation?value-quantity=le118", {low}),
        ("Observation?value-quantity=ne118", {high, rate}),
        ("Observation?value-quantity=ap140", {high, rate}),
        (f"Observation?value-quantity=gt100|{ucum}|mm[Hg]", {low, high}),
        ("Observation?value-quantity=gt100||/min", {rate}),
        (f"Observation?value-quantity=gt100|{ucum}|kg", set()),
        (f"Observation?code-value-quantity={loinc}|8480-6$gt130", {high}),
        (f"Observation?code-value-quantity={loinc}|8480-6$lt130,{loinc}|8867-4$gt100", {low, rate}),
        ("Observation?code-value-quantity=8867-4$lt100", set()),
    ]:
        assert await _ids(client, auth, query) == expect, query
    for bad in ("value-quantity=abc", "value-quantity=5|x", "code-value-quantity=8480-6"):
        r = await client.get(f"/Observation?{bad}", headers=auth)
        assert r.status_code == 400, bad
        assert bad.split("=")[0] in r.json()["issue"][0]["diagnostics"]
    # number: RiskAssessment.prediction.probability
    risk = {
        "resourceType": "RiskAssessment",
        "status": "final",
        "subject": {"reference": f"Patient/{pid}"},
        "prediction": [{"probabilityDecimal": 0.25}],
    }
    rid = await _create(client, auth, risk)
    assert await _ids(client, auth, "RiskAssessment?probability=0.25") == {rid}
    assert await _ids(client, auth, "RiskAssessment?probability=gt0.3") == set()
    assert await _ids(client, auth, "RiskAssessment?probability=lt0.3") == {rid}


async def test_token_text_and_uri_below_above(client, auth):
    pid = await _create(client, auth, patient("t1"))
    bp = await _create(client, auth, _bp(pid, 120))
    await _create(client, auth, observation(pid))
    assert await _ids(client, auth, "Observation?code:text=systolic") == {bp}
    assert await _ids(client, auth, "Observation?code:text=SYSTOLIC%20BP") == {bp}
    assert await _ids(client, auth, "Observation?code:text=diastolic") == set()
    vs = {
        "resourceType": "ValueSet",
        "status": "active",
        "url": "http://example.org/fhir/ValueSet/colors",
    }
    vid = await _create(client, auth, vs)
    assert await _ids(client, auth, "ValueSet?url:below=http://example.org/fhir/") == {vid}
    assert await _ids(client, auth, "ValueSet?url:below=http://example.org/other") == set()
    above = "ValueSet?url:above=http://example.org/fhir/ValueSet/colors/v2"
    assert await _ids(client, auth, above) == {vid}
    assert await _ids(client, auth, "ValueSet?url:above=http://example.org/fhir/Value") == set()


async def test_chains_and_reverse_chains(client, auth):
    ann = await _create(client, auth, patient("c1", family="Annan"))
    bo = await _create(client, auth, patient("c2", family="Borg"))
    org = await _create(client, auth, {"resourceType": "Organization", "name": "Valley Clinic"})
    body = patient("c3", family="Cruz")
    body["managingOrganization"] = {"reference": f"Organization/{org}"}
    cruz = await _create(client, auth, body)
    o_ann = await _create(client, auth, _bp(ann, 150))
    o_bo = await _create(client, auth, observation(bo))
    o_cruz = await _create(client, auth, observation(cruz))
    mrn = "urn:oid:2.16.840.1.113883.3.dxf.mrn"
    for query, expect in [
        ("Observation?subject:Patient.name=annan", {o_ann}),
        ("Observation?subject.family=borg", {o_bo}),
        (f"Observation?patient.identifier={mrn}|c2", {o_bo}),
        ("Observation?patient.identifier=c1,c2", {o_ann, o_bo}),
        ("Observation?patient.organization.name=valley", {o_cruz}),
        ("Observation?patient.name=nobody", set()),
        ("Patient?_has:Observation:patient:code=8480-6", {ann}),
        ("Patient?_has:Observation:subject:value-quantity=gt140", {ann}),
        ("Patient?_has:Observation:patient:code=8867-4", {bo, cruz}),
        ("Patient?_has:Observation:patient:code=8867-4&name=cruz", {cruz}),
        ("Organization?_has:Patient:organization:_has:Observation:patient:code=8867-4", {org}),
    ]:
        assert await _ids(client, auth, query) == expect, query
    for bad in (
        "Observation?code.name=x",  # not a reference
        "Observation?subject:Patient.nosuch=x",
        "Patient?_has:Observation:code:code=x",  # code is not a reference parameter
        "Patient?_has:Observation",
        "Observation?a.b.c.d.e=x",
    ):
        r = await client.get(f"/{bad}", headers=auth)
        assert r.status_code == 400, (bad, r.text)


async def test_chains_and_has_respect_the_compartment(client, auth, make_token):
    me = await _create(client, auth, patient("m1", family="Mine"))
    other = await _create(client, auth, patient("m2", family="Other"))
    await _create(client, auth, observation(me))
    await _create(client, auth, observation(other, code="718-7"))
    mine = bearer(make_token("patient/*.rs", patient=me))
    # the other patient's Observation does not exist for this token
    assert await _ids(client, mine, "Patient?_has:Observation:patient:code=718-7") == set()
    assert await _ids(client, mine, "Patient?_has:Observation:patient:code=8867-4") == {me}
    assert await _ids(client, mine, "Observation?subject.name=other") == set()
    assert len(await _ids(client, mine, "Observation?subject.name=mine")) == 1


async def test_sort_and_keyset_paging_in_both_directions(client, auth):
    families = ["Delta", "alpha", "Charlie", "bravo", "Echo", "foxtrot", "Golf"]
    ids = {}
    for i, fam in enumerate(families):
        body = patient(f"s{i}", family=fam, birthDate=f"19{50 + i}-01-01")
        ids[fam] = await _create(client, auth, body)
    await _create(client, auth, {"resourceType": "Patient"})  # no name: sorts last
    expected = sorted(families, key=str.casefold)

    async def walk(query: str) -> tuple[list[str], list[dict[str, Any]]]:
        seen, bundles = [], []
        url = f"/{query}"
        while url:
            bundle = (await client.get(url, headers=auth)).json()
            bundles.append(bundle)
            seen += [
                e["resource"].get("name", [{}])[0].get("family") for e in bundle.get("entry", [])
            ]
            nxt = [ln["url"] for ln in bundle["link"] if ln["relation"] == "next"]
            url = nxt[0].split("/fhir", 1)[1] if nxt else ""
        return seen, bundles

    seen, bundles = await walk("Patient?_sort=family&_count=3")
    assert seen == [*expected, None]
    assert [ln["relation"] for ln in bundles[0]["link"]] == ["self", "next"]
    seen, _ = await walk("Patient?_sort=-family&_count=3")
    assert seen == [*reversed(expected), None]
    seen, _ = await walk("Patient?_sort=-birthdate,family&_count=2&name:contains=o")
    assert seen == ["Golf", "foxtrot", "Echo", "bravo"]
    # previous links walk back over the same pages
    _, bundles = await walk("Patient?_sort=family&_count=3")
    last = bundles[-1]
    prev = next(ln["url"] for ln in last["link"] if ln["relation"] == "previous")
    back = (await client.get(prev.split("/fhir", 1)[1], headers=auth)).json()
    assert [e["resource"]["id"] for e in back["entry"]] == [
        e["resource"]["id"] for e in bundles[-2]["entry"]
    ]
    # writes between pages neither repeat nor skip what was there
    first = (await client.get("/Patient?_sort=family&_count=4", headers=auth)).json()
    await _create(client, auth, patient("late", family="Aaron"))
    nxt = next(ln["url"] for ln in first["link"] if ln["relation"] == "next")
    second = (await client.get(nxt.split("/fhir", 1)[1], headers=auth)).json()
    names = [e["resource"].get("name", [{}])[0].get("family") for e in second["entry"]]
    assert names == [*expected[4:], None]
    for bad in ("_sort=nosuch", "_sort=family&_cursor=garbage", "_sort=family,family"):
        assert (await client.get(f"/Patient?{bad}", headers=auth)).status_code == 400, bad


async def test_include_and_revinclude(client, auth, make_token):
    org = await _create(client, auth, {"resourceType": "Organization", "name": "Clinic"})
    body = patient("i1")
    body["managingOrganization"] = {"reference": f"Organization/{org}"}
    pid = await _create(client, auth, body)
    other = await _create(client, auth, patient("i2"))
    obs = await _create(client, auth, observation(pid))
    enc = await _create(client, auth, encounter(pid))
    await _create(client, auth, observation(other))

    async def modes(query: str, headers=None) -> dict[str, set[tuple[str, str]]]:
        r = await client.get(f"/{query}", headers=headers or auth)
        assert r.status_code == 200, r.text
        out: dict[str, set[tuple[str, str]]] = {}
        for e in r.json().get("entry", []):
            res = e["resource"]
            out.setdefault(e["search"]["mode"], set()).add((res["resourceType"], res["id"]))
        return out

    got = await modes(f"Observation?_id={obs}&_include=Observation:subject")
    assert got == {"match": {("Observation", obs)}, "include": {("Patient", pid)}}
    got = await modes(f"Observation?_id={obs}&_include=Observation:subject:Group")
    assert got == {"match": {("Observation", obs)}}
    got = await modes(
        f"Observation?_id={obs}&_include=Observation:subject&_include:iterate=Patient:organization"
    )
    assert got["include"] == {("Patient", pid), ("Organization", org)}
    got = await modes(
        f"Patient?_id={pid}&_revinclude=Observation:subject&_revinclude=Encounter:patient"
    )
    assert got["include"] == {("Observation", obs), ("Encounter", enc)}
    got = await modes(f"Patient?_id={pid}&_include=*")
    assert got["include"] == {("Organization", org)}
    # a patient-scoped token never gets another patient's resources through includes
    mine = bearer(make_token("patient/*.rs", patient=other))
    got = await modes(f"Observation?_include=Observation:subject&subject={other}", mine)
    assert {t for t, _ in got["include"]} == {"Patient"} and ("Patient", pid) not in got["include"]
    got = await modes("Patient?_revinclude=Observation:subject", mine)
    assert got["match"] == {("Patient", other)}
    assert all(i != ("Observation", obs) for i in got.get("include", set()))
    assert (
        await client.get("/Observation?_include=Observation:code", headers=auth)
    ).status_code == 400
    assert (await client.get("/Observation?_include=Patient:link", headers=auth)).status_code == 400


async def test_summary_elements_total_and_lenient(client, auth):
    body = patient("e1")
    body["text"] = {
        "status": "generated",
        "div": '<div xmlns="http://www.w3.org/1999/xhtml">x</div>',
    }
    body["photo"] = [{"contentType": "image/png", "data": "iVBORw0KGgo="}]
    pid = await _create(client, auth, body)
    await _create(client, auth, patient("e2"))
    bundle = (await client.get("/Patient?_summary=count", headers=auth)).json()
    assert bundle["total"] == 2 and "entry" not in bundle
    bundle = (await client.get(f"/Patient?_id={pid}&_summary=true", headers=auth)).json()
    res = bundle["entry"][0]["resource"]
    assert "photo" not in res and "text" not in res and res["name"] and res["birthDate"]
    assert {"code": "SUBSETTED"}.items() <= res["meta"]["tag"][-1].items()
    bundle = (await client.get(f"/Patient?_id={pid}&_elements=gender", headers=auth)).json()
    res = bundle["entry"][0]["resource"]
    assert set(res) == {"resourceType", "id", "meta", "gender"}
    bundle = (await client.get(f"/Patient?_id={pid}&_summary=data", headers=auth)).json()
    assert "text" not in bundle["entry"][0]["resource"]
    bundle = (await client.get("/Patient?_total=accurate&_count=1", headers=auth)).json()
    assert bundle["total"] == 2 and len(bundle["entry"]) == 1
    assert "total" not in (await client.get("/Patient", headers=auth)).json()
    r = await client.get("/Patient?nosuch=1&identifier=e1", headers=auth)
    assert r.status_code == 400 and "nosuch" in r.json()["issue"][0]["diagnostics"]
    lenient = {**auth, "Prefer": "handling=lenient"}
    r = await client.get("/Patient?nosuch=1&birthdate=notadate&identifier=e1", headers=lenient)
    assert r.status_code == 200
    entries = r.json()["entry"]
    assert [e["resource"]["id"] for e in entries if e["search"]["mode"] == "match"] == [pid]
    outcome = next(e["resource"] for e in entries if e["search"]["mode"] == "outcome")
    text = " ".join(i["diagnostics"] for i in outcome["issue"])
    assert "nosuch" in text and "birthdate" in text
    self_link = r.json()["link"][0]["url"]
    assert "nosuch" not in self_link and "identifier=e1" in self_link


async def test_us_core_required_searches(client, auth):
    """https://hl7.org/fhir/us/core/STU6.1/: the searches a US Core server SHALL support."""
    pid = await _create(
        client,
        auth,
        patient("uc1", family="Shaw", gender="female", birthDate="1971-07-04"),
    )
    await _create(client, auth, patient("uc2", family="Shaw", gender="male"))
    enc = encounter(pid)
    enc["period"] = {"start": "2024-02-01T09:00:00Z", "end": "2024-02-01T09:30:00Z"}
    eid = await _create(client, auth, enc)
    lab = observation(pid, code="718-7")
    lab["category"] = [
        {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                    "code": "laboratory",
                }
            ]
        }
    ]
    lab["effectiveDateTime"] = "2024-02-01T09:10:00Z"
    oid = await _create(client, auth, lab)
    await _create(client, auth, observation(pid))
    mrn = "urn:oid:2.16.840.1.113883.3.dxf.mrn"
    for query, expect in [
        (f"Patient?_id={pid}", {pid}),
        (f"Patient?identifier={mrn}|uc1", {pid}),
        ("Patient?name=shaw&gender=female", {pid}),
        ("Patient?name=Shaw&birthdate=1971-07-04", {pid}),
        (f"Encounter?patient={pid}", {eid}),
        (f"Encounter?_id={eid}", {eid}),
        (f"Encounter?date=ge2024-02-01&patient={pid}", {eid}),
        (f"Encounter?date=lt2024-01-01&patient={pid}", set()),
        (f"Observation?patient={pid}&category=laboratory", {oid}),
        (f"Observation?patient={pid}&code=http://loinc.org|718-7", {oid}),
        (f"Observation?patient={pid}&category=laboratory&date=2024-02", {oid}),
        (f"Observation?patient={pid}&category=laboratory&date=gt2024-03", set()),
    ]:
        assert await _ids(client, auth, query) == expect, query


async def test_paging_links_stay_inside_the_compartment(client, auth, make_token):
    me = await _create(client, auth, patient("pg1"))
    other = await _create(client, auth, patient("pg2"))
    mine = {await _create(client, auth, observation(me, value=float(i))) for i in range(3)}
    for i in range(3):
        await _create(client, auth, observation(other, value=float(i)))
    token = bearer(make_token("patient/*.rs", patient=me))
    seen: list[str] = []
    url = "/Observation?_count=1&_sort=value-quantity"
    while url:
        bundle = (await client.get(url, headers=token)).json()
        seen += [e["resource"]["id"] for e in bundle.get("entry", [])]
        nxt = [ln["url"] for ln in bundle["link"] if ln["relation"] == "next"]
        url = nxt[0].split("/fhir", 1)[1] if nxt else ""
    assert sorted(seen) == sorted(mine)
    # a cursor naming another patient's resource opens nothing outside the compartment
    other_first = (await client.get("/Observation?_count=1", headers=auth)).json()
    link = next(ln["url"] for ln in other_first["link"] if ln["relation"] == "next")
    page = (await client.get(link.split("/fhir", 1)[1], headers=token)).json()
    assert {e["resource"]["id"] for e in page.get("entry", [])} <= mine
