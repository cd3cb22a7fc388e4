"""Scopes over HTTP: out-of-scope -> 403; patient-scoped tokens see and write only their own
compartment, on every path, and cannot tell another patient's data from no data."""

from __future__ import annotations

import pytest

from tests.conftest import FHIR_JSON, bearer
from tests.factories import encounter, observation, patient


@pytest.fixture
async def world(client, auth):
    """Two patients, each with an Observation and an Encounter, plus a Practitioner."""
    ids = {}
    for who in ("me", "other"):
        pid = (
            await client.post("/Patient", json=patient(f"mrn-{who}"), headers={**auth, **FHIR_JSON})
        ).json()["id"]
        obs = (
            await client.post("/Observation", json=observation(pid), headers={**auth, **FHIR_JSON})
        ).json()
        enc = (
            await client.post("/Encounter", json=encounter(pid), headers={**auth, **FHIR_JSON})
        ).json()
        ids[who] = {"patient": pid, "obs": obs["id"], "enc": enc["id"], "obs_body": obs}
    prac = (
        await client.post(
            "/Practitioner", json={"resourceType": "Practitioner"}, headers={**auth, **FHIR_JSON}
        )
    ).json()
    ids["practitioner"] = prac["id"]
    return ids


async def test_no_token_is_401_everywhere_but_metadata(client, world):
    me = world["me"]
    for method, path in [
        ("GET", f"/Patient/{me['patient']}"),
        ("GET", f"/Patient/{me['patient']}/_history/1"),
        ("GET", f"/Patient/{me['patient']}/_history"),
        ("GET", "/Patient/_history"),
        ("GET", "/_history"),
        ("GET", "/Patient"),
        ("POST", "/Patient"),
        ("PUT", f"/Patient/{me['patient']}"),
        ("DELETE", f"/Patient/{me['patient']}"),
        ("POST", ""),
    ]:
        r = await client.request(method, path, json={} if method in ("POST", "PUT") else None)
        assert r.status_code == 401, (method, path, r.status_code)
        assert r.json()["resourceType"] == "OperationOutcome"
    assert (await client.get("/metadata")).status_code == 200


async def test_out_of_scope_is_403(client, make_token, world):
    token = bearer(make_token("system/Observation.rs"))
    assert (
        await client.get(f"/Observation/{world['me']['obs']}", headers=token)
    ).status_code == 200
    for method, path, body in [
        ("GET", f"/Patient/{world['me']['patient']}", None),
        ("GET", "/Encounter", None),
        ("POST", "/Observation", observation(world["me"]["patient"])),
        ("DELETE", f"/Observation/{world['me']['obs']}", None),
    ]:
        r = await client.request(method, path, json=body, headers={**token, **FHIR_JSON})
        assert r.status_code == 403, (method, path, r.text)
        assert r.json()["issue"][0]["code"] == "forbidden"


async def test_read_only_scope_never_writes(client, make_token, world):
    token = bearer(make_token("system/*.read"))
    obs = world["me"]["obs_body"]
    r = await client.put(
        f"/Observation/{obs['id']}",
        json={**obs, "status": "amended"},
        headers={**token, **FHIR_JSON},
    )
    assert r.status_code == 403
    r = await client.post(
        "",
        json={
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [{"resource": patient("rw"), "request": {"method": "POST", "url": "Patient"}}],
        },
        headers={**token, **FHIR_JSON},
    )
    assert r.status_code == 403


async def test_patient_token_reads_own_compartment(client, make_token, world):
    me = world["me"]
    token = bearer(make_token("patient/*.rs", patient=me["patient"]))
    for path in [
        f"/Patient/{me['patient']}",
        f"/Observation/{me['obs']}",
        f"/Encounter/{me['enc']}",
        f"/Observation/{me['obs']}/_history/1",
        f"/Observation/{me['obs']}/_history",
    ]:
        r = await client.get(path, headers=token)
        assert r.status_code == 200, (path, r.text)
    search = (await client.get("/Observation", headers=token)).json()
    assert [e["resource"]["id"] for e in search["entry"]] == [me["obs"]]
    hist = (await client.get("/_history", headers=token)).json()
    seen = {e["fullUrl"].rsplit("/", 1)[1] for e in hist["entry"]}
    assert seen == {me["patient"], me["obs"], me["enc"]}


async def test_patient_token_cannot_tell_other_patient_from_nothing(client, make_token, world):
    me, other = world["me"], world["other"]
    token = bearer(make_token("patient/*.rs", patient=me["patient"]))
    pairs = [
        (f"/Patient/{other['patient']}", "/Patient/does-not-exist"),
        (f"/Observation/{other['obs']}", "/Observation/does-not-exist"),
        (f"/Observation/{other['obs']}/_history/1", "/Observation/does-not-exist/_history/1"),
        (f"/Observation/{other['obs']}/_history", "/Observation/does-not-exist/_history"),
        (f"/Practitioner/{world['practitioner']}", "/Practitioner/does-not-exist"),
    ]
    for existing, missing in pairs:
        a = await client.get(existing, headers=token)
        b = await client.get(missing, headers=token)
        assert a.status_code == b.status_code == 404, (existing, a.status_code, b.status_code)
        assert a.json()["issue"][0]["code"] == b.json()["issue"][0]["code"] == "not-found"
        assert "mrn-other" not in a.text and "Testperson" not in a.text
    for query in [f"_id={other['obs']}", "identifier=mrn-other", f"_id={other['patient']}"]:
        for rtype in ("Observation", "Patient"):
            bundle = (await client.get(f"/{rtype}?{query}", headers=token)).json()
            assert "entry" not in bundle, (rtype, query)
    post = await client.post(
        "/Patient/_search",
        content=f"_id={other['patient']}".encode(),
        headers={**token, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert "entry" not in post.json()
    for path in ("/Observation/_history", "/_history", "/Patient/_history"):
        text = (await client.get(path, headers=token)).text
        assert other["patient"] not in text and other["obs"] not in text, path


async def test_tampered_paging_cursor_reveals_nothing(client, make_token, world):
    me, other = world["me"], world["other"]
    token = bearer(make_token("patient/*.rs", patient=me["patient"]))
    for cursor in ("0", "999999999", "1"):
        r = await client.get(f"/_history?_cursor={cursor}", headers=token)
        assert other["obs"] not in r.text and other["patient"] not in r.text
    r = await client.get("/Observation?_cursor=&_count=1", headers=token)
    assert other["obs"] not in r.text


async def test_patient_token_writes_only_own_compartment(client, make_token, auth, world):
    me, other = world["me"], world["other"]
    token = {**bearer(make_token("patient/*.cruds", patient=me["patient"])), **FHIR_JSON}
    mine = await client.post("/Observation", json=observation(me["patient"]), headers=token)
    assert mine.status_code == 201
    theirs = await client.post("/Observation", json=observation(other["patient"]), headers=token)
    assert theirs.status_code == 403
    other_obs = other["obs_body"]
    hijack = {**other_obs, "subject": {"reference": f"Patient/{me['patient']}"}}
    assert (
        await client.put(f"/Observation/{other_obs['id']}", json=hijack, headers=token)
    ).status_code == 403
    push = {**world["me"]["obs_body"], "subject": {"reference": f"Patient/{other['patient']}"}}
    assert (
        await client.put(f"/Observation/{me['obs']}", json=push, headers=token)
    ).status_code == 403
    assert (await client.delete(f"/Observation/{other['obs']}", headers=token)).status_code == 403
    assert (await client.delete("/Observation/not-there", headers=token)).status_code == 403
    tx = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": observation(me["patient"]),
                "request": {"method": "POST", "url": "Observation"},
            },
            {
                "resource": observation(other["patient"]),
                "request": {"method": "POST", "url": "Observation"},
            },
        ],
    }
    assert (await client.post("", json=tx, headers=token)).status_code == 403
    # nothing of the other patient's changed
    got = (await client.get(f"/Observation/{other['obs']}", headers=auth)).json()
    assert got["meta"]["versionId"] == "1"
    search = (await client.get("/Observation?_count=100", headers=auth)).json()
    assert len(search["entry"]) == 3  # two seeded + the one allowed create


async def test_patient_token_conditional_create_does_not_leak(client, make_token, world):
    me = world["me"]
    token = {**bearer(make_token("patient/*.cruds", patient=me["patient"])), **FHIR_JSON}
    r = await client.post(
        "/Patient",
        json=patient("mrn-other"),
        headers={**token, "If-None-Exist": "identifier=mrn-other"},
    )
    assert r.status_code == 403
    assert world["other"]["patient"] not in r.text
