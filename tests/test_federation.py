"""Federated reads over HTTP: Patient/$everything and Patient?_federate=true with intermediaries
(in-process adapters, and the generic FHIR adapter against pytest-httpx)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from pytest_httpx import HTTPXMock

from app.adapters.base import FEDERATED_HOP_HEADER, AdapterError, FailureKind
from app.adapters.config import EndpointCredentials, RegisteredEndpoint
from app.adapters.fhir import FhirAdapter
from app.adapters.registry import CheckRun
from app.federation.breaker import BreakerState
from app.federation.directory import StaticDirectory
from app.federation.federator import Federator
from app.fhir.models import validate_resource
from tests.conftest import FHIR_BASE, FHIR_JSON, bearer
from tests.factories import observation, patient
from tests.federation_kit import (
    MRN,
    Clock,
    FakeAdapter,
    located,
    remote_observation,
    remote_patient,
)

QA = "https://qhio-a.example.test/fhir"
QB = "https://qhio-b.example.test/fhir"
QC = "https://qhio-c.example.test/fhir"


def federate(container, *adapters, deadline: float = 3.0, **kw: Any) -> Federator:
    container.federator = Federator(StaticDirectory(adapters), deadline=deadline, **kw)
    return container.federator


async def _create(client, auth, body: dict[str, Any]) -> str:
    r = await client.post(f"/{body['resourceType']}", json=body, headers={**auth, **FHIR_JSON})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


@pytest.fixture
async def local(client, auth) -> dict[str, str]:
    """A local Patient (MRN M1) with one Observation, and another local Patient."""
    pid = await _create(client, auth, patient("M1"))
    obs = await _create(client, auth, observation(pid))
    other = await _create(client, auth, patient("M2", family="Otherperson"))
    return {"patient": pid, "obs": obs, "other": other}


async def _bundle(client, headers, url: str) -> dict[str, Any]:
    r = await client.get(url, headers=headers)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["resourceType"] == "Bundle" and body["type"] == "searchset"
    return body


def _keys(bundle: dict[str, Any]) -> set[str]:
    return {
        e["fullUrl"]
        for e in bundle.get("entry", [])
        if e.get("search", {}).get("mode") != "outcome"
    }


def _issues(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    outcomes = [
        e["resource"]
        for e in bundle.get("entry", [])
        if e.get("search", {}).get("mode") == "outcome"
    ]
    assert len(outcomes) <= 1
    return outcomes[0]["issue"] if outcomes else []


def _by_type(bundle: dict[str, Any], rtype: str) -> list[dict[str, Any]]:
    return [e for e in bundle.get("entry", []) if e["resource"]["resourceType"] == rtype]


async def test_remote_entries_carry_source_fullurl_and_provenance(client, auth, container, local):
    a = FakeAdapter(
        "QHIO A",
        QA,
        patients=[located("ra1")],
        resources=[remote_patient("ra1"), remote_observation("o1", "Patient/ra1", code="718-7")],
    )
    federate(container, a)
    bundle = await _bundle(client, auth, f"/Patient/{local['patient']}/$everything")
    assert _keys(bundle) >= {
        f"{FHIR_BASE}/Patient/{local['patient']}",
        f"{FHIR_BASE}/Observation/{local['obs']}",
        f"{QA}/Patient/ra1",
        f"{QA}/Observation/o1",
    }
    assert a.located[0].identifiers == ((MRN, "M1"),)  # located by the shared identifier
    remote = [e for e in bundle["entry"] if e["fullUrl"].startswith(QA)]
    assert remote and all(e["resource"]["meta"]["source"] == QA for e in remote)
    local_entries = [e for e in bundle["entry"] if e["fullUrl"].startswith(FHIR_BASE)]
    assert all("source" not in e["resource"].get("meta", {}) for e in local_entries)
    [prov] = [e["resource"] for e in _by_type(bundle, "Provenance")]
    assert {t["reference"] for t in prov["target"]} == {f"{QA}/Patient/ra1", f"{QA}/Observation/o1"}
    assert prov["agent"][0]["who"]["identifier"]["value"] == QA
    assert prov["agent"][0]["type"]["coding"][0]["code"] == "transmitter"
    validate_resource(prov)
    assert _issues(bundle) == []


async def test_another_patients_data_in_a_remote_answer_is_dropped(client, auth, container, local):
    resources = [
        remote_patient("ra1"),
        remote_observation("mine", "Patient/ra1"),
        remote_observation("theirs", "Patient/someone-else"),  # another patient's
        remote_observation("mixed", "Patient/ra1", performer=[{"reference": "Patient/x9"}]),
        remote_observation(
            "abs", f"{QA}/Patient/ra1", focus=[{"reference": "https://x/Patient/7"}]
        ),
        remote_patient("someone-else", mrn="M9"),
        {"resourceType": "Practitioner", "id": "unreferenced"},
        {"resourceType": "Practitioner", "id": "doc"},
        {
            **remote_observation("seen-by", "Patient/ra1"),
            "performer": [{"reference": "Practitioner/doc"}],
        },
        {"resourceType": "Observation", "id": "bad id!"},
        "not a resource",
    ]
    federate(container, FakeAdapter("QHIO A", QA, patients=[located("ra1")], resources=resources))
    bundle = await _bundle(client, auth, f"/Patient/{local['patient']}/$everything")
    remote = {k.removeprefix(QA + "/") for k in _keys(bundle) if k.startswith(QA)}
    assert remote == {"Patient/ra1", "Observation/mine", "Observation/seen-by", "Practitioner/doc"}
    [withheld] = [i for i in _issues(bundle) if i["code"] == "suppressed"]
    assert withheld["severity"] == "information"
    assert "7 resource(s) were withheld" in withheld["diagnostics"]
    for phi in ("someone-else", "x9", "M9", "Testperson", "1980"):
        assert phi not in withheld["diagnostics"]


async def test_a_hanging_intermediary_is_reported_within_the_deadline(
    client, auth, container, local
):
    hanging = FakeAdapter("Slow QHIO", QB, hang=True)
    fine = FakeAdapter(
        "QHIO A",
        QA,
        patients=[located("ra1")],
        resources=[remote_patient("ra1"), remote_observation("o1", "Patient/ra1")],
    )
    federate(container, hanging, fine, deadline=0.3)
    started = time.monotonic()
    bundle = await _bundle(client, auth, f"/Patient/{local['patient']}/$everything")
    elapsed = time.monotonic() - started
    assert elapsed < 0.3 + 1.0  # the deadline, plus generous room for a loaded machine
    assert f"{QA}/Observation/o1" in _keys(bundle)
    [issue] = [i for i in _issues(bundle) if i["severity"] == "warning"]
    assert issue["code"] == "timeout" and QB in issue["diagnostics"]
    await asyncio.wait_for(hanging.cancelled.wait(), 5)  # its call was cancelled


async def test_failing_intermediaries_never_fail_the_answer(client, auth, container, local):
    class Broken(FakeAdapter):
        async def locate(self, person):  # an adapter bug, not an AdapterError
            raise KeyError("entry")

    refused = FakeAdapter(
        "QHIO B", QB, error=AdapterError(FailureKind.AUTH, "token refused", status=401)
    )
    federate(container, Broken("QHIO C", QC), refused)
    bundle = await _bundle(client, auth, f"/Patient/{local['patient']}/$everything")
    assert _keys(bundle) == {
        f"{FHIR_BASE}/Patient/{local['patient']}",
        f"{FHIR_BASE}/Observation/{local['obs']}",
    }
    codes = {i["code"]: i["diagnostics"] for i in _issues(bundle)}
    assert set(codes) == {"structure", "security"}
    assert "KeyError" in codes["structure"] and "HTTP 401" in codes["security"]


async def test_an_unavailable_registry_leaves_the_local_answer(client, auth, container, local):
    class Down:
        async def active(self):
            raise OSError("database gone")

    container.federator = Federator(Down())
    bundle = await _bundle(client, auth, f"/Patient/{local['patient']}/$everything")
    assert len(_keys(bundle)) == 2
    assert [i["code"] for i in _issues(bundle)] == ["transient"]


async def test_circuit_breaker_opens_after_failures_and_half_opens_later(
    client, auth, container, local
):
    clock = Clock()
    flaky = FakeAdapter("QHIO B", QB, error=AdapterError(FailureKind.UNREACHABLE, "refused"))
    fed = federate(container, flaky, breaker_failures=2, breaker_cooldown=30, clock=clock)
    url = f"/Patient/{local['patient']}/$everything"

    async def codes() -> list[str]:
        return [i["code"] for i in _issues(await _bundle(client, auth, url))]

    assert await codes() == ["transient"]
    assert await codes() == ["transient"]
    assert fed.breaker(QB).state is BreakerState.OPEN
    assert await codes() == ["transient"]  # circuit-open: not called
    assert len(flaky.located) == 2
    body = await _bundle(client, auth, url)
    assert "circuit-open" in _issues(body)[0]["diagnostics"]
    clock.advance(29)
    await codes()
    assert len(flaky.located) == 2
    clock.advance(1)  # cooled down: half-open, one trial call
    assert fed.breaker(QB).state is BreakerState.HALF_OPEN
    await codes()
    assert len(flaky.located) == 3 and fed.breaker(QB).state is BreakerState.OPEN  # it failed
    clock.advance(30)
    flaky.error = None
    flaky.patients = [located("rb1")]
    flaky.resources = [remote_patient("rb1")]
    body = await _bundle(client, auth, url)
    assert f"{QB}/Patient/rb1" in _keys(body)
    assert fed.breaker(QB).state is BreakerState.CLOSED


async def test_exact_duplicates_appear_once(client, auth, container, local):
    same = {"effectiveDateTime": "2024-05-01", "identifier": [{"system": "urn:x", "value": "1"}]}
    local_copy = {**observation(local["patient"], code="2339-0"), "effectiveDateTime": "2024-01-01"}
    await _create(client, auth, local_copy)
    a = FakeAdapter(
        "QHIO A",
        QA,
        patients=[located("ra1")],
        resources=[
            remote_patient("ra1"),
            remote_observation("oa", "Patient/ra1", code="718-7", **same),
            {
                **remote_observation("copy", "Patient/ra1", code="2339-0"),
                "effectiveDateTime": "2024-01-01",
                "valueQuantity": local_copy["valueQuantity"],
            },
        ],
    )
    b = FakeAdapter(
        "QHIO B",
        QB,
        patients=[located("rb7")],
        resources=[
            remote_patient("rb7", mrn="B-77"),
            # the same Observation as A's, under B's own ids and with its own meta
            {
                **remote_observation("ob", f"{QB}/Patient/rb7", code="718-7", **same),
                "meta": {"versionId": "4"},
            },
            remote_observation("ob2", "Patient/rb7", code="718-7"),  # differs: no identifier
        ],
    )
    federate(container, a, b)
    bundle = await _bundle(client, auth, f"/Patient/{local['patient']}/$everything")
    keys = _keys(bundle)
    assert f"{QA}/Observation/oa" in keys and f"{QB}/Observation/ob" not in keys
    assert f"{QA}/Observation/copy" not in keys  # a copy of a local Observation
    assert f"{QB}/Observation/ob2" in keys and f"{QB}/Patient/rb7" in keys
    dupes = [i["diagnostics"] for i in _issues(bundle) if "duplicated" in i["diagnostics"]]
    assert len(dupes) == 2 and all("1 resource(s)" in d for d in dupes)
    targets = {
        t["reference"] for p in _by_type(bundle, "Provenance") for t in p["resource"]["target"]
    }
    assert f"{QB}/Observation/ob" not in targets and f"{QB}/Observation/ob2" in targets


async def test_federate_false_answers_from_local_data(client, auth, container, local):
    a = FakeAdapter("QHIO A", QA, patients=[located("ra1")], resources=[remote_patient("ra1")])
    federate(container, a)
    bundle = await _bundle(client, auth, f"/Patient/{local['patient']}/$everything?_federate=false")
    assert all(k.startswith(FHIR_BASE) for k in _keys(bundle)) and a.located == []
    assert not _issues(bundle)
    bundle = await _bundle(client, auth, f"/Patient/{local['patient']}/$everything")
    assert f"{QA}/Patient/ra1" in _keys(bundle)  # federated by default
    r = await client.get(f"/Patient/{local['patient']}/$everything?_federate=maybe", headers=auth)
    assert r.status_code == 400


async def test_default_off_by_setting(client, auth, container, local):
    a = FakeAdapter("QHIO A", QA, patients=[located("ra1")], resources=[remote_patient("ra1")])
    federate(container, a)
    container.settings = container.settings.model_copy(update={"federate_default": False})
    url = f"/Patient/{local['patient']}/$everything"
    assert all(k.startswith(FHIR_BASE) for k in _keys(await _bundle(client, auth, url)))
    assert f"{QA}/Patient/ra1" in _keys(await _bundle(client, auth, url + "?_federate=true"))


def _record_adapter() -> FakeAdapter:
    return FakeAdapter(
        "QHIO A",
        QA,
        patients=[located("ra1")],
        resources=[
            remote_patient("ra1", generalPractitioner=[{"reference": "Practitioner/doc"}]),
            remote_observation("o1", "Patient/ra1"),
            {
                "resourceType": "Encounter",
                "id": "e1",
                "status": "finished",
                "class": {"code": "AMB"},
                "subject": {"reference": "Patient/ra1"},
            },
            {"resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/ra1"}},
            {"resourceType": "Practitioner", "id": "doc"},
        ],
    )


async def test_scopes_filter_remote_types(client, auth, container, make_token, local):
    federate(container, _record_adapter())
    url = f"/Patient/{local['patient']}/$everything"
    narrow = bearer(make_token("system/Patient.rs system/Observation.rs"))
    bundle = await _bundle(client, narrow, url)
    remote = {k.removeprefix(QA + "/") for k in _keys(bundle) if k.startswith(QA)}
    assert remote == {"Patient/ra1", "Observation/o1"}
    assert not _by_type(bundle, "Provenance")  # the token may not read Provenance
    [withheld] = [i for i in _issues(bundle) if i["code"] == "suppressed"]
    assert "3 of types the access token may not read" in withheld["diagnostics"]

    everything = _keys(await _bundle(client, auth, url))
    assert {f"{QA}/Encounter/e1", f"{QA}/Condition/c1", f"{QA}/Practitioner/doc"} <= everything


async def test_patient_token_sees_its_own_federated_record_only(
    client, container, make_token, local
):
    adapter = _record_adapter()
    federate(container, adapter)
    mine = bearer(make_token("patient/*.rs", patient=local["patient"]))
    bundle = await _bundle(client, mine, f"/Patient/{local['patient']}/$everything")
    remote = {k.removeprefix(QA + "/") for k in _keys(bundle) if k.startswith(QA)}
    # supporting resources outside the compartment are not for a patient-confined token,
    # exactly as locally
    assert remote == {"Patient/ra1", "Observation/o1", "Encounter/e1", "Condition/c1"}
    assert _by_type(bundle, "Provenance")
    # the type level is the token's own record, federated too
    bundle = await _bundle(client, mine, "/Patient/$everything")
    assert f"{QA}/Observation/o1" in _keys(bundle)
    # another patient's record is not found, and nobody is asked about them
    calls = len(adapter.located)
    r = await client.get(f"/Patient/{local['other']}/$everything", headers=mine)
    assert r.status_code == 404 and len(adapter.located) == calls


async def test_remote_entries_honour_type_and_care_dates(client, auth, container, local):
    adapter = FakeAdapter(
        "QHIO A",
        QA,
        patients=[located("ra1")],
        resources=[
            remote_patient("ra1"),
            remote_observation("old", "Patient/ra1", effectiveDateTime="2019-06-01"),
            remote_observation("new", "Patient/ra1", effectiveDateTime="2024-06-01"),
            {"resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/ra1"}},
        ],
    )
    federate(container, adapter)
    base = f"/Patient/{local['patient']}/$everything"
    keys = _keys(await _bundle(client, auth, f"{base}?_type=Observation&start=2024-01-01"))
    assert {k for k in keys if k.startswith(QA)} == {f"{QA}/Observation/new"}
    assert adapter.fetched[-1][1] == ("Observation",)  # _type is passed on


async def test_remote_entries_come_on_the_first_page_only(client, auth, container, local):
    for _ in range(3):
        await _create(client, auth, observation(local["patient"]))
    adapter = FakeAdapter(
        "QHIO A",
        QA,
        patients=[located("ra1")],
        resources=[remote_patient("ra1"), remote_observation("o1", "Patient/ra1")],
    )
    federate(container, adapter)
    first = await _bundle(client, auth, f"/Patient/{local['patient']}/$everything?_count=2")
    assert len([k for k in _keys(first) if k.startswith(FHIR_BASE)]) == 2
    assert f"{QA}/Observation/o1" in _keys(first)
    nxt = next(ln["url"] for ln in first["link"] if ln["relation"] == "next")
    seen_local = {k for k in _keys(first) if k.startswith(FHIR_BASE)}
    while nxt:
        page = await _bundle(client, auth, nxt.split("/fhir", 1)[1])
        assert all(k.startswith(FHIR_BASE) for k in _keys(page))
        seen_local |= _keys(page)
        nxt = next((ln["url"] for ln in page["link"] if ln["relation"] == "next"), "")
    assert len(adapter.located) == 1 and len(seen_local) == 5


# ---- federated Patient search ------------------------------------------------------------------


async def test_federated_patient_search(client, auth, container, local):
    a = FakeAdapter("QHIO A", QA, patients=[located("ra1"), located("ra2", score=0.5)])
    federate(container, a)
    bundle = await _bundle(client, auth, f"/Patient?identifier={MRN}|M1&_federate=true")
    keys = {k for k in _keys(bundle) if not k.startswith("urn:uuid:")}
    assert keys == {f"{FHIR_BASE}/Patient/{local['patient']}", f"{QA}/Patient/ra1"}
    [prov] = _by_type(bundle, "Provenance")
    assert prov["search"]["mode"] == "include"
    [remote] = [e for e in bundle["entry"] if e.get("fullUrl") == f"{QA}/Patient/ra1"]
    assert remote["resource"]["meta"]["source"] == QA
    assert remote["search"] == {"mode": "match", "score": 1.0}
    assert a.located[0].identifiers == ((MRN, "M1"),)
    assert any("1 candidate patient(s) were not used" in i["diagnostics"] for i in _issues(bundle))
    assert bundle.get("total") in (None, 1)  # total counts local matches
    self_link = next(ln["url"] for ln in bundle["link"] if ln["relation"] == "self")
    assert "_federate=true" in self_link

    calls = len(a.located)
    bundle = await _bundle(client, auth, f"/Patient?identifier={MRN}|M1")
    assert all(k.startswith(FHIR_BASE) for k in _keys(bundle)) and len(a.located) == calls
    r = await client.get("/Observation?_federate=true", headers=auth)
    assert r.status_code == 400
    bundle = await _bundle(client, auth, "/Patient?gender=unknown&_federate=true")
    assert any("names no identifier" in i["diagnostics"] for i in _issues(bundle))
    assert len(a.located) == calls


async def test_federated_search_under_a_patient_token_locates_only_itself(
    client, container, make_token, local
):
    a = FakeAdapter("QHIO A", QA, patients=[located("ra1")])
    federate(container, a)
    mine = bearer(make_token("patient/*.rs", patient=local["patient"]))
    bundle = await _bundle(client, mine, "/Patient?family=Otherperson&_federate=true")
    assert _keys(bundle) == set() and a.located == []  # not its own Patient: nobody is asked
    bundle = await _bundle(client, mine, "/Patient?_federate=true")
    assert f"{QA}/Patient/ra1" in _keys(bundle)
    assert a.located[0].identifiers == ((MRN, "M1"),)  # its own Patient, not the query


# ---- the generic FHIR adapter against a mocked intermediary -------------------------------------


def _searchset(*resources: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": r, "search": {"mode": "match"}} for r in resources],
    }


@pytest.mark.httpx_mock(assert_all_responses_were_requested=False)
async def test_generic_fhir_adapter_end_to_end(
    client, auth, container, local, httpx_mock: HTTPXMock
):
    httpx_mock.add_response(
        url=httpx.URL(f"{QA}/Patient", params={"identifier": f"{MRN}|M1"}),
        json=_searchset(remote_patient("ra1")),
    )
    httpx_mock.add_response(
        url=httpx.URL(f"{QA}/Patient/ra1/$everything"),
        json=_searchset(
            remote_patient("ra1"),
            remote_observation("o1", "Patient/ra1"),
            remote_observation("leak", "Patient/ra1", performer=[{"reference": "Patient/zz"}]),
        ),
    )
    async with httpx.AsyncClient() as http:
        adapter = FhirAdapter(RegisteredEndpoint(name="QHIO A", address=QA), http)
        federate(container, adapter)
        bundle = await _bundle(client, auth, f"/Patient/{local['patient']}/$everything")
    remote = {k for k in _keys(bundle) if k.startswith(QA)}
    assert remote == {f"{QA}/Patient/ra1", f"{QA}/Observation/o1"}
    assert any(i["code"] == "suppressed" for i in _issues(bundle))


async def test_a_federated_call_is_answered_from_local_data_only(
    client, auth, container, local, httpx_mock: HTTPXMock
):
    """Two dxf-bridge servers registered with each other must not federate in a loop: the
    generic adapter marks its requests, and a marked request is never federated again."""
    a = FakeAdapter("QHIO A", QA, patients=[located("ra1")], resources=[remote_patient("ra1")])
    federate(container, a)
    hop = {**auth, FEDERATED_HOP_HEADER: "1"}
    bundle = await _bundle(client, hop, f"/Patient/{local['patient']}/$everything")
    assert all(k.startswith(FHIR_BASE) for k in _keys(bundle)) and a.located == []
    r = await client.get("/Patient?identifier=M1&_federate=true", headers=hop)
    assert r.status_code == 200 and a.located == []

    httpx_mock.add_response(url=httpx.URL(f"{QA}/Patient/ra1/$everything"), json=_searchset())
    async with httpx.AsyncClient() as http:
        adapter = FhirAdapter(RegisteredEndpoint(name="QHIO A", address=QA), http)
        await adapter.fetch_record(located("ra1"))
    assert httpx_mock.get_requests()[0].headers[FEDERATED_HOP_HEADER] == "1"


@pytest.mark.httpx_mock(assert_all_responses_were_requested=False)
async def test_registered_intermediaries_are_asked(client, auth, container, local, httpx_mock):
    """The container's federator asks the registry's active registrations."""
    service = container.intermediaries()
    await service.registry.add("qhio-a", kind="fhir", credentials=EndpointCredentials(), address=QA)
    httpx_mock.add_response(
        url=httpx.URL(f"{QA}/Patient", params={"identifier": f"{MRN}|M1"}),
        json=_searchset(remote_patient("ra1")),
    )
    httpx_mock.add_response(
        url=httpx.URL(f"{QA}/Patient/ra1/$everything"),
        json=_searchset(remote_patient("ra1"), remote_observation("o1", "Patient/ra1")),
    )
    url = f"/Patient/{local['patient']}/$everything"
    try:
        assert all(k.startswith(FHIR_BASE) for k in _keys(await _bundle(client, auth, url)))
        await service.registry.record_check("qhio-a", CheckRun(datetime.now(UTC), "active"))
        assert f"{QA}/Observation/o1" in _keys(await _bundle(client, auth, url))
    finally:
        await service.aclose()
