"""Contract tests for the coded QHIO adapters (Health Gorilla over pytest-httpx, Manifest MedEx
over a loopback MLLP listener), the adapter factory, and the QHIO profile data."""

from __future__ import annotations

import asyncio
import json
import tomllib
from datetime import UTC, datetime
from importlib import resources

import httpx
import pytest
from joserfc.jwk import RSAKey
from pytest_httpx import HTTPXMock

from app.adapters.base import (
    AdapterError,
    AdtEvent,
    FailureKind,
    IntermediaryAdapter,
    PersonQuery,
    RemotePatient,
)
from app.adapters.config import EndpointCredentials
from app.adapters.factory import AdapterFactory
from app.adapters.fhir import FhirAdapter
from app.adapters.health_gorilla import HealthGorillaAdapter
from app.adapters.manifest_medex import ManifestMedexAdapter, parse_mllp_address
from app.adapters.profiles import endpoint_config, load_profiles, parse_setting
from app.adapters.smart_client import SmartBackendTokens
from tests.adapter_kit import BASE, MRN, TOKEN_URL, Sleeps, bundle, endpoint, patient

NINE = {
    "manifest-medex",
    "health-gorilla",
    "schio",
    "sacvalley-medshare",
    "san-diego-health-connect",
    "lanes",
    "ocph",
    "cozeva",
    "longhealth",
}


def hg_config(**settings):
    return endpoint_config("hg", BASE, load_profiles()["health-gorilla"], settings)


# ---- profiles ----------------------------------------------------------------------------------


def test_the_nine_qhios_have_profiles_with_sources():
    profiles = load_profiles()
    assert {k for k, p in profiles.items() if p.qhio} == NINE
    for profile in profiles.values():
        assert profile.sources and profile.known and profile.unknown


def test_profiles_hold_no_endpoint_addresses():
    """Unknown specifics stay configuration: URLs appear only inside source citations."""
    raw = tomllib.loads(
        resources.files("app.adapters").joinpath("qhios.toml").read_text(encoding="utf-8")
    )
    for kind, data in raw.items():
        for name, value in data.items():
            if name != "sources":
                assert "://" not in json.dumps(value), (kind, name)


def test_only_documented_differences_are_code():
    adapters = {p.kind: p.adapter for p in load_profiles().values()}
    assert adapters.pop("health-gorilla") == "health-gorilla"
    assert adapters.pop("manifest-medex") == "manifest-medex"
    assert set(adapters.values()) == {"fhir"}


def test_settings_override_capabilities_and_limits():
    profile = load_profiles()["schio"]
    settings = dict(map(parse_setting, ["patient_match=yes", "page_size=25", "max-pages=4"]))
    config = endpoint_config("s", BASE, profile, settings)
    assert config.capabilities.patient_match and config.page_size == 25 and config.max_pages == 4
    for bad in ["page_size=0", "patient_match=maybe", "nonsense=1", "deadline_seconds"]:
        with pytest.raises(ValueError):
            parse_setting(bad)


# ---- factory -----------------------------------------------------------------------------------


async def test_the_factory_builds_each_kind(tmp_path):
    key_file = tmp_path / "k.json"
    key_file.write_text(json.dumps(RSAKey.generate_key(2048).as_dict(private=True)))
    smart = EndpointCredentials(
        auth_method="smart-backend",
        client_id="client-id-xyz",
        token_url=TOKEN_URL,
        key_file=str(key_file),
    )
    factory = AdapterFactory()
    try:
        profiles = load_profiles()
        for kind, profile in profiles.items():
            address = "mllp://127.0.0.1:2575" if profile.transport == "hl7v2-mllp" else BASE
            creds = smart if profile.auth == "smart-backend" else EndpointCredentials()
            adapter = factory.build(endpoint_config(kind, address, profile, {}), creds)
            assert isinstance(adapter, IntermediaryAdapter)
            expected = {
                "health-gorilla": HealthGorillaAdapter,
                "manifest-medex": ManifestMedexAdapter,
            }.get(kind, FhirAdapter)
            assert type(adapter) is expected
            if isinstance(adapter, FhirAdapter):
                assert isinstance(adapter._tokens, SmartBackendTokens)
                assert "client-id-xyz" not in repr(adapter._tokens) + repr(adapter)
        assert len(factory._clients) == 1  # one shared client without TLS material
    finally:
        await factory.aclose()


def test_credentials_repr_hides_values():
    creds = EndpointCredentials(
        auth_method="smart-backend", client_id="cid-123", token_url="https://t", key_file="/k"
    )
    assert "cid-123" not in repr(creds) and "/k" not in repr(creds)


# ---- Health Gorilla ----------------------------------------------------------------------------


@pytest.fixture
async def http():
    async with httpx.AsyncClient() as client:
        yield client


async def test_health_gorilla_record_is_document_references_and_binaries(
    http, httpx_mock: HTTPXMock
):
    doc = {
        "resourceType": "DocumentReference",
        "id": "d1",
        "status": "current",
        "subject": {"reference": "Patient/hg1"},
        "content": [{"attachment": {"contentType": "application/pdf", "url": "Binary/b1"}}],
    }
    httpx_mock.add_response(
        url=httpx.URL(f"{BASE}/DocumentReference", params={"patient": "hg1"}), json=bundle(doc)
    )
    httpx_mock.add_response(
        url=f"{BASE}/Binary/b1",
        json={"resourceType": "Binary", "id": "b1", "contentType": "application/pdf"},
    )
    # even a registration that claims $everything reads documents: that is Health Gorilla
    adapter = HealthGorillaAdapter(hg_config(everything=True), http, sleep=Sleeps())
    assert adapter.capabilities().document_reference and not adapter.capabilities().everything
    record = await adapter.fetch_record(RemotePatient("hg1", patient("hg1")))
    assert [(r["resourceType"], r["id"]) for r in record.resources] == [
        ("DocumentReference", "d1"),
        ("Binary", "b1"),
    ]
    assert all("$everything" not in str(r.url) for r in httpx_mock.get_requests())


async def test_health_gorilla_locates_by_identifier(http, httpx_mock: HTTPXMock):
    httpx_mock.add_response(
        url=httpx.URL(f"{BASE}/Patient", params={"identifier": f"{MRN}|M1"}),
        json=bundle(patient("hg1")),
    )
    found = await HealthGorillaAdapter(hg_config(), http).locate(
        PersonQuery(identifiers=((MRN, "M1"),))
    )
    assert [p.id for p in found] == ["hg1"]


EVENT = AdtEvent(
    id="evt-1",
    trigger="A04",
    kind="registration",
    occurred_at=datetime(2026, 1, 2, tzinfo=UTC),
    patient={**patient("local-9"), "meta": {"versionId": "3"}, "text": {"div": "<div/>"}},
    message=b"MSH|^~\\&|A|B|C|D|20260102||ADT^A04|1|P|2.5.1\r",
)


async def test_health_gorilla_delivery_registers_the_patient(http, httpx_mock: HTTPXMock):
    httpx_mock.add_response(
        method="POST",
        url=f"{BASE}/Patient",
        status_code=201,
        json={**patient("hg-new"), "id": "hg-new"},
    )
    receipt = await HealthGorillaAdapter(hg_config(), http).deliver(EVENT)
    assert receipt.accepted and receipt.remote_id == "hg-new" and receipt.detail == "HTTP 201"
    request = httpx_mock.get_request()
    assert request.headers["if-none-exist"] == f"identifier={MRN}|M1"
    sent = json.loads(request.content)
    assert "id" not in sent and "meta" not in sent and "text" not in sent
    assert sent["identifier"] == [{"system": MRN, "value": "M1"}]


async def test_health_gorilla_delivery_needs_an_identifier(http):
    event = AdtEvent(
        id="e",
        trigger="A04",
        kind="registration",
        occurred_at=datetime(2026, 1, 2, tzinfo=UTC),
        patient=patient("x", mrn=None),
    )
    with pytest.raises(AdapterError) as info:
        await HealthGorillaAdapter(hg_config(), http).deliver(event)
    assert info.value.kind is FailureKind.UNSUPPORTED


async def test_health_gorilla_refusal_maps_to_auth(http, httpx_mock: HTTPXMock):
    httpx_mock.add_response(status_code=403)
    with pytest.raises(AdapterError) as info:
        await HealthGorillaAdapter(hg_config(), http).deliver(EVENT)
    assert info.value.kind is FailureKind.AUTH


# ---- Manifest MedEx ----------------------------------------------------------------------------


class MllpPeer:
    """A loopback MLLP receiver that answers each frame with a scripted ACK."""

    def __init__(self, answer: bytes | None) -> None:
        self.answer = answer
        self.received: list[bytes] = []
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"mllp://127.0.0.1:{port}"

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\x0b")
            frame = await reader.readuntil(b"\x1c\x0d")
            self.received.append(frame[:-2])
            if self.answer is not None:
                writer.write(b"\x0b" + self.answer + b"\x1c\x0d")
                await writer.drain()
        except asyncio.IncompleteReadError:
            pass
        finally:
            writer.close()


def medex(address: str) -> ManifestMedexAdapter:
    return ManifestMedexAdapter(
        endpoint_config("medex", address, load_profiles()["manifest-medex"], {})
    )


def ack(code: str) -> bytes:
    return f"MSH|^~\\&|NET|MMX|A|B|20260102||ACK^A04|9|P|2.5.1\rMSA|{code}|1\r".encode()


@pytest.mark.parametrize("code", ["AA", "CA"])
async def test_medex_forwards_the_original_message_over_mllp(code):
    peer = MllpPeer(ack(code))
    async with peer as address:
        receipt = await medex(address).deliver(EVENT)
    assert peer.received == [EVENT.message]
    assert receipt.accepted and receipt.detail == code


@pytest.mark.parametrize(("code", "retryable"), [("AE", False), ("AR", True)])
async def test_medex_refusals_are_outcome_errors(code, retryable):
    async with MllpPeer(ack(code)) as address:
        with pytest.raises(AdapterError) as info:
            await medex(address).deliver(EVENT)
    assert info.value.kind is FailureKind.OUTCOME and info.value.retryable is retryable


async def test_medex_without_an_ack():
    async with MllpPeer(None) as address:
        with pytest.raises(AdapterError) as info:
            await medex(address).deliver(EVENT)
    assert info.value.kind is FailureKind.UNREACHABLE and info.value.retryable


async def test_medex_answer_that_is_not_an_ack():
    async with MllpPeer(b"hello") as address:
        with pytest.raises(AdapterError) as info:
            await medex(address).deliver(EVENT)
    assert info.value.kind is FailureKind.MALFORMED


async def test_medex_unreachable():
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    with pytest.raises(AdapterError) as info:
        await medex(f"mllp://127.0.0.1:{port}").deliver(EVENT)
    assert info.value.kind is FailureKind.UNREACHABLE


async def test_medex_has_no_query():
    adapter = medex("mllp://127.0.0.1:2575")
    caps = adapter.capabilities()
    assert caps.event_channels == {"hl7v2-mllp"} and not caps.identifier_search
    for call in (
        adapter.locate(PersonQuery(identifiers=((MRN, "M1"),))),
        adapter.fetch_record(RemotePatient("x", {})),
    ):
        with pytest.raises(AdapterError) as info:
            await call
        assert info.value.kind is FailureKind.UNSUPPORTED


async def test_medex_event_without_a_message_is_unsupported():
    event = AdtEvent(id="e", trigger="A01", kind="admit", occurred_at=EVENT.occurred_at, patient={})
    with pytest.raises(AdapterError) as info:
        await medex("mllp://127.0.0.1:2575").deliver(event)
    assert info.value.kind is FailureKind.UNSUPPORTED


def test_mllp_addresses():
    assert parse_mllp_address("mllp://h.example.test:2575") == ("h.example.test", 2575, False)
    assert parse_mllp_address("mllps://h.example.test:6661") == ("h.example.test", 6661, True)
    for bad in ("https://h:1", "mllp://h", "mllp://h:1/path"):
        with pytest.raises(ValueError):
            parse_mllp_address(bad)


def test_generic_endpoint_helper_still_builds():
    assert endpoint().kind == "fhir"


async def test_a_fhir_registration_delivers_da_vinci_notifications(httpx_mock: HTTPXMock):
    from app.adapters.service import davinci_builder

    httpx_mock.add_response(method="POST", url=f"{BASE}/$process-message", status_code=202)
    factory = AdapterFactory(message_builder=davinci_builder("https://us.example.test/fhir"))
    settings = dict([parse_setting("event_channels=fhir-message")])
    config = endpoint_config("sac", BASE, load_profiles()["sacvalley-medshare"], settings)
    adapter = factory.build(config, EndpointCredentials())
    event = AdtEvent(
        id="evt-7",
        trigger="A01",
        kind="admit",
        occurred_at=datetime(2026, 1, 2, tzinfo=UTC),
        patient=patient("local-1"),
        encounter={
            "resourceType": "Encounter",
            "id": "enc-1",
            "status": "in-progress",
            "class": {"code": "IMP"},
            "subject": {"reference": "Patient/local-1"},
        },
    )
    try:
        receipt = await adapter.deliver(event)
    finally:
        await factory.aclose()
    assert receipt.accepted and receipt.detail == "HTTP 202"
    sent = json.loads(httpx_mock.get_request().content)
    header = sent["entry"][0]["resource"]
    assert sent["type"] == "message" and header["resourceType"] == "MessageHeader"
    assert header["eventCoding"]["code"] == "notification-admit"
    assert header["destination"][0]["endpoint"] == BASE
