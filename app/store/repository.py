"""The FHIR repository: versioned storage with the caller's AccessPolicy applied on every path.

Implements the storage side of https://hl7.org/fhir/R4/http.html: read, vread, create, update,
delete, history and the conditional forms, for SQLite and PostgreSQL alike.

- Every write makes a version: the `resource` row is replaced by compare-and-set on its version
  (so concurrent writers never skip or reuse a version id) and a row is appended to
  `resource_history`. Index rows and compartment membership change in the same transaction.
- Conditional create claims a unique `conditional_key` row for its normalised criteria, so of
  many concurrent identical requests exactly one creates; the others find its resource.
- A policy confined to a Patient compartment sees only that compartment: what lies outside reads
  as not found (the same answer as a resource that does not exist) and cannot be written (403).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, Protocol

import orjson
from sqlalchemy import and_, or_, select, true

from app.auth.policy import AccessPolicy
from app.db import Database
from app.errors import Forbidden, Gone, NotFound
from app.fhir.compartments import patient_ids_of
from app.fhir.models import RESOURCE_TYPES
from app.fhir.search.criteria import Criteria
from app.fhir.search.query import SearchQuery
from app.store import statements as q
from app.store.base import (
    HistoryEntry,
    HistoryPage,
    StoredResource,
    WriteResult,
    format_instant,
    utc_now_ms,
)
from app.store.everything import EverythingPage, EverythingRequest, everything
from app.store.matching import match_candidates
from app.store.searching import SearchPage, run_search
from app.store.tables import resource, resource_history
from app.store.writes import WriteSession

__all__ = [
    "CommitRecord",
    "FhirRepository",
    "HistoryEntry",
    "HistoryPage",
    "SearchPage",
    "StoredResource",
    "WriteResult",
    "WriteSession",
    "format_instant",
]


class CommitRecord(Protocol):
    """Rows that describe a single-resource write and are written in its transaction (the
    router's audit record of a create or update: one commit instead of two, and no write
    without its record). `rows` is called before the commit with the write's result and the
    Patients whose compartments hold the resource; `committed` after the commit."""

    def rows(self, result: WriteResult, patients: set[str]) -> tuple[Any, list[dict[str, Any]]]: ...

    def committed(self) -> None: ...


class FhirRepository:
    """Per-request repository: the database plus the caller's policy."""

    def __init__(
        self,
        db: Database,
        *,
        policy: AccessPolicy,
        base_url: str,
        clock: Callable[[], datetime] = utc_now_ms,
    ) -> None:
        self.db = db
        self.policy = policy
        self.base_url = base_url
        self.clock = clock
        self.commit_record: CommitRecord | None = None

    # ---- reads -------------------------------------------------------------------------------

    async def read(self, resource_type: str, resource_id: str) -> StoredResource:
        patient = self.policy.restriction(resource_type, "r")
        params = {"rtype": resource_type, "rid": resource_id}
        if patient:
            row = await self.db.fetch_one(
                q.POINT_READ_IN_COMPARTMENT, {**params, "patient": patient}
            )
        else:
            row = await self.db.fetch_one(q.POINT_READ, params)
        return q.current_row(resource_type, resource_id, row)

    async def vread(self, resource_type: str, resource_id: str, version: int) -> StoredResource:
        patient = self.policy.restriction(resource_type, "r")
        async with self.db.read() as conn:
            if patient and not await q.in_compartment(conn, patient, resource_type, resource_id):
                raise q.not_found(resource_type, resource_id)
            row = (
                await conn.execute(
                    select(resource_history).where(
                        resource_history.c.res_type == resource_type,
                        resource_history.c.res_id == resource_id,
                        resource_history.c.version == version,
                    )
                )
            ).first()
        if row is None:
            raise NotFound(f"{resource_type}/{resource_id} has no version {version}")
        stored = q.stored_row(row)
        if patient and stored.content and patient not in self._patients(stored.content):
            raise NotFound(f"{resource_type}/{resource_id} has no version {version}")
        if stored.content is None:
            raise Gone(f"{resource_type}/{resource_id} version {version} is a deletion")
        return stored

    async def history(
        self,
        resource_type: str | None = None,
        resource_id: str | None = None,
        *,
        count: int,
        since: datetime | None = None,
        cursor: int | None = None,
    ) -> HistoryPage:
        """Instance, type or system history, newest first, keyset-paged on the history sequence."""
        h = resource_history.c
        conds: list[Any] = []
        patient: str | None = None
        if resource_type is not None:
            perm = "r" if resource_id is not None else "s"
            patient = self.policy.restriction(resource_type, perm)
            conds.append(h.res_type == resource_type)
            if resource_id is not None:
                conds.append(h.res_id == resource_id)
            if patient:
                conds.append(q.compartment_exists(patient, h.res_type, h.res_id))
        else:
            conds.append(self.type_filter(h.res_type, h.res_id))
        if since is not None:
            conds.append(h.last_updated >= since)
        if cursor is not None:
            conds.append(h.hid < cursor)
        query = select(resource_history).where(*conds).order_by(h.hid.desc()).limit(count + 1)
        async with self.db.read() as conn:
            if resource_id is not None and resource_type is not None:
                found = await conn.execute(
                    select(resource.c.res_id).where(
                        resource.c.res_type == resource_type, resource.c.res_id == resource_id
                    )
                )
                if found.first() is None or (
                    patient
                    and not await q.in_compartment(conn, patient, resource_type, resource_id)
                ):
                    raise q.not_found(resource_type, resource_id)
            rows = (await conn.execute(query)).all()
        more = len(rows) > count
        rows = rows[:count]
        entries = [HistoryEntry(q.stored_row(r), r.method) for r in rows]
        if patient or resource_type is None:
            perm = "r" if resource_id is not None else "s"
            entries = [e for e in entries if self._visible_version(e.resource, perm)]
        return HistoryPage(entries, rows[-1].hid if more and rows else None)

    async def search(self, query: SearchQuery | Criteria, *, count: int = 50) -> SearchPage:
        """Type-level search (see app.store.searching). Internal callers may pass bare
        Criteria and a page size."""
        if isinstance(query, Criteria):
            query = SearchQuery(query, count)
        return await run_search(self, query)

    async def everything(self, request: EverythingRequest) -> EverythingPage:
        """Patient/$everything (see app.store.everything); an instance the caller may not
        read is not found."""
        if request.patient_id is not None:
            await self.read("Patient", request.patient_id)
        return await everything(self, request)

    async def match_candidates(self, wanted: dict[str, Any]) -> list[StoredResource]:
        """Patient/$match: the Patients worth scoring against `wanted` (app.store.matching)."""
        return await match_candidates(self, wanted)

    def type_filter(self, type_col: Any, id_col: Any, permission: str = "s") -> Any:
        """The policy as a condition on rows of any type: the types it opens, and the
        compartment-confined types within the caller's compartment."""
        open_types, confined_types = [], []
        for rtype in sorted(RESOURCE_TYPES):
            if not self.policy.allows(rtype, permission):
                continue
            confined = self.policy.restriction(rtype, permission)
            (confined_types if confined else open_types).append(rtype)
        parts = []
        if len(open_types) == len(RESOURCE_TYPES):
            return true()
        if open_types:
            parts.append(type_col.in_(open_types))
        if confined_types and self.policy.patient:
            parts.append(
                and_(
                    type_col.in_(confined_types),
                    q.compartment_exists(self.policy.patient, type_col, id_col),
                )
            )
        if not parts:
            raise Forbidden("the access token's scopes permit no resource type here")
        return or_(*parts)

    def _visible_version(self, stored: StoredResource, permission: str) -> bool:
        try:
            patient = self.policy.restriction(stored.resource_type, permission)
        except Forbidden:
            return False
        return (
            patient is None or stored.content is None or patient in self._patients(stored.content)
        )

    def _patients(self, content: bytes) -> set[str]:
        return patient_ids_of(orjson.loads(content), self.base_url)

    # ---- writes ------------------------------------------------------------------------------

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[WriteSession]:
        """One atomic unit of work: everything done through the session commits or none does.

        The database's write lock is taken at the first statement (Database.write(lazy=True)):
        creates with server-minted ids hold their rows back until commit, so their validation
        and indexing run outside the lock."""
        record = None
        async with self.db.write(lazy=True) as conn:
            session = WriteSession(self, conn)
            try:
                yield session
            except BaseException:
                await session.conn.abandon()  # a detached write still on the connection
                raise
            if session.result is not None and session.changed and self.commit_record is not None:
                record = self.commit_record
                session.conn.defer(*record.rows(session.result, session.patients))
            await session.flush()
        if record is not None:
            record.committed()

    async def create(
        self, resource_type: str, body: dict[str, Any], *, if_none_exist: Criteria | None = None
    ) -> WriteResult:
        async with self.transaction() as tx:
            tx.result = await tx.create(resource_type, body, if_none_exist=if_none_exist)
            return tx.result

    async def update(
        self, resource_type: str, resource_id: str, body: dict[str, Any], *, if_match: int | None
    ) -> WriteResult:
        async with self.transaction() as tx:
            tx.result = await tx.update(resource_type, resource_id, body, if_match=if_match)
            return tx.result

    async def conditional_update(
        self, criteria: Criteria, body: dict[str, Any], *, if_match: int | None
    ) -> WriteResult:
        async with self.transaction() as tx:
            tx.result = await tx.conditional_update(criteria, body, if_match=if_match)
            return tx.result

    async def delete(self, resource_type: str, resource_id: str) -> StoredResource | None:
        async with self.transaction() as tx:
            return await tx.delete(resource_type, resource_id)
