"""The `us-core` group against our server: every claimed profile's checks pass, in a run that
creates the kit's samples and in a read-only run over data already there."""

from __future__ import annotations

from collections import Counter

import httpx
import pytest

from app.container import Container
from app.main import create_app
from conformance import Outcome, Report, run_kit
from conformance.uscore_samples import ORDER, SAMPLES, fill
from tests.conftest import FHIR_BASE, TokenFactory, bearer


@pytest.fixture
def transport(container: Container) -> httpx.ASGITransport:
    return httpx.ASGITransport(app=create_app(container.settings, container=container))


def _by(report: Report, outcome: Outcome) -> list[str]:
    return [f"{r.id}: {r.reason}" for r in report.results if r.outcome is outcome]


async def test_our_server_meets_every_us_core_claim(
    transport: httpx.ASGITransport, make_token: TokenFactory
) -> None:
    report = await run_kit(FHIR_BASE, token=make_token(), transport=transport, only=["us-core"])
    assert _by(report, Outcome.FAIL) == []
    assert _by(report, Outcome.SKIP) == []
    assert report.leftovers == []
    kinds = Counter(r.id.split(".")[2] for r in report.results if r.id.count(".") >= 2)
    # every claimed profile (48) got each kind of check
    for kind in ("declared", "instance", "read", "mandatory", "must-support"):
        assert kinds[kind] == 48, kind
    ids = {r.id for r in report.results}
    assert {
        "us-core.server.profiles",
        "us-core.server.instantiates",
        "us-core.us-core-patient.search.birthdate+name",
        "us-core.us-core-encounter.search.date.gt",
        "us-core.us-core-observation-lab.search.patient+category+date",
        "us-core.us-core-practitionerrole.search.practitioner.identifier",
        "us-core.us-core-medicationrequest.search.status.or",
        "us-core.us-core-patient.search.identifier.code",
        "us-core.us-core-heart-rate.search.patient.id",
        "us-core.Observation.revinclude",
        "us-core.MedicationRequest.include.medication",
    } <= ids
    assert not any(i.startswith("us-core.us-core-documentreference") for i in ids)  # unclaimed
    for result in report.results:
        assert result.rule.url.startswith("https://hl7.org/fhir/us/core/STU6.1/"), result.id
        if result.id.split(".")[-1] not in ("declared", "profiles", "instantiates"):
            assert result.evidence, result.id


async def test_read_only_run_checks_the_data_already_there(
    transport: httpx.ASGITransport, make_token: TokenFactory
) -> None:
    """Store the kit's samples first, then run without creating anything: the group finds an
    instance of each profile by its identifying codes and checks searches and elements on it."""
    ids: dict[str, str] = {}
    async with httpx.AsyncClient(transport=transport, base_url=FHIR_BASE) as client:
        headers = {**bearer(make_token()), "Content-Type": "application/fhir+json"}
        for slug in ORDER:
            if slug not in SAMPLES or slug == "us-core-documentreference":
                continue
            made = await client.post(
                SAMPLES[slug]["resourceType"], json=fill(SAMPLES[slug], ids), headers=headers
            )
            assert made.status_code == 201, made.text
            ids[slug] = made.json()["id"]
    report = await run_kit(
        FHIR_BASE,
        token=make_token("system/*.rs"),
        transport=transport,
        read_only=True,
        only=["us-core"],
    )
    assert _by(report, Outcome.FAIL) == []
    outcomes = {r.id: r.outcome for r in report.results}
    assert outcomes["us-core.us-core-patient.instance"] is Outcome.PASS
    assert outcomes["us-core.us-core-heart-rate.search.date.le"] is Outcome.PASS
    assert outcomes["us-core.us-core-observation-lab.mandatory"] is Outcome.PASS
    # the stored Provenance sample names the Patient only; the kit writes none of its own
    assert outcomes["us-core.Patient.revinclude"] is Outcome.PASS
    assert outcomes["us-core.Observation.revinclude"] is Outcome.SKIP
    assert not any(e.method == "POST" for r in report.results for e in r.evidence)
