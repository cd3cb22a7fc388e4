"""The CapabilityStatement claims exactly what the router serves."""

from __future__ import annotations

from app.fhir.models import RESOURCE_TYPES
from app.fhir.rest.router import ROUTES
from app.fhir.search.criteria import search_params
from app.fhir.search.registry import params_for
from tests.conftest import FHIR_JSON
from tests.factories import patient


async def test_metadata_is_public_and_declares_r4(client):
    r = await client.get("/metadata")
    assert r.status_code == 200
    cs = r.json()
    assert cs["resourceType"] == "CapabilityStatement"
    assert cs["fhirVersion"] == "4.0.1"
    assert cs["kind"] == "instance"
    assert "application/fhir+json" in cs["format"]
    service = cs["rest"][0]["security"]["service"][0]["coding"][0]
    assert service["code"] == "SMART-on-FHIR"


async def test_claims_match_route_table(client):
    cs = (await client.get("/metadata")).json()
    rest = cs["rest"][0]
    routed = {r.interaction for r in ROUTES}
    claimed_system = {i["code"] for i in rest["interaction"]}
    assert claimed_system == routed & {"transaction", "batch", "history-system", "search-system"}
    assert {r["type"] for r in rest["resource"]} == set(RESOURCE_TYPES)
    for res in rest["resource"]:
        codes = {i["code"] for i in res["interaction"]}
        assert codes <= routed
        assert "patch" not in codes  # not served, so never claimed
        assert res["conditionalDelete"] == "not-supported"


_SAMPLES = {"date": "ge2024-01", "number": "5", "quantity": "gt5.4"}


def _sample(rtype: str, name: str, kind: str) -> str:
    if kind != "composite":
        return _SAMPLES.get(kind, "x")
    kinds = search_params(rtype)
    parts = params_for(rtype)[name].components
    return "$".join(_SAMPLES.get(kinds[c.param], "x") for c in parts)


async def test_every_claimed_interaction_is_served(client, auth):
    """Exercise each claimed interaction on every claimed type: none may answer 404 for the
    route or the type, nor 405."""
    cs = (await client.get("/metadata")).json()
    pid = (await client.post("/Patient", json=patient("m1"), headers={**auth, **FHIR_JSON})).json()[
        "id"
    ]
    for res in cs["rest"][0]["resource"]:
        rtype = res["type"]
        codes = {i["code"] for i in res["interaction"]}
        if "search-type" in codes:
            r = await client.get(f"/{rtype}", headers=auth)
            assert r.status_code == 200, (rtype, r.text)
            for param in res["searchParam"]:
                sample = _sample(rtype, param["name"], param["type"])
                r = await client.get(f"/{rtype}", params={param["name"]: sample}, headers=auth)
                assert r.status_code == 200, (rtype, param, r.text)
        if "history-type" in codes:
            assert (await client.get(f"/{rtype}/_history", headers=auth)).status_code == 200
    base = f"/Patient/{pid}"
    checks = {
        "read": ("GET", base, None),
        "vread": ("GET", f"{base}/_history/1", None),
        "history-instance": ("GET", f"{base}/_history", None),
        "update": ("PUT", base, patient("m1", id=pid)),
        "create": ("POST", "/Patient", patient("m2")),
        "delete": ("DELETE", base, None),
    }
    for code, (method, path, body) in checks.items():
        r = await client.request(method, path, json=body, headers={**auth, **FHIR_JSON})
        assert r.status_code < 300, (code, r.status_code, r.text)
    assert (await client.get("/_history", headers=auth)).status_code == 200


async def test_jwks_is_published(client, container):
    r = await client.get("http://testserver/.well-known/jwks.json")
    assert r.status_code == 200
    keys = r.json()["keys"]
    assert keys[0]["kid"] == container.keys.kid
    assert "d" not in keys[0] and "p" not in keys[0]  # public half only


async def test_every_declared_include_and_revinclude_is_accepted(client, auth):
    cs = (await client.get("/metadata")).json()
    by_type = {r["type"]: r for r in cs["rest"][0]["resource"]}
    for rtype in ("Patient", "Observation", "Encounter"):
        entry = by_type[rtype]
        assert "Observation:subject" in by_type["Patient"]["searchRevInclude"]
        for kind in ("searchInclude", "searchRevInclude"):
            param = "_include" if kind == "searchInclude" else "_revinclude"
            assert entry[kind], (rtype, kind)
            for value in entry[kind]:
                r = await client.get(rtype, params={param: value, "_count": "1"}, headers=auth)
                assert r.status_code == 200, (rtype, param, value, r.text[:200])
