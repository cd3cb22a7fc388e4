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

    monkeypatch.setattr(app.store.writes, "validate_resource", _boom)
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
