"""The conformance kit catches a server that lies about itself.

`_LyingServer` is a small FHIR server written here that claims more than it does: it declares
the Patient `family` search parameter and ignores it, declares `delete` on Observation and
answers 405, answers errors (unknown id, missing token) without an OperationOutcome, ignores
`_count`, and claims the US Core Patient profile without its required searches. Each lie must
come back as a failed check, and the honest parts as passes.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from conformance import Outcome, Report, run_kit

BASE = "http://liar.test/fhir"
TOKEN = "let-me-in"
FHIR = "application/fhir+json"
_US_CORE_PATIENT = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient"


def _statement() -> dict[str, Any]:
    patient_params = [
        {"name": "_id", "type": "token"},
        {"name": "gender", "type": "token"},
        {"name": "family", "type": "string"},  # lie: ignored
    ]
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "kind": "instance",
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json"],
        "rest": [
            {
                "mode": "server",
                "security": {"service": [{"coding": [{"code": "SMART-on-FHIR"}]}]},
                "resource": [
                    {
                        "type": t,
                        "interaction": [
                            {"code": c}
                            for c in ("read", "vread", "update", "delete", "create", "search-type")
                        ],
                        "searchParam": patient_params
                        if t == "Patient"
                        else [{"name": "_id", "type": "token"}],
                        # lie: US Core Patient needs identifier, name, birthdate searches
                        "supportedProfile": [_US_CORE_PATIENT] if t == "Patient" else [],
                    }
                    for t in ("Observation", "Patient")
                ],
            }
        ],
    }


class _LyingServer:
    def __init__(self) -> None:
        self.store: dict[str, dict[str, Any]] = {}
        self.app = Starlette(
            routes=[
                Route("/fhir/metadata", self.metadata),
                Route("/fhir/{rtype}", self.type_level, methods=["GET", "POST"]),
                Route("/fhir/{rtype}/{rid}", self.instance, methods=["GET", "PUT", "DELETE"]),
                Route("/fhir/{rtype}/{rid}/_history/{vid}", self.vread),
            ]
        )

    async def metadata(self, request: Request) -> Response:
        return _fhir(_statement())

    def _authorized(self, request: Request) -> bool:
        return request.headers.get("authorization") == f"Bearer {TOKEN}"

    async def type_level(self, request: Request) -> Response:
        if not self._authorized(request):
            return PlainTextResponse("no token", status_code=401)  # lie: no OperationOutcome
        rtype = request.path_params["rtype"]
        if request.method == "POST":
            if not request.headers.get("content-type", "").startswith(FHIR):
                return _outcome(415)
            body = json.loads(await request.body())
            if body.get("resourceType") != rtype or set(body) - _KNOWN:
                return _outcome(400)
            body = {**body, "id": uuid.uuid4().hex, "meta": {"versionId": "1"}}
            self.store[f"{rtype}/{body['id']}"] = body
            return _fhir(body, 201, {"Location": f"{BASE}/{rtype}/{body['id']}/_history/1"})
        query = request.query_params
        unknown = set(query) - {"_id", "gender", "family", "_count"}
        if unknown:
            return _outcome(400)
        hits = [r for k, r in self.store.items() if k.startswith(f"{rtype}/")]
        if "_id" in query:
            wanted = set(query["_id"].split(","))
            hits = [r for r in hits if r["id"] in wanted]
        if "gender" in query:
            hits = [r for r in hits if r.get("gender") == query["gender"]]
        return _fhir(
            {
                "resourceType": "Bundle",
                "type": "searchset",
                "entry": [{"resource": r, "search": {"mode": "match"}} for r in hits],
            }
        )

    async def instance(self, request: Request) -> Response:
        if not self._authorized(request):
            return PlainTextResponse("no token", status_code=401)
        key = f"{request.path_params['rtype']}/{request.path_params['rid']}"
        if request.method == "DELETE":
            if key.startswith("Observation/"):
                return _outcome(405)  # lie: delete is declared
            return Response(status_code=204) if self.store.pop(key, None) else _outcome(404)
        if key not in self.store:
            return JSONResponse({"error": "not found"}, status_code=404)  # lie: no outcome
        if request.method == "PUT":
            if request.headers.get("if-match") not in (None, f'W/"{_vid(self.store[key])}"'):
                return _outcome(412)
            body = json.loads(await request.body())
            body["meta"] = {"versionId": str(int(_vid(self.store[key])) + 1)}
            self.store[key] = body
            return _fhir(body)
        return _fhir(self.store[key], headers={"ETag": f'W/"{_vid(self.store[key])}"'})

    async def vread(self, request: Request) -> Response:
        key = f"{request.path_params['rtype']}/{request.path_params['rid']}"
        if not self._authorized(request) or key not in self.store:
            return _outcome(404)
        return _fhir(self.store[key])


_KNOWN = {
    "resourceType",
    "extension",
    "deceasedDateTime",
    "communication",
    "identifier",
    "active",
    "name",
    "gender",
    "birthDate",
    "address",
    "telecom",
    "status",
    "category",
    "code",
    "subject",
    "effectiveDateTime",
    "valueQuantity",
    "meta",
    "id",
}


def _vid(body: dict[str, Any]) -> str:
    return body["meta"]["versionId"]


def _fhir(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body), status, headers=headers, media_type=FHIR)


def _outcome(status: int) -> Response:
    return _fhir(
        {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "invalid"}]},
        status,
    )


@pytest.fixture
async def report() -> Report:
    server = _LyingServer()
    # lie: claims US Core Patient, but holds a Patient without identifier or gender
    server.store["Patient/bare"] = {
        "resourceType": "Patient",
        "id": "bare",
        "meta": {"versionId": "1"},
        "name": [{"family": "Bare"}],
    }
    return await run_kit(BASE, token=TOKEN, transport=httpx.ASGITransport(app=server.app))


def _outcomes(report: Report) -> dict[str, Outcome]:
    return {r.id: r.outcome for r in report.results}


async def test_an_ignored_search_parameter_is_a_failure(report: Report) -> None:
    outcomes = _outcomes(report)
    assert outcomes["search.Patient.family"] is Outcome.FAIL
    assert outcomes["search.Patient.gender"] is Outcome.PASS  # the honest one
    assert outcomes["search.Patient._id"] is Outcome.PASS


async def test_a_declared_interaction_it_does_not_serve_is_a_failure(report: Report) -> None:
    outcomes = _outcomes(report)
    assert outcomes["crud.Observation.delete"] is Outcome.FAIL
    assert outcomes["crud.Patient.delete"] is Outcome.PASS
    assert outcomes["crud.Observation.read"] is Outcome.PASS


async def test_errors_without_operation_outcome_are_failures(report: Report) -> None:
    results = {r.id: r for r in report.results}
    assert results["errors.unknown-id"].outcome is Outcome.FAIL
    assert "OperationOutcome" in results["errors.unknown-id"].reason
    assert results["errors.missing-token"].outcome is Outcome.FAIL
    assert results["errors.content-type"].outcome is Outcome.PASS  # it does send one for 415


async def test_every_failure_carries_its_evidence_and_rule(report: Report) -> None:
    failures = [r for r in report.results if r.outcome is Outcome.FAIL]
    assert report.failed
    assert {r.id for r in failures} >= {
        "search.Patient.family",
        "crud.Observation.delete",
        "errors.unknown-id",
        "errors.missing-token",
    }
    for r in failures:
        assert r.evidence, r.id
        assert r.rule.url.startswith("https://hl7.org/fhir/"), r.id


async def test_an_ignored_count_fails_paging(report: Report) -> None:
    results = {r.id: r for r in report.results}
    assert results["http.paging"].outcome is Outcome.FAIL
    assert results["http.if-match"].outcome is Outcome.PASS


async def test_a_us_core_claim_without_its_required_searches_fails(report: Report) -> None:
    outcomes = _outcomes(report)
    results = {r.id: r for r in report.results}
    # the statement itself gives the claim away: SHALL parameters and _revinclude undeclared
    declared = results["us-core.us-core-patient.declared"]
    assert declared.outcome is Outcome.FAIL
    for lacking in ("search parameter identifier", "search parameter name", "Provenance:target"):
        assert lacking in declared.reason
    # and searching shows it: the kit's US Core Patient cannot be found by the SHALL searches
    assert outcomes["us-core.us-core-patient.instance"] is Outcome.PASS
    assert outcomes["us-core.us-core-patient.search.identifier"] is Outcome.FAIL
    assert outcomes["us-core.us-core-patient.search.birthdate+name"] is Outcome.FAIL
    assert outcomes["us-core.us-core-patient.search._id"] is Outcome.PASS
    assert outcomes["us-core.server.profiles"] is Outcome.FAIL  # Patient alone is not enough
    assert results["us-core.us-core-patient.mandatory"].outcome is Outcome.FAIL
    assert (
        "Patient/bare lacks identifier, gender"
        in results["us-core.us-core-patient.mandatory"].reason
    )


async def test_what_the_server_would_not_delete_is_reported(report: Report) -> None:
    assert report.leftovers
    assert all(ref.startswith("Observation/") for ref in report.leftovers)


async def test_us_core_mandatory_elements_pass_when_present() -> None:
    server = _LyingServer()  # holds only the kit's own Patient, which carries all three
    report = await run_kit(
        BASE, token=TOKEN, transport=httpx.ASGITransport(app=server.app), only=["us-core"]
    )
    outcomes = _outcomes(report)
    assert outcomes["us-core.us-core-patient.mandatory"] is Outcome.PASS
    assert outcomes["us-core.us-core-patient.must-support"] is Outcome.PASS
    assert {r.group for r in report.results} == {"us-core"}
