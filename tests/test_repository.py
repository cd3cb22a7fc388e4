"""Repository seams: stored bytes are served as they are, without a model round trip."""

from __future__ import annotations

import orjson
import pytest

from app.auth.scopes import policy_from_scopes
from app.store.repository import FhirRepository
from tests.conftest import FHIR_BASE
from tests.factories import patient


@pytest.fixture
def repo(db):
    return FhirRepository(
        db, policy=policy_from_scopes(["system/*.cruds"], None), base_url=FHIR_BASE
    )


async def test_read_returns_stored_json_without_validation(repo, monkeypatch):
    written = (await repo.create("Patient", patient("r1"))).resource
    import app.fhir.models
    import app.store.writes

    def _boom(_resource):
        raise AssertionError("the read path must not build a model")

    monkeypatch.setattr(app.store.writes, "check_resource", _boom)
    monkeypatch.setattr(app.fhir.models, "validate_resource", _boom)
    monkeypatch.setattr(app.fhir.models, "_model", _boom)
    got = await repo.read("Patient", written.id)
    assert isinstance(got.content, bytes)
    assert orjson.loads(got.content) == orjson.loads(written.content)
    if repo.db.is_sqlite:
        assert got.content == written.content  # byte for byte


async def test_meta_is_server_assigned(repo):
    body = patient(
        "r2",
        meta={
            "versionId": "99",
            "lastUpdated": "2001-01-01T00:00:00Z",
            "tag": [{"system": "urn:t", "code": "keep"}],
        },
    )
    stored = orjson.loads((await repo.create("Patient", body)).resource.content)
    assert stored["meta"]["versionId"] == "1"
    assert stored["meta"]["lastUpdated"] != "2001-01-01T00:00:00Z"
    assert stored["meta"]["tag"] == [{"system": "urn:t", "code": "keep"}]
    assert list(stored)[:2] == ["resourceType", "id"]


async def test_read_many_gives_the_live_resources_the_policy_lets_the_caller_read(repo, db):
    from tests.factories import observation

    for rid in ("m1", "m2", "m3"):
        await repo.update("Patient", rid, {**patient(rid), "id": rid}, if_match=None)
    await repo.update("Observation", "o1", {**observation("m1"), "id": "o1"}, if_match=None)
    await repo.update("Observation", "o2", {**observation("m2"), "id": "o2"}, if_match=None)
    await repo.delete("Patient", "m3")
    keys = [("Patient", "m1"), ("Patient", "m3"), ("Patient", "nope"), ("Observation", "o1")]
    keys += [("Observation", "o2"), ("Patient", "m1")]
    async with repo.transaction() as tx:
        found = await tx.read_many(keys)
    assert sorted(found) == [("Observation", "o1"), ("Observation", "o2"), ("Patient", "m1")]
    assert orjson.loads(found[("Observation", "o1")].content)["id"] == "o1"
    assert found[("Patient", "m1")].version == 1
    confined = FhirRepository(
        db, policy=policy_from_scopes(["patient/*.rs"], "m1"), base_url=FHIR_BASE
    )
    async with confined.transaction() as tx:
        assert sorted(await tx.read_many(keys)) == [("Observation", "o1"), ("Patient", "m1")]
    only_patients = FhirRepository(
        db, policy=policy_from_scopes(["system/Patient.rs"], None), base_url=FHIR_BASE
    )
    async with only_patients.transaction() as tx:
        assert sorted(await tx.read_many(keys)) == [("Patient", "m1")]


async def test_an_update_with_a_stale_known_version_still_applies_once(repo):
    await repo.update("Patient", "k1", {**patient("k1"), "id": "k1"}, if_match=None)
    await repo.update("Patient", "k1", {**patient("k1", family="Two"), "id": "k1"}, if_match=None)
    async with repo.transaction() as tx:
        written = await tx.update(
            "Patient", "k1", {**patient("k1", family="Three"), "id": "k1"}, known_version=1
        )
    assert (written.resource.version, written.created) == (3, False)
    got = orjson.loads((await repo.read("Patient", "k1")).content)
    assert got["name"][0]["family"] == "Three"
    assert got["meta"]["versionId"] == "3"
