"""REST interactions over ASGI: read, vread, create, update, delete, history, negotiation."""

from __future__ import annotations

from email.utils import parsedate_to_datetime

import orjson

from tests.conftest import FHIR_BASE, FHIR_JSON
from tests.factories import observation, patient


async def _create(client, auth, body):
    r = await client.post(f"/{body['resourceType']}", json=body, headers={**auth, **FHIR_JSON})
    assert r.status_code == 201, r.text
    return r


async def test_create_assigns_id_version_and_location(client, auth):
    body = patient("100", id="client-chosen")
    r = await _create(client, auth, body)
    res = r.json()
    assert res["id"] != "client-chosen"  # create ignores a client id
    assert res["meta"]["versionId"] == "1"
    assert res["meta"]["lastUpdated"].endswith("Z")
    assert r.headers["location"] == f"{FHIR_BASE}/Patient/{res['id']}/_history/1"
    assert r.headers["etag"] == 'W/"1"'
    assert r.headers["content-type"].startswith("application/fhir+json")
    assert parsedate_to_datetime(r.headers["last-modified"]).year >= 2026


async def test_read_serves_stored_resource_with_etag(client, auth):
    pid = (await _create(client, auth, patient("101"))).json()["id"]
    r = await client.get(f"/Patient/{pid}", headers=auth)
    assert r.status_code == 200
    assert r.headers["etag"] == 'W/"1"'
    assert r.json()["name"][0]["family"] == "Testperson"
    not_modified = await client.get(f"/Patient/{pid}", headers={**auth, "If-None-Match": 'W/"1"'})
    assert not_modified.status_code == 304


async def test_update_versions_and_vread_keeps_old(client, auth):
    res = (await _create(client, auth, patient("102"))).json()
    pid = res["id"]
    res["gender"] = "female"
    r = await client.put(f"/Patient/{pid}", json=res, headers={**auth, **FHIR_JSON})
    assert r.status_code == 200
    assert r.json()["meta"]["versionId"] == "2"
    assert r.headers["etag"] == 'W/"2"'
    v1 = await client.get(f"/Patient/{pid}/_history/1", headers=auth)
    assert v1.status_code == 200 and v1.json()["gender"] == "unknown"
    v2 = await client.get(f"/Patient/{pid}/_history/2", headers=auth)
    assert v2.json()["gender"] == "female"
    missing = await client.get(f"/Patient/{pid}/_history/9", headers=auth)
    assert missing.status_code == 404
    assert missing.json()["issue"][0]["code"] == "not-found"


async def test_update_as_create_with_client_id(client, auth):
    body = patient("103", id="mrn-103")
    r = await client.put("/Patient/mrn-103", json=body, headers={**auth, **FHIR_JSON})
    assert r.status_code == 201
    assert r.headers["location"].endswith("/Patient/mrn-103/_history/1")
    again = await client.put("/Patient/mrn-103", json=body, headers={**auth, **FHIR_JSON})
    assert again.status_code == 200 and again.json()["meta"]["versionId"] == "2"


async def test_update_id_mismatch_is_400(client, auth):
    r = await client.put("/Patient/abc", json=patient(id="xyz"), headers={**auth, **FHIR_JSON})
    assert r.status_code == 400
    assert r.json()["resourceType"] == "OperationOutcome"


async def test_if_match(client, auth):
    res = (await _create(client, auth, patient("104"))).json()
    pid = res["id"]
    ok = await client.put(
        f"/Patient/{pid}", json=res, headers={**auth, **FHIR_JSON, "If-Match": 'W/"1"'}
    )
    assert ok.status_code == 200
    stale = await client.put(
        f"/Patient/{pid}", json=res, headers={**auth, **FHIR_JSON, "If-Match": 'W/"1"'}
    )
    assert stale.status_code == 412
    assert stale.json()["issue"][0]["code"] == "conflict"
    current = await client.get(f"/Patient/{pid}", headers=auth)
    assert current.json()["meta"]["versionId"] == "2"


async def test_delete_then_read_is_410_and_history_keeps_versions(client, auth):
    pid = (await _create(client, auth, patient("105"))).json()["id"]
    d = await client.delete(f"/Patient/{pid}", headers=auth)
    assert d.status_code == 204
    gone = await client.get(f"/Patient/{pid}", headers=auth)
    assert gone.status_code == 410
    assert gone.json()["issue"][0]["code"] == "deleted"
    again = await client.delete(f"/Patient/{pid}", headers=auth)
    assert again.status_code == 204
    hist = (await client.get(f"/Patient/{pid}/_history", headers=auth)).json()
    assert hist["type"] == "history"
    methods = [e["request"]["method"] for e in hist["entry"]]
    assert methods == ["DELETE", "POST"]
    assert "resource" not in hist["entry"][0]
    assert hist["entry"][0]["response"]["etag"] == 'W/"2"'
    # a deleted resource can be brought back by update; the version sequence continues
    body = patient("105", id=pid)
    back = await client.put(f"/Patient/{pid}", json=body, headers={**auth, **FHIR_JSON})
    assert back.status_code == 201 and back.json()["meta"]["versionId"] == "3"


async def test_delete_unknown_is_404(client, auth):
    r = await client.delete("/Patient/never-was", headers=auth)
    assert r.status_code == 404


async def test_type_and_system_history(client, auth):
    p = (await _create(client, auth, patient("106"))).json()
    o = (await _create(client, auth, observation(p["id"]))).json()
    p["gender"] = "other"
    await client.put(f"/Patient/{p['id']}", json=p, headers={**auth, **FHIR_JSON})
    th = (await client.get("/Patient/_history", headers=auth)).json()
    assert [e["response"]["etag"] for e in th["entry"]] == ['W/"2"', 'W/"1"']
    sh = (await client.get("/_history", headers=auth)).json()
    urls = [e["fullUrl"] for e in sh["entry"]]
    assert urls == [
        f"{FHIR_BASE}/Patient/{p['id']}",
        f"{FHIR_BASE}/Observation/{o['id']}",
        f"{FHIR_BASE}/Patient/{p['id']}",
    ]


async def test_history_paging_is_stable_while_writing(client, auth):
    for i in range(5):
        await _create(client, auth, patient(f"p{i}"))
    first = (await client.get("/Patient/_history?_count=2", headers=auth)).json()
    assert len(first["entry"]) == 2
    nxt = next(link["url"] for link in first["link"] if link["relation"] == "next")
    await _create(client, auth, patient("late"))  # a write between pages
    second = (await client.get(nxt.replace(FHIR_BASE, ""), headers=auth)).json()
    seen = {e["fullUrl"] for e in first["entry"]} | {e["fullUrl"] for e in second["entry"]}
    assert len(seen) == 4


async def test_history_since(client, auth):
    await _create(client, auth, patient("s1"))
    r = await client.get("/Patient/_history?_since=2999-01-01T00:00:00Z", headers=auth)
    assert r.status_code == 200 and "entry" not in r.json()
    bad = await client.get("/Patient/_history?_since=yesterday", headers=auth)
    assert bad.status_code == 400


async def test_prefer_return(client, auth):
    minimal = await client.post(
        "/Patient", json=patient(), headers={**auth, **FHIR_JSON, "Prefer": "return=minimal"}
    )
    assert minimal.status_code == 201 and minimal.content == b""
    assert minimal.headers["location"]
    oo = await client.post(
        "/Patient",
        json=patient(),
        headers={**auth, **FHIR_JSON, "Prefer": "return=OperationOutcome"},
    )
    assert oo.status_code == 201
    assert oo.json()["resourceType"] == "OperationOutcome"
    assert oo.json()["issue"][0]["severity"] == "information"


async def test_pretty_and_format(client, auth):
    pid = (await _create(client, auth, patient("107"))).json()["id"]
    pretty = await client.get(f"/Patient/{pid}?_pretty=true", headers=auth)
    assert b'\n  "' in pretty.content
    assert orjson.loads(pretty.content)["id"] == pid
    ok = await client.get(f"/Patient/{pid}?_format=json", headers=auth)
    assert ok.status_code == 200
    xml = await client.get(f"/Patient/{pid}?_format=xml", headers=auth)
    assert xml.status_code == 406
    accept_xml = await client.get(
        f"/Patient/{pid}", headers={**auth, "Accept": "application/fhir+xml"}
    )
    assert accept_xml.status_code == 406


async def test_errors_are_operation_outcomes(client, auth):
    cases = [
        (await client.get("/Patient/no-such-id", headers=auth), 404, "not-found"),
        (await client.get("/Unicorn/1", headers=auth), 404, "not-supported"),
        (await client.get("/Patient/bad$id", headers=auth), 400, "invalid"),
        (await client.patch("/Patient/1", headers=auth), 405, "not-supported"),
        (
            await client.post("/Patient", content=b"{not json", headers={**auth, **FHIR_JSON}),
            400,
            "structure",
        ),
        (
            await client.post(
                "/Patient",
                content=b"<Patient/>",
                headers={**auth, "Content-Type": "application/fhir+xml"},
            ),
            415,
            "not-supported",
        ),
        (
            await client.post(
                "/Patient",
                json={"resourceType": "Patient", "birthDate": "not-a-date"},
                headers={**auth, **FHIR_JSON},
            ),
            422,
            "value",
        ),
        (
            await client.post(
                "/Patient", json={"resourceType": "Observation"}, headers={**auth, **FHIR_JSON}
            ),
            400,
            "invalid",
        ),
        (
            await client.post(
                "/Patient",
                json={"resourceType": "Patient", "favouriteColour": "blue"},
                headers={**auth, **FHIR_JSON},
            ),
            422,
            "structure",
        ),
        (
            await client.post("/Patient", json=[1, 2], headers={**auth, **FHIR_JSON}),
            400,
            "structure",
        ),
        (await client.get("/Patient?foo=bar", headers=auth), 400, "not-supported"),
    ]
    for response, status, code in cases:
        assert response.status_code == status, (response.request.url, response.text)
        body = response.json()
        assert body["resourceType"] == "OperationOutcome"
        assert body["issue"][0]["code"] == code, body


async def test_invalid_resource_names_the_element(client, auth):
    r = await client.post(
        "/Patient",
        json={"resourceType": "Patient", "birthDate": "1980-13-45"},
        headers={**auth, **FHIR_JSON},
    )
    assert r.status_code == 422
    assert r.json()["issue"][0]["expression"] == ["Patient.birthDate"]


async def test_body_over_limit_is_413(container, client, auth):
    limit = container.settings.max_body_bytes
    big = patient(text={"status": "generated", "div": "<div>" + "x" * limit + "</div>"})
    r = await client.post("/Patient", json=big, headers={**auth, **FHIR_JSON})
    assert r.status_code == 413
    assert r.json()["issue"][0]["code"] == "too-costly"


async def test_failed_write_leaves_stored_data_alone(client, auth):
    res = (await _create(client, auth, patient("108"))).json()
    bad = {**res, "birthDate": "nope"}
    r = await client.put(f"/Patient/{res['id']}", json=bad, headers={**auth, **FHIR_JSON})
    assert r.status_code == 422
    current = (await client.get(f"/Patient/{res['id']}", headers=auth)).json()
    assert current["meta"]["versionId"] == "1" and current["birthDate"] == "1980-02-29"


async def test_search_by_id_and_identifier(client, auth):
    a = (await _create(client, auth, patient("200"))).json()
    b = (await _create(client, auth, patient("201"))).json()
    by_id = (await client.get(f"/Patient?_id={a['id']}", headers=auth)).json()
    assert [e["resource"]["id"] for e in by_id["entry"]] == [a["id"]]
    system = "urn:oid:2.16.840.1.113883.3.dxf.mrn"
    for q, expect in [
        (f"identifier={system}|201", {b["id"]}),
        ("identifier=201", {b["id"]}),
        (f"identifier={system}|", {a["id"], b["id"]}),
        ("identifier=|201", set()),
        ("identifier=200,201", {a["id"], b["id"]}),
        (f"identifier=200&_id={b['id']}", set()),
    ]:
        bundle = (await client.get(f"/Patient?{q}", headers=auth)).json()
        assert bundle["type"] == "searchset"
        assert {e["resource"]["id"] for e in bundle.get("entry", [])} == expect, q
    post = await client.post(
        "/Patient/_search",
        content=b"identifier=201",
        headers={**auth, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert [e["resource"]["id"] for e in post.json()["entry"]] == [b["id"]]


async def test_count_zero_gives_total_only(client, auth):
    for i in range(3):
        await _create(client, auth, patient(f"c{i}"))
    r = (await client.get("/Patient?_count=0", headers=auth)).json()
    assert r["total"] == 3 and "entry" not in r


async def test_pretty_indents_embedded_resources(client, auth):
    await _create(client, auth, patient("pp"))
    r = await client.get("/Patient?_pretty=true", headers=auth)
    assert b'\n        "resourceType": "Patient"' in r.content


async def test_conditional_update_brings_back_deleted_body_id(client, auth):
    await client.put("/Patient/back", json=patient("b0", id="back"), headers={**auth, **FHIR_JSON})
    await client.delete("/Patient/back", headers=auth)
    r = await client.put(
        "/Patient?identifier=brand-new",
        json=patient("brand-new", id="back"),
        headers={**auth, **FHIR_JSON},
    )
    assert r.status_code == 201 and r.json()["meta"]["versionId"] == "3"


async def test_healthz_checks_the_database(client):
    r = await client.get("http://testserver/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}


async def test_token_search_from_the_official_parameters(client, auth):
    from tests.factories import observation

    p = (await _create(client, auth, patient("tok1", gender="female", active=True))).json()
    await _create(client, auth, patient("tok2", gender="male"))
    obs = observation(p["id"], code="8867-4") | {
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "vital-signs",
                    }
                ]
            }
        ]
    }
    o = (await _create(client, auth, obs)).json()
    await _create(client, auth, observation(p["id"], code="718-7"))
    cat = "http://terminology.hl7.org/CodeSystem/observation-category"
    for query, expect in [
        ("Patient?gender=female", {p["id"]}),
        ("Patient?active=true", {p["id"]}),
        ("Observation?code=http://loinc.org|8867-4", {o["id"]}),
        (f"Observation?category={cat}|vital-signs", {o["id"]}),
        ("Observation?category=vital-signs&code=8867-4", {o["id"]}),
        ("Observation?code=8867-4,718-7&status=final", None),
    ]:
        bundle = (await client.get(f"/{query}", headers=auth)).json()
        got = {e["resource"]["id"] for e in bundle.get("entry", [])}
        if expect is None:
            assert len(got) == 2, query
        else:
            assert got == expect, query
    cs = (await client.get("/metadata")).json()
    obs_params = next(r for r in cs["rest"][0]["resource"] if r["type"] == "Observation")
    names = {p["name"] for p in obs_params["searchParam"]}
    assert {"code", "category", "status", "_id", "identifier", "_tag"} <= names
    assert {"subject", "patient", "performer"} <= names
    assert "date" in names
    assert {"value-quantity", "code-value-quantity"} <= names
    assert "component-code-value-quantity" not in names  # needs per-component rows
    patient_params = next(r for r in cs["rest"][0]["resource"] if r["type"] == "Patient")
    assert {"name", "family", "given", "address"} <= {
        p["name"] for p in patient_params["searchParam"]
    }


async def test_reference_search(client, auth):
    from tests.factories import encounter, observation

    p1 = (await _create(client, auth, patient("ref1"))).json()["id"]
    p2 = (await _create(client, auth, patient("ref2"))).json()["id"]
    o1 = (await _create(client, auth, observation(p1))).json()["id"]
    o2 = (await _create(client, auth, observation(p2, code="718-7"))).json()["id"]
    e1 = (await _create(client, auth, encounter(p1))).json()["id"]
    external = observation(p1) | {
        "subject": {"reference": "https://elsewhere.example/fhir/Patient/9"}
    }
    o3 = (await _create(client, auth, external)).json()["id"]
    for query, expect in [
        (f"Observation?subject=Patient/{p1}", {o1}),
        (f"Observation?subject={p1}", {o1}),
        (f"Observation?subject:Patient={p1}", {o1}),
        (f"Observation?subject:Group={p1}", set()),
        (f"Observation?patient={p1},{p2}", {o1, o2}),
        (f"Observation?patient={FHIR_BASE}/Patient/{p2}", {o2}),
        (f"Observation?patient={p1}&code=718-7", set()),
        (f"Observation?patient={p2}&code=718-7", {o2}),
        ("Observation?subject=https://elsewhere.example/fhir/Patient/9", {o3}),
        (f"Encounter?patient={p1}", {e1}),
        (f"Encounter?subject=Patient/{p1}", {e1}),
    ]:
        bundle = (await client.get(f"/{query}", headers=auth)).json()
        assert {e["resource"]["id"] for e in bundle.get("entry", [])} == expect, query
    # updating the reference moves the index row
    body = (await client.get(f"/Observation/{o1}", headers=auth)).json()
    body["subject"] = {"reference": f"Patient/{p2}"}
    await client.put(f"/Observation/{o1}", json=body, headers={**auth, **FHIR_JSON})
    moved = (await client.get(f"/Observation?patient={p2}", headers=auth)).json()
    assert {e["resource"]["id"] for e in moved["entry"]} == {o1, o2}
    bad = await client.get("/Observation?subject:identifier=x", headers=auth)
    assert bad.status_code == 400
    bad = await client.get("/Observation?subject=a/b/c", headers=auth)
    assert bad.status_code == 400


async def test_string_search(client, auth):
    a = (
        await _create(
            client,
            auth,
            patient(
                "s1",
                name=[{"family": "Nguyễn", "given": ["Zoë"]}],
                address=[{"city": "San José", "state": "CA"}],
            ),
        )
    ).json()
    b = (
        await _create(client, auth, patient("s2", name=[{"family": "Ng", "given": ["Al_x"]}]))
    ).json()
    for query, expect in [
        ("Patient?family=nguyen", {a["id"]}),  # accent- and case-insensitive, starts-with
        ("Patient?family=NG", {a["id"], b["id"]}),
        ("Patient?family:exact=Ng", {b["id"]}),
        ("Patient?family:exact=ng", set()),
        ("Patient?name=zoe", {a["id"]}),
        ("Patient?name:contains=uye", {a["id"]}),
        ("Patient?given=al_", {b["id"]}),  # _ is literal, not a wildcard
        ("Patient?given=a%", set()),
        ("Patient?address-city=san jose", {a["id"]}),
        ("Patient?name=zoe&gender=unknown", {a["id"]}),
    ]:
        bundle = (await client.get(f"/{query}", headers=auth)).json()
        assert {e["resource"]["id"] for e in bundle.get("entry", [])} == expect, query
    assert (await client.get("/Patient?name:text=x", headers=auth)).status_code == 400


async def test_date_search_is_precision_aware(client, auth):
    from tests.factories import encounter, observation

    p = (await _create(client, auth, patient("d1", birthDate="1980-02-29"))).json()["id"]
    q = (await _create(client, auth, patient("d2", birthDate="1991"))).json()["id"]
    o1 = (
        await _create(client, auth, observation(p) | {"effectiveDateTime": "2024-03-05T10:15:00Z"})
    ).json()["id"]
    o2 = (
        await _create(
            client, auth, observation(p) | {"effectiveDateTime": "2024-03-06T02:00:00+05:00"}
        )
    ).json()["id"]
    e1 = (
        await _create(
            client, auth, encounter(p) | {"period": {"start": "2024-01-10", "end": "2024-01-12"}}
        )
    ).json()["id"]
    e2 = (
        await _create(client, auth, encounter(p) | {"period": {"start": "2024-02-01T08:00:00Z"}})
    ).json()["id"]
    for query, expect in [
        ("Patient?birthdate=1980-02-29", {p}),
        ("Patient?birthdate=1980", {p}),
        ("Patient?birthdate=1991-06", set()),  # 1991 is wider than June 1991: not eq
        ("Patient?birthdate=ge1991-06", {q}),  # ... but it overlaps what follows
        ("Patient?birthdate=lt1981", {p}),
        ("Patient?birthdate=gt1990", {q}),
        ("Observation?date=2024-03-05", {o1, o2}),  # 02:00+05:00 on the 6th is the 5th in UTC
        ("Observation?date=2024-03-05T10:15:00Z", {o1}),
        ("Observation?date=ne2024-03-05T10:15:00Z", {o2}),
        ("Observation?date=sa2024-03-05T10:15:00Z", {o2}),
        ("Observation?date=eb2024-03-05T20:00:00Z", {o1}),
        (f"Observation?patient={p}&date=ge2024-03-05T12:00:00Z", {o2}),
        ("Encounter?date=2024-01", {e1}),
        ("Encounter?date=ge2025-01-01", {e2}),  # no end: still going
        ("Encounter?date=2024-01-11", set()),  # the stay is longer than that day
        # ap widens by 10% of the distance from now (months here), so February's stay counts too
        ("Encounter?date=ap2024-01-11", {e1, e2}),
        ("Encounter?date=ap2023-01-01", set()),
        ("Patient?birthdate=1980,1991", {p, q}),
    ]:
        bundle = (await client.get(f"/{query.replace('+', '%2B')}", headers=auth)).json()
        assert {e["resource"]["id"] for e in bundle.get("entry", [])} == expect, query
    for bad in (
        "Patient?birthdate=yesterday",
        "Patient?birthdate=2024-02-30",
        "Patient?birthdate=xx2024",
    ):
        r = await client.get(f"/{bad}", headers=auth)
        assert r.status_code == 400 and r.json()["issue"][0]["code"] == "invalid", bad


async def test_last_updated_search_uses_the_server_time(client, auth):
    body = patient("lu", meta={"lastUpdated": "2001-01-01T00:00:00Z"})
    pid = (await _create(client, auth, body)).json()["id"]
    assert (await client.get("/Patient?_lastUpdated=2001", headers=auth)).json().get(
        "entry"
    ) is None
    now_year = (await client.get(f"/Patient/{pid}", headers=auth)).json()["meta"]["lastUpdated"][:4]
    found = (await client.get(f"/Patient?_lastUpdated={now_year}", headers=auth)).json()
    assert [e["resource"]["id"] for e in found["entry"]] == [pid]


async def test_tag_search(client, auth):
    tagged = patient("tg", meta={"tag": [{"system": "urn:dxf:source", "code": "adt"}]})
    pid = (await _create(client, auth, tagged)).json()["id"]
    await _create(client, auth, patient("untagged"))
    found = (await client.get("/Patient?_tag=urn:dxf:source|adt", headers=auth)).json()
    assert [e["resource"]["id"] for e in found["entry"]] == [pid]


async def test_uri_search(client, auth, make_token):
    profile = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient"
    pid = (await _create(client, auth, patient("u", meta={"profile": [profile]}))).json()["id"]
    await _create(client, auth, patient("v"))
    found = (await client.get(f"/Patient?_profile={profile}", headers=auth)).json()
    assert [e["resource"]["id"] for e in found["entry"]] == [pid]
    none = (await client.get(f"/Patient?_profile={profile[:-3]}", headers=auth)).json()
    assert "entry" not in none  # exact, not a prefix
    ep = {
        "resourceType": "Endpoint",
        "status": "active",
        "address": "https://qhio.example/fhir",
        "connectionType": {"code": "hl7-fhir-rest"},
        "payloadType": [{"text": "any"}],
    }
    admin = {"Authorization": f"Bearer {make_token('admin/intermediaries')}"}
    eid = (await _create(client, admin, ep)).json()["id"]  # Endpoint writes need the admin scope
    got = (await client.get("/Endpoint?_id=" + eid, headers=auth)).json()
    assert got["entry"][0]["resource"]["address"] == "https://qhio.example/fhir"


async def test_missing_and_not_modifiers(client, auth):
    from tests.factories import observation

    with_gender = (await _create(client, auth, patient("m1", gender="female"))).json()["id"]
    body = patient("m2")
    del body["gender"]
    without = (await _create(client, auth, body)).json()["id"]
    male = (await _create(client, auth, patient("m3", gender="male"))).json()["id"]
    for query, expect in [
        ("Patient?gender:missing=true", {without}),
        ("Patient?gender:missing=false", {with_gender, male}),
        ("Patient?gender:not=male", {with_gender, without}),
        ("Patient?gender:not=male,female", {without}),
        ("Patient?birthdate:missing=true", set()),
        ("Patient?family:missing=false", {with_gender, without, male}),
    ]:
        bundle = (await client.get(f"/{query}", headers=auth)).json()
        assert {e["resource"]["id"] for e in bundle.get("entry", [])} == expect, query
    o = (await _create(client, auth, observation(male))).json()["id"]
    found = (await client.get("/Observation?subject:missing=false", headers=auth)).json()
    assert [e["resource"]["id"] for e in found["entry"]] == [o]
    for bad in ("Patient?gender:missing=maybe", "Patient?_id:missing=true", "Patient?family:not=x"):
        assert (await client.get(f"/{bad}", headers=auth)).status_code == 400, bad
