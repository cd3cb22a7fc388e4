"""Contract tests for the generic FHIR R4 adapter (app/adapters/fhir.py) with pytest-httpx:
locate, records and paging, retries and deadlines, size caps, malformed answers, other
patients' data, tokens."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from urllib.parse import parse_qs

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey
from pytest_httpx import HTTPXMock, IteratorStream

from app.adapters.base import (
    AdapterError,
    AdtEvent,
    FailureKind,
    IntermediaryAdapter,
    PersonQuery,
    RemotePatient,
)
from app.adapters.deadline import deadline_in
from app.adapters.fhir import FhirAdapter
from app.adapters.smart_client import SmartBackendTokens, StaticToken, load_private_key
from tests.adapter_kit import (
    BASE,
    MRN,
    TOKEN_URL,
    Sleeps,
    bundle,
    caps,
    endpoint,
    observation,
    patient,
)

PERSON = PersonQuery.from_patient(
    {
        "resourceType": "Patient",
        "id": "local-1",
        "identifier": [
            {"system": "urn:example:other", "value": "X|9"},
            {"system": MRN, "value": "M1"},
        ],
        "name": [{"family": "Testperson", "given": ["Alex"]}],
        "birthDate": "1980-02-29",
        "gender": "unknown",
        "address": [{"postalCode": "95814"}],
    }
)
REMOTE = RemotePatient("p1", patient("p1"))
ON_BASE = re.compile(re.escape(BASE) + ".*")


@pytest.fixture
async def http():
    async with httpx.AsyncClient() as client:
        yield client


def adapter(http, sleeps=None, tokens=None, **overrides) -> FhirAdapter:
    return FhirAdapter(
        endpoint(**overrides), http, tokens, sleep=sleeps or Sleeps(), jitter=lambda: 1.0
    )


def test_satisfies_the_protocol(http):
    assert isinstance(adapter(http), IntermediaryAdapter)


# ---- locate ------------------------------------------------------------------------------------


async def test_locate_tries_each_identifier_escaped_until_one_finds(http, httpx_mock: HTTPXMock):
    httpx_mock.add_response(
        url=httpx.URL(f"{BASE}/Patient", params={"identifier": "urn:example:other|X\\|9"}),
        json=bundle(),
    )
    httpx_mock.add_response(
        url=httpx.URL(f"{BASE}/Patient", params={"identifier": f"{MRN}|M1"}),
        json=bundle(patient("p1"), patient("p1")),
    )
    found = await adapter(http).locate(PERSON)
    assert [(p.id, p.how, p.score) for p in found] == [("p1", "identifier", 1.0)]
    assert all(r.headers["accept"] == "application/fhir+json" for r in httpx_mock.get_requests())


async def test_locate_drops_patients_without_the_identifier(http, httpx_mock: HTTPXMock):
    # a server that ignores `identifier` answers everyone: none of them is this person
    httpx_mock.add_response(json=bundle(patient("p7", mrn="OTHER"), patient("p8", mrn=None)))
    httpx_mock.add_response(json=bundle(patient("p7", mrn="OTHER")))
    assert await adapter(http).locate(PERSON) == []


async def test_locate_falls_back_to_match_with_a_minimal_patient(http, httpx_mock: HTTPXMock):
    httpx_mock.add_response(method="GET", json=bundle(), is_reusable=True)
    result = bundle(patient("p2"), patient("p3"))
    result["entry"][0]["search"]["score"] = 0.8
    result["entry"][1]["search"]["score"] = 0.99
    httpx_mock.add_response(method="POST", url=f"{BASE}/Patient/$match", json=result)
    found = await adapter(http, capabilities=caps(patient_match=True)).locate(PERSON)
    assert [(p.id, p.score, p.how) for p in found] == [("p3", 0.99, "match"), ("p2", 0.8, "match")]
    sent = json.loads(httpx_mock.get_requests(method="POST")[0].content)
    params = {p["name"]: p for p in sent["parameter"]}
    assert params["onlyCertainMatches"]["valueBoolean"] is True
    sent_patient = params["resource"]["resource"]
    assert "id" not in sent_patient and sent_patient["birthDate"] == "1980-02-29"
    assert sent_patient["address"] == [{"postalCode": "95814"}]


async def test_locate_without_match_capability_finds_nobody(http, httpx_mock: HTTPXMock):
    httpx_mock.add_response(json=bundle(), is_reusable=True)
    assert await adapter(http).locate(PERSON) == []
    assert all(r.method == "GET" for r in httpx_mock.get_requests())


# ---- records and paging ------------------------------------------------------------------------


async def test_everything_follows_next_links_with_type_and_since(http, httpx_mock: HTTPXMock):
    first = httpx.URL(
        f"{BASE}/Patient/p1/$everything",
        params={"_type": "Patient,Observation", "_since": "2026-01-02T03:04:05Z"},
    )
    httpx_mock.add_response(
        url=first,
        json=bundle(patient("p1"), observation("o1", "Patient/p1"), next_url=f"{BASE}/page2"),
    )
    httpx_mock.add_response(
        url=f"{BASE}/page2", json=bundle(observation("o2", f"{BASE}/Patient/p1"))
    )
    since = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    record = await adapter(http).fetch_record(REMOTE, types=("Patient", "Observation"), since=since)
    assert [r["id"] for r in record.resources] == ["p1", "o1", "o2"]
    assert record.complete and record.notes == [] and record.endpoint == BASE


async def test_page_limit_makes_the_record_incomplete(http, httpx_mock: HTTPXMock):
    httpx_mock.add_response(
        json=bundle(observation("o1", "Patient/p1"), next_url=f"{BASE}/next"), is_reusable=True
    )
    record = await adapter(http, max_pages=3).fetch_record(REMOTE)
    assert not record.complete
    assert len(httpx_mock.get_requests()) == 3
    assert any("page limit" in n for n in record.notes)


async def test_record_size_cap_keeps_pages_read_so_far(http, httpx_mock: HTTPXMock):
    small = bundle(observation("o1", "Patient/p1"), next_url=f"{BASE}/next")
    big = bundle(*[observation(f"o{i}", "Patient/p1") for i in range(2, 60)])
    httpx_mock.add_response(url=f"{BASE}/Patient/p1/$everything", json=small)
    httpx_mock.add_response(url=f"{BASE}/next", json=big)
    size = len(json.dumps(small))
    record = await adapter(http, max_record_bytes=size + 2000).fetch_record(REMOTE)
    assert [r["id"] for r in record.resources] == ["o1"]
    assert not record.complete and any("size cap" in n for n in record.notes)


async def test_a_next_link_to_another_server_is_not_followed(http, httpx_mock: HTTPXMock):
    httpx_mock.add_response(
        json=bundle(observation("o1", "Patient/p1"), next_url="https://evil.example.test/fhir/x")
    )
    record = await adapter(http, tokens=StaticToken("t0k")).fetch_record(REMOTE)
    assert not record.complete and len(httpx_mock.get_requests()) == 1


async def test_resources_about_another_patient_are_dropped_and_counted(http, httpx_mock: HTTPXMock):
    httpx_mock.add_response(
        json=bundle(
            patient("p1"),
            patient("p9", mrn="M9"),  # another Patient
            observation("o1", "Patient/p1"),
            observation("o2", "Patient/p9"),
            observation("o3", f"{BASE}/Patient/p9"),
            {"resourceType": "Organization", "id": "org1", "name": "Clinic"},
        )
    )
    record = await adapter(http).fetch_record(REMOTE)
    assert [r["id"] for r in record.resources] == ["p1", "o1", "org1"]
    assert "dropped 3 resource(s) about another patient" in record.notes


async def test_types_the_server_did_not_filter_are_dropped(http, httpx_mock: HTTPXMock):
    httpx_mock.add_response(json=bundle(patient("p1"), observation("o1", "Patient/p1")))
    record = await adapter(http).fetch_record(REMOTE, types=("Observation",))
    assert [r["id"] for r in record.resources] == ["o1"]


async def test_outcome_entries_become_notes(http, httpx_mock: HTTPXMock):
    outcome = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "warning", "code": "incomplete", "diagnostics": "Alex T."}],
    }
    body = bundle(observation("o1", "Patient/p1"))
    body["entry"].append({"resource": outcome, "search": {"mode": "outcome"}})
    httpx_mock.add_response(json=body)
    record = await adapter(http).fetch_record(REMOTE)
    assert [r["id"] for r in record.resources] == ["o1"]
    assert record.notes == ["the endpoint reported an issue (incomplete)"]


# ---- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "kind", "retryable"),
    [
        (401, FailureKind.AUTH, False),
        (403, FailureKind.AUTH, False),
        (404, FailureKind.HTTP, False),
    ],
)
async def test_status_errors(http, httpx_mock: HTTPXMock, status, kind, retryable):
    httpx_mock.add_response(status_code=status, text="nope")
    with pytest.raises(AdapterError) as info:
        await adapter(http).fetch_record(REMOTE)
    assert (info.value.kind, info.value.status, info.value.retryable) == (kind, status, retryable)
    assert len(httpx_mock.get_requests()) == 1


async def test_operation_outcome_maps_to_codes_without_diagnostics(http, httpx_mock: HTTPXMock):
    outcome = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "processing", "diagnostics": "Alex Testperson"}],
    }
    httpx_mock.add_response(status_code=422, json=outcome)
    with pytest.raises(AdapterError) as info:
        await adapter(http).fetch_record(REMOTE)
    assert info.value.kind is FailureKind.OUTCOME and "processing" in str(info.value)
    assert "Testperson" not in str(info.value)


async def test_a_200_operation_outcome_is_an_outcome_error(http, httpx_mock: HTTPXMock):
    httpx_mock.add_response(
        json={"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "x"}]}
    )
    with pytest.raises(AdapterError) as info:
        await adapter(http).locate(PERSON)
    assert info.value.kind is FailureKind.OUTCOME


@pytest.mark.parametrize(
    "answer",
    [
        {"content": b"<html>not json</html>", "headers": {"content-type": "text/html"}},
        {"json": {"resourceType": "Patient", "id": "p1"}},
        {"json": {"resourceType": "Bundle", "type": "history", "entry": []}},
        {"json": {"resourceType": "Bundle", "type": "searchset", "entry": {"x": 1}}},
        {"json": ["not", "an", "object"]},
    ],
)
async def test_malformed_answers(http, httpx_mock: HTTPXMock, answer):
    httpx_mock.add_response(**answer)
    with pytest.raises(AdapterError) as info:
        await adapter(http).fetch_record(REMOTE)
    assert info.value.kind is FailureKind.MALFORMED


async def test_oversized_by_content_length(http, httpx_mock: HTTPXMock):
    httpx_mock.add_response(json=bundle(*[observation(f"o{i}", "Patient/p1") for i in range(50)]))
    with pytest.raises(AdapterError) as info:
        await adapter(http, max_response_bytes=1024).fetch_record(REMOTE)
    assert info.value.kind is FailureKind.OVERSIZED and not info.value.retryable


async def test_oversized_stream_without_length_is_cut_off(http, httpx_mock: HTTPXMock):
    chunks = [b'{"resourceType":"Bundle","entry":[' + b" " * 4000] + [b" " * 4000] * 100
    httpx_mock.add_response(stream=IteratorStream(chunks))
    with pytest.raises(AdapterError) as info:
        await adapter(http, max_response_bytes=10_000).fetch_record(REMOTE)
    assert info.value.kind is FailureKind.OVERSIZED


# ---- retries and deadlines ---------------------------------------------------------------------


async def test_retries_503_then_succeeds_with_backoff(http, httpx_mock: HTTPXMock):
    httpx_mock.add_response(status_code=503)
    httpx_mock.add_response(status_code=502)
    httpx_mock.add_response(json=bundle(observation("o1", "Patient/p1")))
    sleeps = Sleeps()
    record = await adapter(http, sleeps, backoff_seconds=0.5).fetch_record(REMOTE)
    assert [r["id"] for r in record.resources] == ["o1"]
    assert sleeps.delays == [0.5, 1.0]  # exponential (jitter fixed at 1.0 here)


async def test_retry_after_is_honoured_and_capped(http, httpx_mock: HTTPXMock):
    httpx_mock.add_response(status_code=429, headers={"Retry-After": "7"})
    httpx_mock.add_response(status_code=429, headers={"Retry-After": "100"})
    httpx_mock.add_response(json=bundle())
    sleeps = Sleeps()
    await adapter(http, sleeps, max_retry_after_seconds=10, deadline_seconds=60).fetch_record(
        REMOTE
    )
    assert sleeps.delays == [7.0, 10.0]


async def test_retries_are_bounded(http, httpx_mock: HTTPXMock):
    httpx_mock.add_response(status_code=503, is_reusable=True)
    with pytest.raises(AdapterError) as info:
        await adapter(http, max_attempts=3).fetch_record(REMOTE)
    assert info.value.kind is FailureKind.HTTP and info.value.status == 503
    assert info.value.retryable and len(httpx_mock.get_requests()) == 3


async def test_no_retry_that_would_pass_the_deadline(http, httpx_mock: HTTPXMock):
    httpx_mock.add_response(status_code=503, headers={"Retry-After": "5"})
    sleeps = Sleeps()
    with pytest.raises(AdapterError) as info:
        await adapter(http, sleeps, deadline_seconds=3).fetch_record(REMOTE)
    assert info.value.status == 503 and sleeps.delays == []


async def test_the_callers_deadline_wins_over_the_endpoints(http, httpx_mock: HTTPXMock):
    httpx_mock.add_response(status_code=503, headers={"Retry-After": "5"})
    sleeps = Sleeps()
    with deadline_in(2.0), pytest.raises(AdapterError):
        await adapter(http, sleeps, deadline_seconds=60).fetch_record(REMOTE)
    assert sleeps.delays == []


async def test_a_passed_deadline_sends_nothing(http, httpx_mock: HTTPXMock):
    with deadline_in(0.0), pytest.raises(AdapterError) as info:
        await adapter(http).fetch_record(REMOTE)
    assert info.value.kind is FailureKind.TIMEOUT and httpx_mock.get_requests() == []


async def test_connection_errors_are_retried_then_unreachable(http, httpx_mock: HTTPXMock):
    httpx_mock.add_exception(httpx.ConnectError("refused"), is_reusable=True)
    sleeps = Sleeps()
    with pytest.raises(AdapterError) as info:
        await adapter(http, sleeps, max_attempts=2).locate(PERSON)
    assert info.value.kind is FailureKind.UNREACHABLE and len(sleeps.delays) == 1


async def test_read_timeout_is_a_timeout(http, httpx_mock: HTTPXMock):
    httpx_mock.add_exception(httpx.ReadTimeout("slow"), is_reusable=True)
    with pytest.raises(AdapterError) as info:
        await adapter(http, max_attempts=1).fetch_record(REMOTE)
    assert info.value.kind is FailureKind.TIMEOUT


async def test_500_is_not_retried(http, httpx_mock: HTTPXMock):
    httpx_mock.add_response(status_code=500)
    with pytest.raises(AdapterError) as info:
        await adapter(http).fetch_record(REMOTE)
    assert info.value.status == 500 and len(httpx_mock.get_requests()) == 1


# ---- DocumentReference + Binary -----------------------------------------------------------------


def _docref(did: str, patient_ref: str, binary_url: str) -> dict:
    return {
        "resourceType": "DocumentReference",
        "id": did,
        "status": "current",
        "subject": {"reference": patient_ref},
        "content": [{"attachment": {"contentType": "application/pdf", "url": binary_url}}],
    }


async def test_document_reference_record_fetches_binaries(http, httpx_mock: HTTPXMock):
    httpx_mock.add_response(
        url=httpx.URL(f"{BASE}/DocumentReference", params={"patient": "p1"}),
        json=bundle(
            _docref("d1", "Patient/p1", "Binary/b1"),
            _docref("d2", "Patient/p1", f"{BASE}/Binary/b2"),
            _docref("d3", "Patient/p1", "https://elsewhere.example.test/Binary/b3"),
            _docref("d4", "Patient/p9", "Binary/b4"),
        ),
    )
    httpx_mock.add_response(
        url=f"{BASE}/Binary/b1",
        json={
            "resourceType": "Binary",
            "id": "b1",
            "contentType": "application/pdf",
            "data": "JVBERg==",
        },
    )
    httpx_mock.add_response(
        url=f"{BASE}/Binary/b2", content=b"%PDF-1.4", headers={"content-type": "application/pdf"}
    )
    record = await adapter(
        http, capabilities=caps(everything=False, document_reference=True)
    ).fetch_record(REMOTE)
    ids = [(r["resourceType"], r["id"]) for r in record.resources]
    assert ids == [
        ("DocumentReference", "d1"),
        ("DocumentReference", "d2"),
        ("DocumentReference", "d3"),
        ("Binary", "b1"),
        ("Binary", "b2"),
    ]
    assert record.resources[-1]["data"] == "JVBERi0xLjQ="  # raw bytes wrapped as a Binary
    assert "dropped 1 resource(s) about another patient" in record.notes


async def test_an_oversized_binary_is_left_out(http, httpx_mock: HTTPXMock):
    httpx_mock.add_response(
        url=httpx.URL(f"{BASE}/DocumentReference", params={"patient": "p1"}),
        json=bundle(_docref("d1", "Patient/p1", "Binary/b1")),
    )
    httpx_mock.add_response(url=f"{BASE}/Binary/b1", content=b"x" * 5000)
    config = {"capabilities": caps(document_reference=True), "max_response_bytes": 4000}
    record = await adapter(http, **config).fetch_record(REMOTE)
    assert [r["id"] for r in record.resources] == ["d1"] and not record.complete


# ---- tokens ------------------------------------------------------------------------------------


@pytest.fixture(params=["rsa", "ec"])
def key_path(request, tmp_path):
    if request.param == "rsa":
        key = RSAKey.generate_key(2048, auto_kid=True)
    else:
        key = ECKey.generate_key("P-384", auto_kid=True)
    path = tmp_path / "client-key.json"
    path.write_text(json.dumps(key.as_dict(private=True)))
    return path


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


async def test_smart_backend_token_is_requested_once_and_cached(
    http, httpx_mock: HTTPXMock, key_path
):
    key = load_private_key(key_path)
    clock = Clock()
    tokens = SmartBackendTokens(
        http, token_url=TOKEN_URL, client_id="dxf", key=key, scope="system/*.rs", clock=clock
    )
    httpx_mock.add_response(
        url=TOKEN_URL,
        json={"access_token": "tok-1", "token_type": "bearer", "expires_in": 300},
    )
    httpx_mock.add_response(
        url=TOKEN_URL,
        json={"access_token": "tok-2", "token_type": "Bearer", "expires_in": 300},
    )
    httpx_mock.add_response(url=ON_BASE, json=bundle(), is_reusable=True)
    fhir = adapter(http, tokens=tokens)
    await fhir.fetch_record(REMOTE)
    await fhir.fetch_record(REMOTE)
    clock.now += 280  # within the refresh margin before expiry: a new token
    await fhir.fetch_record(REMOTE)
    assert tokens.requests == 2
    auths = [r.headers["authorization"] for r in httpx_mock.get_requests(url=ON_BASE)]
    assert auths == ["Bearer tok-1", "Bearer tok-1", "Bearer tok-2"]
    form = parse_qs(httpx_mock.get_requests(url=TOKEN_URL)[0].content.decode())
    assert form["grant_type"] == ["client_credentials"] and form["scope"] == ["system/*.rs"]
    assert form["client_assertion_type"] == [
        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    ]
    alg = "ES384" if isinstance(key, ECKey) else "RS384"
    token = jwt.decode(form["client_assertion"][0], key, algorithms=[alg])
    claims = token.claims
    assert token.header["alg"] == alg and token.header["kid"] == key.kid
    assert claims["iss"] == claims["sub"] == "dxf" and claims["aud"] == TOKEN_URL
    assert 0 < claims["exp"] - clock.now + 280 <= 300 and claims["jti"]


async def test_401_refreshes_the_token_once(http, httpx_mock: HTTPXMock, key_path):
    tokens = SmartBackendTokens(
        http, token_url=TOKEN_URL, client_id="dxf", key=load_private_key(key_path), scope="s"
    )
    for value in ("old", "new"):
        httpx_mock.add_response(
            url=TOKEN_URL, json={"access_token": value, "token_type": "bearer", "expires_in": 300}
        )
    httpx_mock.add_response(url=ON_BASE, status_code=401)
    httpx_mock.add_response(url=ON_BASE, json=bundle())
    await adapter(http, tokens=tokens).fetch_record(REMOTE)
    auths = [r.headers["authorization"] for r in httpx_mock.get_requests(url=ON_BASE)]
    assert auths == ["Bearer old", "Bearer new"]


async def test_a_refused_token_request_is_an_auth_error_without_secrets(
    http, httpx_mock: HTTPXMock, key_path
):
    tokens = SmartBackendTokens(
        http,
        token_url=TOKEN_URL,
        client_id="dxf-secret-client",
        key=load_private_key(key_path),
        scope="s",
    )
    httpx_mock.add_response(
        url=TOKEN_URL,
        status_code=400,
        json={"error": "invalid_client", "error_description": "client dxf-secret-client unknown"},
    )
    with pytest.raises(AdapterError) as info:
        await adapter(http, tokens=tokens).locate(PERSON)
    assert info.value.kind is FailureKind.AUTH and "invalid_client" in str(info.value)
    assert "dxf-secret-client" not in str(info.value) and TOKEN_URL not in str(info.value)


async def test_token_response_without_access_token(http, httpx_mock: HTTPXMock, key_path):
    tokens = SmartBackendTokens(
        http, token_url=TOKEN_URL, client_id="dxf", key=load_private_key(key_path), scope="s"
    )
    httpx_mock.add_response(url=TOKEN_URL, json={"token_type": "bearer"})
    with pytest.raises(AdapterError) as info:
        await adapter(http, tokens=tokens).locate(PERSON)
    assert info.value.kind is FailureKind.AUTH


def test_key_files_that_do_not_hold_a_private_key_are_refused(tmp_path):
    public = tmp_path / "public.json"
    public.write_text(json.dumps(RSAKey.generate_key(2048).as_dict(private=False)))
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN NOTHING-----\nc2VjcmV0\n")
    p256 = tmp_path / "p256.json"
    p256.write_text(json.dumps(ECKey.generate_key("P-256").as_dict(private=True)))
    for path in (public, garbage, p256):
        with pytest.raises(ValueError) as info:
            load_private_key(path)
        assert "c2VjcmV0" not in str(info.value)


# ---- deliver -----------------------------------------------------------------------------------

EVENT = AdtEvent(
    id="evt-1",
    trigger="A01",
    kind="admit",
    occurred_at=datetime(2026, 1, 2, tzinfo=UTC),
    patient=patient("local-1"),
)


async def test_deliver_without_a_builder_is_unsupported(http):
    fhir = adapter(http, capabilities=caps(event_channels=frozenset({"fhir-message"})))
    with pytest.raises(AdapterError) as info:
        await fhir.deliver(EVENT)
    assert info.value.kind is FailureKind.UNSUPPORTED


async def test_deliver_posts_the_message_bundle_to_process_message(http, httpx_mock: HTTPXMock):
    httpx_mock.add_response(method="POST", url=f"{BASE}/$process-message", status_code=200, json={})
    message = {"resourceType": "Bundle", "type": "message", "id": "evt-1", "entry": []}
    fhir = FhirAdapter(
        endpoint(capabilities=caps(event_channels=frozenset({"fhir-message"}))),
        http,
        message_builder=lambda event, destination: {**message, "id": event.id, "to": destination},
    )
    receipt = await fhir.deliver(EVENT)
    assert receipt.accepted and receipt.detail == "HTTP 200"
    sent = json.loads(httpx_mock.get_request().content)
    assert sent["id"] == "evt-1" and sent["to"] == BASE
