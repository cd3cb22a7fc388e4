"""WriteSession.create_many: many new resources with caller-chosen ids, one statement per table."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from app.auth.policy import AccessPolicy, ScopeGrant
from app.errors import Conflict, Forbidden, Unprocessable
from app.fhir.search.criteria import parse_criteria
from app.store.repository import FhirRepository
from app.store.tables import resource, resource_compartment, resource_history
from app.store.writes import BulkConflict
from tests import factories
from tests.conftest import FHIR_BASE

FULL = AccessPolicy((ScopeGrant("system", "*", frozenset("cruds")),))


async def _count(db, table) -> int:
    async with db.read() as conn:
        return int(await conn.scalar(select(func.count()).select_from(table)))


async def test_create_many_stores_indexes_and_files_in_compartments(db):
    repo = FhirRepository(db, policy=FULL, base_url=FHIR_BASE)
    items = [
        ("Patient", "p1", factories.patient("MRN-B1")),
        ("Patient", "p2", factories.patient("MRN-B2")),
        ("Observation", "o1", factories.observation("p1")),
    ]
    async with repo.transaction() as tx:
        stored = await tx.create_many(items)
    assert [(s.resource_type, s.id, s.version) for s in stored] == [
        ("Patient", "p1", 1),
        ("Patient", "p2", 1),
        ("Observation", "o1", 1),
    ]
    assert await _count(db, resource_history) == 3
    page = await repo.search(
        parse_criteria("Patient", "identifier=urn:oid:2.16.840.1.113883.3.dxf.mrn|MRN-B2"),
        count=10,
    )
    assert [r.id for r in page.resources] == ["p2"]
    async with db.read() as conn:
        rows = await conn.execute(
            select(resource_compartment.c.patient_id, resource_compartment.c.res_id)
        )
        assert sorted(tuple(r) for r in rows) == [("p1", "o1"), ("p1", "p1"), ("p2", "p2")]


async def test_create_many_with_a_taken_id_writes_nothing(db):
    repo = FhirRepository(db, policy=FULL, base_url=FHIR_BASE)
    await repo.update("Patient", "p1", {**factories.patient("A"), "id": "p1"}, if_match=None)
    async with repo.transaction() as tx:
        with pytest.raises(Conflict):
            await tx.create_many(
                [("Patient", "p9", factories.patient("B")), ("Patient", "p1", factories.patient())]
            )
        # the transaction goes on: the failed call left nothing behind
        await tx.create_many([("Patient", "p8", factories.patient("C"))])
    async with db.read() as conn:
        ids = sorted(r.res_id for r in await conn.execute(select(resource.c.res_id)))
    assert ids == ["p1", "p8"]


async def test_create_many_validates_and_applies_the_policy(db):
    repo = FhirRepository(db, policy=FULL, base_url=FHIR_BASE)
    with pytest.raises(Unprocessable):
        async with repo.transaction() as tx:
            await tx.create_many([("Patient", "p1", {"resourceType": "Patient", "birthDate": "x"})])
    read_only = AccessPolicy((ScopeGrant("system", "*", frozenset("rs")),))
    ro = FhirRepository(db, policy=read_only, base_url=FHIR_BASE)
    with pytest.raises(Forbidden):
        async with ro.transaction() as tx:
            await tx.create_many([("Patient", "p1", factories.patient())])
    assert await _count(db, resource) == 0


async def test_a_detached_create_many_writes_while_the_caller_goes_on(db):
    repo = FhirRepository(db, policy=FULL, base_url=FHIR_BASE)
    async with repo.transaction() as tx:
        await tx.create_many(
            [("Patient", f"d{n}", factories.patient(f"MRN-D{n}")) for n in range(3)],
            detached=True,
        )
        # the session's next statement sees the rows
        await tx.create_many([("Observation", "od", factories.observation("d1"))], detached=True)
        assert (await tx.read("Patient", "d2")).id == "d2"
    assert await _count(db, resource) == 4
    assert await _count(db, resource_history) == 4
    page = await repo.search(parse_criteria("Observation", "patient=Patient/d1"), count=10)
    assert [r.id for r in page.resources] == ["od"]


async def test_a_detached_create_many_with_a_taken_id_fails_the_transaction(db):
    repo = FhirRepository(db, policy=FULL, base_url=FHIR_BASE)
    await repo.update("Patient", "p1", {**factories.patient("A"), "id": "p1"}, if_match=None)
    with pytest.raises(BulkConflict):
        async with repo.transaction() as tx:
            await tx.create("Patient", factories.patient("E"))
            await tx.create_many(
                [("Patient", "p9", factories.patient("B")), ("Patient", "p1", factories.patient())],
                detached=True,
            )
            await tx.read("Patient", "p1")  # the failure surfaces here, not as a Conflict
    async with db.read() as conn:
        ids = sorted(r.res_id for r in await conn.execute(select(resource.c.res_id)))
    assert ids == ["p1"]  # nothing of the failed transaction is committed
    with pytest.raises(BulkConflict):  # also when nothing follows: at commit
        async with repo.transaction() as tx:
            await tx.create_many([("Patient", "p1", factories.patient())], detached=True)
    assert await _count(db, resource) == 1
