"""The intermediary registry over HTTP (/admin/intermediaries) and its checks, against a real
in-process dxf-bridge acting as the intermediary (httpx ASGITransport): admin scope required,
credentials never returned, audited or logged, Endpoint.status following the checks, and the
AdapterDirectory handing out adapters of active registrations only."""

from __future__ import annotations

import asyncio
import json
import logging

import httpx
import pytest
from sqlalchemy import select, text

from app.adapters.base import PersonQuery
from app.adapters.checks import run_periodic_checks
from app.adapters.fhir import FhirAdapter
from app.adapters.service import Intermediaries
from app.auth.registry import Client
from app.main import _start_intermediary_checks, _stop, create_app
from app.store.tables import audit_event, intermediary
from tests.conftest import BASE_URL, FHIR_BASE, FHIR_JSON, bearer
from tests.oauth import TOKEN_URL, assertion, public_jwks, rsa_key

ADMIN_URL = f"{BASE_URL}/admin/intermediaries"
CLIENT_ID = "dxf-registry-self-client"


@pytest.fixture
async def world(container, tmp_path):
    """Our app, reachable in process; the registry's calls go to it too (it plays the QHIO)."""
    app = create_app(container.settings, container=container)
    transport = httpx.ASGITransport(app=app)
    service = Intermediaries.build(container.db, container.settings, transport=transport)
    container._intermediaries = service
    key = rsa_key()
    key_file = tmp_path / "client-key.json"
    key_file.write_text(json.dumps(key.as_dict(private=True)))
    await container.clients.add(
        Client(client_id=CLIENT_ID, scopes=("system/*.rs",), jwks=public_jwks(key))
    )
    async with httpx.AsyncClient(transport=transport, base_url=FHIR_BASE) as http:
        yield {"http": http, "service": service, "key_file": str(key_file), "key": key}
    await service.aclose()


@pytest.fixture
def admin(make_token):
    return bearer(make_token("admin/intermediaries"))


def registration(key_file: str, **extra):
    body = {
        "name": "self-qhio",
        "kind": "san-diego-health-connect",
        "address": FHIR_BASE,
        "auth": {
            "method": "smart-backend",
            "clientId": CLIENT_ID,
            "tokenUrl": TOKEN_URL,
            "keyFile": key_file,
            "scope": "system/*.rs",
        },
        "settings": {"check_groups": ["capability", "smart", "errors"]},
    }
    body.update(extra)
    return body


SECRETS = (CLIENT_ID, TOKEN_URL, "client-key.json")


def _no_secret(text_: str) -> None:
    for secret in SECRETS:
        assert secret not in text_


async def test_the_registry_needs_the_admin_scope(world, make_token):
    http = world["http"]
    assert (await http.get(ADMIN_URL)).status_code == 401
    plain = bearer(make_token("system/*.cruds"))
    refused = await http.get(ADMIN_URL, headers=plain)
    assert refused.status_code == 403
    assert refused.json()["resourceType"] == "OperationOutcome"
    assert "admin/intermediaries" in refused.json()["issue"][0]["diagnostics"]
    posted = await http.post(ADMIN_URL, json=registration(world["key_file"]), headers=plain)
    assert posted.status_code == 403


async def test_register_check_and_use_an_intermediary(world, admin, auth, db):
    http, service = world["http"], world["service"]
    log_lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: log_lines.append(  # type: ignore[method-assign]
        json.dumps({**record.__dict__, "msg": record.getMessage()}, default=str)
    )
    logger = logging.getLogger("dxf")
    logger.addHandler(handler)
    previous = logger.level
    logger.setLevel(logging.DEBUG)
    try:
        created = await http.post(ADMIN_URL, json=registration(world["key_file"]), headers=admin)
        listed = await http.get(ADMIN_URL, headers=admin)
        one = await http.get(f"{ADMIN_URL}/self-qhio", headers=admin)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["status"] == "active" and body["endpointStatus"] == "active", body["lastCheck"]
    assert body["lastCheck"]["failed"] == 0 and body["lastCheck"]["passed"] > 5
    assert body["auth"] == "smart-backend" and body["address"] == FHIR_BASE
    for answer in (created, listed, one):
        _no_secret(answer.text)
    _no_secret("\n".join(log_lines))
    assert log_lines, "the check is logged (without credentials)"
    async with db.read() as conn:
        audit_rows = (await conn.execute(select(audit_event))).all()
        stored = (await conn.execute(select(intermediary))).one()
    # the "QHIO" here is this same server, so its own audit of the calls the check made (as
    # that client) is in the table too; the registry's rows must not carry credentials
    ours = [r for r in audit_rows if r.interaction.startswith("registry-")]
    _no_secret(repr(ours))
    assert {r.interaction for r in ours} == {"registry-add", "registry-read"}
    assert stored.client_id == CLIENT_ID and stored.token_url == TOKEN_URL  # kept, apart

    # the Endpoint and Organization are FHIR resources anyone with read scopes can see
    endpoint = (await http.get(f"/{body['endpoint']}", headers=auth)).json()
    assert endpoint["status"] == "active" and endpoint["address"] == FHIR_BASE
    assert endpoint["connectionType"]["code"] == "hl7-fhir-rest"
    _no_secret(json.dumps(endpoint))
    org = (await http.get(f"/{body['organization']}", headers=auth)).json()
    assert org["name"] == "San Diego Health Connect"

    # the directory hands out a working adapter: locate a patient stored in the "QHIO"
    stored_patient = {
        "resourceType": "Patient",
        "identifier": [{"system": "urn:example:mrn", "value": "R-1"}],
        "name": [{"family": "Registry"}],
    }
    made = await http.post("/Patient", json=stored_patient, headers={**auth, **FHIR_JSON})
    adapters = await service.directory.active()
    assert [a.name for a in adapters] == ["self-qhio"] and isinstance(adapters[0], FhirAdapter)
    found = await adapters[0].locate(PersonQuery(identifiers=(("urn:example:mrn", "R-1"),)))
    assert [p.id for p in found] == [made.json()["id"]]
    assert await service.directory.active() == adapters  # built once, reused


async def test_a_failing_check_records_error_and_the_failed_checks(world, admin, auth):
    http, service = world["http"], world["service"]
    body = registration(world["key_file"])
    body["auth"]["clientId"] = "not-registered-here"
    created = await http.post(ADMIN_URL, json=body, headers=admin)
    assert created.status_code == 201
    reg = created.json()
    assert reg["status"] == "error" and reg["endpointStatus"] == "error"
    failures = reg["lastCheck"]["failures"]
    assert [f["id"] for f in failures] == ["auth.token"]
    assert "invalid_client" in failures[0]["reason"]
    endpoint = (await http.get(f"/{reg['endpoint']}", headers=auth)).json()
    assert endpoint["status"] == "error"
    assert await service.directory.active() == []
    shown = (await http.get(f"{ADMIN_URL}/self-qhio", headers=admin)).json()
    assert shown["checks"][0]["failures"][0]["id"] == "auth.token"
    assert "not-registered-here" not in json.dumps(shown)


async def test_kit_failures_are_recorded_and_tolerated_ones_do_not_block(world, admin):
    http = world["http"]
    body = registration(world["key_file"])
    # the kit asks for scopes; the client is registered for system/*.rs only, so writes are
    # refused: the `errors` group still passes. A check group that does not exist fails.
    body["settings"] = {"check_groups": ["nosuchgroup"]}
    reg = (await http.post(ADMIN_URL, json=body, headers=admin)).json()
    assert reg["status"] == "error" and reg["lastCheck"]["failures"][0]["id"] == "kit.groups"

    body = registration(world["key_file"], name="self-two")
    body["auth"]["scope"] = "system/Patient.rs"  # searches of other types answer 403
    body["settings"] = {"check_groups": ["crud"], "tolerated_checks": ["crud."]}
    reg = (await http.post(ADMIN_URL, json=body, headers=admin)).json()
    failures = reg["lastCheck"]["failures"]
    assert failures and all(f["reason"].startswith("(tolerated)") for f in failures)
    assert reg["status"] == "active"


async def test_disable_and_enable(world, admin, auth):
    http, service = world["http"], world["service"]
    await http.post(ADMIN_URL, json=registration(world["key_file"]), headers=admin)
    assert [a.name for a in await service.directory.active()] == ["self-qhio"]
    off = (await http.post(f"{ADMIN_URL}/self-qhio/disable", headers=admin)).json()
    assert off["status"] == "off" and not off["enabled"]
    endpoint = (await http.get(f"/{off['endpoint']}", headers=auth)).json()
    assert endpoint["status"] == "off"
    assert await service.directory.active() == []
    # a check of a disabled registration is recorded but does not turn it on
    checked = (await http.post(f"{ADMIN_URL}/self-qhio/check", headers=admin)).json()
    assert checked["status"] == "off" and checked["lastCheck"]["status"] == "active"
    on = (await http.post(f"{ADMIN_URL}/self-qhio/enable", headers=admin)).json()
    assert on["status"] == "unchecked" and on["endpointStatus"] == "suspended"
    assert await service.directory.active() == []
    again = (await http.post(f"{ADMIN_URL}/self-qhio/check", headers=admin)).json()
    assert again["status"] == "active"
    assert [a.name for a in await service.directory.active()] == ["self-qhio"]
    missing = await http.post(f"{ADMIN_URL}/nobody/disable", headers=admin)
    assert missing.status_code == 404


async def test_endpoint_writes_need_the_admin_scope_and_can_be_attached(world, admin, auth):
    http = world["http"]
    endpoint = {
        "resourceType": "Endpoint",
        "status": "active",
        "connectionType": {"code": "hl7-fhir-rest"},
        "payloadType": [{"text": "any"}],
        "address": FHIR_BASE,
    }
    refused = await http.post("/Endpoint", json=endpoint, headers={**auth, **FHIR_JSON})
    assert refused.status_code == 403
    made = await http.post("/Endpoint", json=endpoint, headers={**admin, **FHIR_JSON})
    assert made.status_code == 201
    eid = made.json()["id"]
    assert (await http.delete(f"/Endpoint/{eid}", headers=auth)).status_code == 403
    body = registration(world["key_file"], endpoint=f"Endpoint/{eid}", check=False)
    del body["address"]
    reg = await http.post(ADMIN_URL, json=body, headers=admin)
    assert reg.status_code == 201, reg.text
    assert reg.json()["endpoint"] == f"Endpoint/{eid}" and reg.json()["status"] == "unchecked"
    # the registry owns Endpoint.status: unchecked shows as suspended
    assert (await http.get(f"/Endpoint/{eid}", headers=auth)).json()["status"] == "suspended"


@pytest.mark.parametrize(
    ("change", "status", "words"),
    [
        ({"kind": "nosuchkind"}, 400, "unknown kind"),
        ({"name": "Bad Name!"}, 400, "names are"),
        ({"address": "ftp://x.example.test"}, 400, "http(s) URL"),
        ({"auth": {"method": "smart-backend"}}, 400, "client-id"),
        ({"auth": {"method": "smart-backend", "secret": "x"}}, 400, "members"),
        ({"settings": {"page_size": "many"}}, 400, "page_size"),
        ({"settings": {"no_such": 1}}, 400, "unknown setting"),
    ],
)
async def test_bad_registrations_are_refused_clearly(world, admin, change, status, words):
    body = {**registration(world["key_file"]), **change, "check": False}
    answer = await world["http"].post(ADMIN_URL, json=body, headers=admin)
    assert answer.status_code == status
    assert words in answer.json()["issue"][0]["diagnostics"]


async def test_an_unreadable_key_file_is_refused_without_its_path(world, admin, tmp_path):
    bad = tmp_path / "secret-dir" / "nokey.pem"
    body = registration(str(bad), check=False)
    answer = await world["http"].post(ADMIN_URL, json=body, headers=admin)
    assert answer.status_code == 400 and "secret-dir" not in answer.text


async def test_duplicate_names_conflict(world, admin):
    body = registration(world["key_file"], check=False)
    assert (await world["http"].post(ADMIN_URL, json=body, headers=admin)).status_code == 201
    again = await world["http"].post(ADMIN_URL, json=body, headers=admin)
    assert again.status_code == 409


async def test_kinds_lists_the_nine_qhios(world, admin):
    kinds = (await world["http"].get(f"{ADMIN_URL}/kinds", headers=admin)).json()["kinds"]
    assert sum(k["qhio"] for k in kinds) == 9
    assert all(k["sources"] for k in kinds)


async def test_the_admin_scope_is_granted_by_client_credentials(world, container):
    key = rsa_key()
    await container.clients.add(
        Client(client_id="ops", scopes=("admin/intermediaries",), jwks=public_jwks(key))
    )
    http = world["http"]
    answer = await http.post(
        TOKEN_URL,
        data={
            "grant_type": "client_credentials",
            "scope": "admin/intermediaries system/*.rs",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": assertion(key, "ops"),
        },
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["scope"] == "admin/intermediaries"
    listed = await http.get(ADMIN_URL, headers=bearer(answer.json()["access_token"]))
    assert listed.status_code == 200


# ---- scheduled checks ----------------------------------------------------------------------


async def test_a_check_round_checks_what_is_due(world, admin):
    http, service = world["http"], world["service"]
    await http.post(ADMIN_URL, json=registration(world["key_file"], check=False), headers=admin)
    body = registration(world["key_file"], name="self-off", check=False)
    await http.post(ADMIN_URL, json=body, headers=admin)
    await http.post(f"{ADMIN_URL}/self-off/disable", headers=admin)
    assert await service.checker.check_round(due_after=3600) == {"self-qhio": "active"}
    # checked a moment ago: not due again within the interval
    assert await service.checker.check_round(due_after=3600) == {}
    assert await service.checker.check_round() == {"self-qhio": "active"}


async def test_the_periodic_task_stops_when_told(world):
    stop = asyncio.Event()
    stop.set()
    await asyncio.wait_for(run_periodic_checks(world["service"].checker, 3600, stop), 5)


async def test_the_server_starts_the_schedule_only_when_configured(container):
    off = container.settings.model_copy(update={"intermediary_check_interval": 0})
    assert _start_intermediary_checks(container, off) is None
    on = container.settings.model_copy(update={"intermediary_check_interval": 3600})
    started = _start_intermediary_checks(container, on)
    assert started is not None and not started[0].done()
    await _stop(started)
    assert started[0].done()
    await container.intermediaries().aclose()


async def test_the_migration_made_the_tables(db):
    async with db.read() as conn:
        await conn.execute(text("SELECT name, status FROM intermediary"))
        await conn.execute(text("SELECT name, failures FROM intermediary_check"))


async def test_a_check_puts_back_an_endpoint_status_written_by_hand(world, admin, auth):
    http = world["http"]
    body = registration(world["key_file"])
    body["auth"]["clientId"] = "not-registered-here"
    reg = (await http.post(ADMIN_URL, json=body, headers=admin)).json()
    endpoint = (await http.get(f"/{reg['endpoint']}", headers=auth)).json()
    endpoint["status"] = "active"
    put = await http.put(f"/{reg['endpoint']}", json=endpoint, headers={**admin, **FHIR_JSON})
    assert put.status_code == 200
    assert await world["service"].directory.active() == []  # the registry's status decides
    await http.post(f"{ADMIN_URL}/self-qhio/check", headers=admin)
    assert (await http.get(f"/{reg['endpoint']}", headers=auth)).json()["status"] == "error"
