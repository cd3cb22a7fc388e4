"""The conformance kit against our own server: every check passes or is skipped with a reason.

The kit talks to the app in process through httpx's ASGI transport, on both backends.
"""

from __future__ import annotations

import httpx
import pytest

from app.container import Container
from app.main import create_app
from conformance import Outcome, Report, run_kit
from tests.conftest import FHIR_BASE, TokenFactory, bearer


@pytest.fixture
def transport(container: Container) -> httpx.ASGITransport:
    return httpx.ASGITransport(app=create_app(container.settings, container=container))


def _failures(report: Report) -> list[str]:
    return [f"{r.id}: {r.reason}" for r in report.results if r.outcome is Outcome.FAIL]


async def test_our_server_passes_every_check_or_skips_with_a_reason(
    transport: httpx.ASGITransport, make_token: TokenFactory
) -> None:
    report = await run_kit(FHIR_BASE, token=make_token(), transport=transport)
    assert _failures(report) == []
    assert all(r.reason for r in report.results if r.outcome is Outcome.SKIP)
    assert report.leftovers == []
    passed = {r.id for r in report.results if r.outcome is Outcome.PASS}
    # the deep checks ran rather than being skipped
    assert {
        "crud.Patient.create",
        "crud.Observation.delete",
        "search.Patient.birthdate.lt",
        "search.Observation.value-quantity.ge",
        "search.Observation.subject",
        "search.Patient.name:contains",
        "search.Observation.code:not",
        "errors.missing-token",
        "errors.content-type",
        "http.if-match",
        "http.paging",
        "http.include.Observation:subject",
        "http.revinclude.Observation:subject",
        "operations.Patient.everything",
        "operations.Patient.match",
    } <= passed
    # every type the statement lists was looked at
    crud_types = {r.id.split(".")[1] for r in report.results if r.group == "crud"}
    assert len(crud_types) > 100


async def test_the_kit_removes_what_it_created(
    transport: httpx.ASGITransport, make_token: TokenFactory
) -> None:
    await run_kit(FHIR_BASE, token=make_token(), transport=transport, only=["search"])
    async with httpx.AsyncClient(transport=transport, base_url=FHIR_BASE) as c:
        found = await c.get("Patient", headers=bearer(make_token()))
    assert found.json().get("total", 0) == 0
    assert not found.json().get("entry")


async def test_read_only_run_creates_nothing_and_still_probes(
    transport: httpx.ASGITransport, make_token: TokenFactory
) -> None:
    # one resource for the probes to find
    async with httpx.AsyncClient(transport=transport, base_url=FHIR_BASE) as c:
        made = await c.post(
            "Patient",
            json={"resourceType": "Patient", "gender": "other"},
            headers={**bearer(make_token()), "Content-Type": "application/fhir+json"},
        )
    assert made.status_code == 201
    report = await run_kit(
        FHIR_BASE,
        token=make_token("system/*.rs"),
        transport=transport,
        read_only=True,
        only=["crud", "errors"],
    )
    assert _failures(report) == []
    outcomes = {r.id: r.outcome for r in report.results}
    assert outcomes["crud.Patient.read"] is Outcome.PASS
    assert outcomes["crud.Patient.vread"] is Outcome.PASS
    assert outcomes["errors.content-type"] is Outcome.SKIP
    assert not any(r.evidence and r.evidence[0].method == "POST" for r in report.results)


async def test_only_runs_the_named_groups(
    transport: httpx.ASGITransport, make_token: TokenFactory
) -> None:
    report = await run_kit(FHIR_BASE, token=make_token(), transport=transport, only=["errors"])
    assert {r.group for r in report.results} == {"errors"}
    with pytest.raises(ValueError, match="unknown group"):
        await run_kit(FHIR_BASE, transport=transport, only=["nope"])
