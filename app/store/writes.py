"""Writes inside one transaction: create, update, conditional update, delete.

See app.store.repository for the guarantees (versions by compare-and-set, index and compartment
rows in the same transaction, race-free conditional create) and the access rules.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from typing import TYPE_CHECKING, Any, NamedTuple

import orjson
from sqlalchemy import and_, delete, insert, or_, select
from sqlalchemy.exc import IntegrityError

from app.db import DbConnection, Prepared, pg_insert_all, pg_insert_all_params
from app.errors import Conflict, Forbidden, Gone, Invalid, NotFound, PreconditionFailed
from app.fhir.compartments import patient_ids_of
from app.fhir.models import check_resource
from app.fhir.rules import check_rules
from app.fhir.search.criteria import Criteria
from app.fhir.search.extract import index_rows
from app.store import statements as q
from app.store.base import StoredResource, WriteResult, format_instant
from app.store.base import new_id as make_id
from app.store.searching import policy_guard
from app.store.tables import conditional_key, resource

if TYPE_CHECKING:
    from app.store.repository import FhirRepository

__all__ = ["BulkConflict", "WriteSession"]

_MAX_RETRIES = 20


class BulkConflict(Exception):
    """A detached bulk create (WriteSession.create_many(detached=True)) found one of its ids
    taken. Raised by the session's next statement (or at commit); the transaction can no
    longer commit and must be rolled back. Deliberately not a Conflict: code that handles a
    conflict of its own statement must not swallow it."""


class _Deferring:
    """The transaction's connection, holding back the rows nothing reads before commit
    (history, index and compartment rows) so that a transaction Bundle writes each table's
    rows in one executemany instead of one statement per resource and table. Any other
    statement first writes what is held back, so the transaction always reads its own
    writes; a savepoint that rolls back drops what was held back inside it.

    It also runs at most one detached write (`detach`): on PostgreSQL the rows of a bulk
    create go to the server as one statement in a background task, and the caller goes on
    preparing the next ones while the server inserts and indexes; every other use of the
    connection waits for it first."""

    def __init__(self, conn: DbConnection, is_sqlite: bool) -> None:
        self._conn = conn
        self._is_sqlite = is_sqlite
        self._pending: dict[Any, list[dict[str, Any]]] = {}
        self._detached: asyncio.Task[None] | None = None

    def defer(self, statement: Any, rows: list[dict[str, Any]]) -> None:
        self._pending.setdefault(statement, []).extend(rows)

    async def settle(self) -> None:
        """Wait for the detached write, if any; its failure is raised here."""
        task, self._detached = self._detached, None
        if task is not None:
            await task

    async def abandon(self) -> None:
        """The transaction is being rolled back: let a detached write end, whatever its
        outcome, so that the rollback does not race it on the connection."""
        task, self._detached = self._detached, None
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)

    async def flush(self) -> None:
        await self.settle()
        pending, self._pending = self._pending, {}
        if len(pending) > 1 and not self._is_sqlite:
            # one round trip for all the tables (pg_insert_all) instead of one per table
            batches = list(pending.items())
            combined = pg_insert_all(tuple(statement for statement, _rows in batches))
            if combined is not None:
                await self._conn.execute(combined, pg_insert_all_params(batches))
                return
        for statement, rows in pending.items():
            await self._conn.execute(statement, rows)

    async def execute(self, statement: Any, parameters: Any = None) -> Any:
        await self.settle()
        if self._pending:
            await self.flush()
        return await self._conn.execute(statement, parameters)

    async def scalar(self, statement: Any, parameters: Any = None) -> Any:
        await self.settle()
        if self._pending:
            await self.flush()
        return await self._conn.scalar(statement, parameters)

    @asynccontextmanager
    async def begin_nested(self) -> AsyncIterator[None]:
        await self.flush()
        try:
            async with self._conn.begin_nested():
                yield
        except BaseException:
            self._pending = {}  # what was held back inside the savepoint is rolled back too
            raise

    async def insert_all(self, work: _Inserts) -> None:
        """Run a bulk insert now: the (statement, rows) batches, one executemany each, on
        SQLite; the (statement, parameters) of one statement on PostgreSQL. IntegrityError
        as the driver raises it."""
        await self.flush()
        await self._insert_all(work)

    async def detach(self, work: _Inserts) -> None:
        """insert_all without waiting for it on PostgreSQL (on SQLite, whose statements run in
        this thread, there is nothing to overlap: it runs at once). A taken id surfaces as
        BulkConflict from the next statement, flush or settle."""
        await self.flush()
        if self._is_sqlite:
            await self._insert_detached(work)
            return
        self._detached = asyncio.create_task(self._insert_detached(work))
        await asyncio.sleep(0)  # let the task send the statement before the caller goes on

    async def _insert_detached(self, work: _Inserts) -> None:
        try:
            await self._insert_all(work)
        except IntegrityError:
            raise BulkConflict("a resource id given for a bulk create is already taken") from None

    async def _insert_all(self, work: _Inserts) -> None:
        if isinstance(work, list):
            for statement, rows in work:
                await self._conn.execute(statement, rows)
        else:
            await self._conn.execute(*work)


_Inserts = list[tuple[Prepared, list[dict[str, Any]]]] | tuple[Any, dict[str, Any]]


class _Current(NamedTuple):
    version: int
    deleted: bool


class WriteSession:
    """Writes inside one open transaction (see FhirRepository.transaction)."""

    def __init__(self, repo: FhirRepository, conn: DbConnection) -> None:
        self.repo = repo
        self.conn = _Deferring(conn, repo.db.is_sqlite)
        self.now = repo.clock()
        self.validated = False  # True: the caller validated every body it will write
        # for FhirRepository's CommitRecord: the single write's result (set by the
        # repository's one-resource methods), whether anything was written, and the Patients
        # whose compartments hold what was written
        self.result: WriteResult | None = None
        self.changed = False
        self.patients: set[str] = set()

    async def flush(self) -> None:
        """Write what is held back; FhirRepository.transaction calls it before commit."""
        await self.conn.flush()

    async def read(self, resource_type: str, resource_id: str) -> StoredResource:
        patient = self.repo.policy.restriction(resource_type, "r")
        return await q.read_current(self.conn, resource_type, resource_id, patient)

    async def read_many(
        self, keys: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], StoredResource]:
        """The current versions of several resources, by (type, id); those that do not exist,
        are deleted, or that the policy does not let the caller read are left out. One
        statement per 500 keys when the policy does not confine the caller to a compartment,
        else one read each."""
        out: dict[tuple[str, str], StoredResource] = {}
        wanted: list[tuple[str, str]] = []
        for resource_type, resource_id in dict.fromkeys(keys):
            try:
                confined = self.repo.policy.restriction(resource_type, "r")
            except Forbidden:
                continue
            if confined:
                with suppress(NotFound, Gone):
                    out[(resource_type, resource_id)] = await self.read(resource_type, resource_id)
                continue
            wanted.append((resource_type, resource_id))
        r = resource.c
        for start in range(0, len(wanted), 500):
            by_type: dict[str, list[str]] = {}
            for resource_type, resource_id in wanted[start : start + 500]:
                by_type.setdefault(resource_type, []).append(resource_id)
            # per type `res_type = ? AND res_id IN (...)`, which both backends answer from the
            # primary key (SQLite scans the table for a row-value IN)
            rows = await self.conn.execute(
                select(r.res_type, r.res_id, r.version, r.last_updated, r.deleted, r.content).where(
                    or_(*(and_(r.res_type == t, r.res_id.in_(ids)) for t, ids in by_type.items()))
                )
            )
            for row in rows:
                if not row.deleted:
                    out[(row.res_type, row.res_id)] = q.stored_row(row)
        return out

    async def match(self, criteria: Criteria, *, permission: str = "s") -> list[str]:
        """Ids of the live resources matching `criteria` that the policy lets the caller see."""
        patient = self.repo.policy.restriction(criteria.resource_type, permission)
        r = resource.c
        conds = [
            r.res_type == criteria.resource_type,
            r.deleted.is_(False),
            criteria.where(policy_guard(self.repo)),
        ]
        if patient:
            conds.append(q.compartment_exists(patient, r.res_type, r.res_id))
        rows = await self.conn.execute(select(r.res_id).where(*conds).limit(2))
        return [row.res_id for row in rows]

    async def create(
        self,
        resource_type: str,
        body: dict[str, Any],
        *,
        if_none_exist: Criteria | None = None,
        resource_id: str | None = None,
        minted: bool = False,
    ) -> WriteResult:
        """Create; `resource_id` is the client's choice (checked under a savepoint, so a
        concurrent claim is a 409), or one the server minted (`minted`: a fresh uuid)."""
        patient = self.repo.policy.restriction(resource_type, "c")
        self._check_body(resource_type, body)
        self._check_confined(patient, resource_type, body)
        new_id = resource_id or make_id()
        # a client-chosen id can be taken concurrently; a fresh uuid cannot
        add = self._insert_new if resource_id and not minted else self._insert
        if if_none_exist is None:
            return WriteResult(await add(resource_type, new_id, body), created=True)
        for _ in range(_MAX_RETRIES):
            existing = await self._single_match(if_none_exist, "If-None-Exist")
            if existing is not None:
                return WriteResult(await self.read(resource_type, existing), created=False)
            # A confined caller's criteria are claimed inside its compartment only, so they
            # neither collide with nor reveal matches elsewhere.
            key = if_none_exist.key_hash(scope=patient)
            try:
                async with self.conn.begin_nested():
                    await self.conn.execute(
                        insert(conditional_key).values(
                            res_type=resource_type, key_hash=key, res_id=new_id
                        )
                    )
            except IntegrityError:
                # Another writer holds these criteria. Either its resource is now visible to the
                # next match, or it no longer matches and the key is stale: drop it, try again.
                if not await self.match(if_none_exist, permission="c"):
                    await self.conn.execute(
                        delete(conditional_key).where(
                            conditional_key.c.res_type == resource_type,
                            conditional_key.c.key_hash == key,
                        )
                    )
                continue
            return WriteResult(await add(resource_type, new_id, body), created=True)
        raise Conflict("conditional create did not settle under contention; retry the request")

    async def update(
        self,
        resource_type: str,
        resource_id: str,
        body: dict[str, Any],
        *,
        if_match: int | None = None,
        known_version: int | None = None,
    ) -> WriteResult:
        """Update (or create) `resource_type/resource_id`. `known_version`: the live version
        the caller read in this transaction, which saves looking it up; a change since is
        still caught by the compare-and-set and retried like any other."""
        policy = self.repo.policy
        patient = policy.restriction(resource_type, "u")
        if body.get("id") != resource_id:
            raise Invalid(
                f"the resource id ({body.get('id')!r}) must match the URL's ({resource_id!r})"
            )
        self._check_body(resource_type, body)
        self._check_confined(patient, resource_type, body)
        for _ in range(_MAX_RETRIES):
            if known_version is not None:
                current: Any = _Current(known_version, False)
                known_version = None  # once: a retry reads what is there
            else:
                current = (
                    await self.conn.execute(q.CURRENT, q.key(resource_type, resource_id))
                ).first()
            if current is None:
                if if_match is not None:
                    raise PreconditionFailed(
                        f"If-Match given but {resource_type}/{resource_id} does not exist"
                    )
                self._check_confined(policy.restriction(resource_type, "c"), resource_type, body)
                try:
                    stored = await self._insert_claiming(resource_type, resource_id, body)
                except IntegrityError:
                    continue  # created concurrently: update it instead
                return WriteResult(stored, created=True)
            if patient and not await q.in_compartment(
                self.conn, patient, resource_type, resource_id
            ):
                raise Forbidden(f"{resource_type}/{resource_id} is outside the token's compartment")
            if if_match is not None and current.version != if_match:
                raise PreconditionFailed(
                    f"{resource_type}/{resource_id} is at version {current.version}, "
                    f"not {if_match} (If-Match)"
                )
            stored = await self._replace(resource_type, resource_id, current.version, body)
            if stored is not None:
                return WriteResult(stored, created=bool(current.deleted))
            if if_match is not None:
                raise PreconditionFailed(f"{resource_type}/{resource_id} changed concurrently")
        raise Conflict(f"{resource_type}/{resource_id} is being updated concurrently; retry")

    async def conditional_update(
        self, criteria: Criteria, body: dict[str, Any], *, if_match: int | None = None
    ) -> WriteResult:
        """PUT [type]?criteria: https://hl7.org/fhir/R4/http.html#cond-update"""
        resource_type = criteria.resource_type
        existing = await self._single_match(criteria, "conditional update")
        if existing is None:
            body_id = body.get("id")
            if body_id is not None and not isinstance(body_id, str):
                raise Invalid("resource id must be a string")
            state = await self._state(resource_type, body_id) if body_id else None
            if state == "live":
                raise Conflict(
                    f"no resource matches the criteria, but {resource_type}/{body_id} exists"
                )
            if state == "deleted" and body_id:
                return await self.update(resource_type, body_id, body, if_match=if_match)
            created = await self.create(
                resource_type, body, if_none_exist=criteria, resource_id=body_id or None
            )
            if created.created:
                return created
            # A concurrent request created the match first: this body updates it.
            existing = created.resource.id
            if body_id not in (None, existing):
                raise Conflict(
                    f"a concurrent request created {resource_type}/{existing} for these criteria"
                )
        if body.get("id") not in (None, existing):
            raise Invalid(
                f"the resource id ({body.get('id')!r}) differs from the matched {existing!r}"
            )
        return await self.update(
            resource_type, existing, {**body, "id": existing}, if_match=if_match
        )

    async def create_many(
        self,
        items: Sequence[tuple[str, str, dict[str, Any]]],
        *,
        validated: bool = False,
        detached: bool = False,
    ) -> list[StoredResource]:
        """Create resources whose ids the caller chose and knows to be unused (bulk loads).

        Each resource is checked, validated and indexed as `create` does, but the rows of all
        of them go in with one multi-row statement per table (on PostgreSQL, one statement
        for all the tables: statements.pg_bulk_create). If any id is taken, nothing of this
        call is written and Conflict is raised; the transaction itself stays usable.
        `validated=True` is for internal callers that already ran every body through
        app.fhir.models (check_resource or validate_resource); the policy still applies.
        `detached=True` (bulk loads that redo their whole transaction on failure): the rows
        are written while the caller goes on (see _Deferring.detach); a taken id then makes
        the session's next statement raise BulkConflict, after which the transaction must be
        rolled back.
        """
        resource_rows: list[dict[str, Any]] = []
        index: dict[Any, list[dict[str, Any]]] = {}
        stored = []
        for resource_type, resource_id, body in items:
            patient = self.repo.policy.restriction(resource_type, "c")
            if validated:
                if body.get("resourceType") != resource_type:
                    raise Invalid(
                        f"resourceType {body.get('resourceType')!r} is not {resource_type}"
                    )
            else:
                self._check_body(resource_type, body)
            self._check_confined(patient, resource_type, body)
            stamped, content = self._stamp(body, resource_id, 1)
            resource_rows.append(
                {
                    "res_type": resource_type,
                    "res_id": resource_id,
                    "version": 1,
                    "last_updated": self.now,
                    "deleted": False,
                    "content": content.decode(),
                }
            )
            for statement, rows in self._index_params(resource_type, resource_id, stamped):
                index.setdefault(statement, []).extend(rows)
            stored.append(StoredResource(resource_type, resource_id, 1, self.now, content))
        if not stored:
            return stored
        batches = list(index.items())
        work: _Inserts
        if self.repo.db.is_sqlite:
            history = [
                {
                    "res_type": r["res_type"],
                    "res_id": r["res_id"],
                    "version": 1,
                    "last_updated": self.now,
                    "method": "POST",
                    "content": r["content"],
                }
                for r in resource_rows
            ]
            work = [(q.INSERT_RESOURCE, resource_rows), (q.INSERT_HISTORY, history), *batches]
        else:
            statement = q.pg_bulk_create(tuple(s for s, _rows in batches))
            work = (statement, q.pg_bulk_create_params(resource_rows, batches))
        if detached:
            await self.conn.detach(work)
            return stored
        try:
            async with self.conn.begin_nested():
                await self.conn.insert_all(work)
        except IntegrityError:
            raise Conflict("a resource id given for a bulk create is already taken") from None
        return stored

    async def delete(self, resource_type: str, resource_id: str) -> StoredResource | None:
        """Logical delete; returns the deletion version, or None if already deleted."""
        patient = self.repo.policy.restriction(resource_type, "d")
        for _ in range(_MAX_RETRIES):
            current = (
                await self.conn.execute(q.CURRENT, q.key(resource_type, resource_id))
            ).first()
            if patient and (
                current is None
                or not await q.in_compartment(self.conn, patient, resource_type, resource_id)
            ):
                raise Forbidden(f"{resource_type}/{resource_id} is outside the token's compartment")
            if current is None:
                raise q.not_found(resource_type, resource_id)
            if current.deleted:
                return None
            version = current.version + 1
            done = await self.conn.execute(
                q.SET_VERSION,
                {
                    **q.key(resource_type, resource_id),
                    "old": current.version,
                    "new_version": version,
                    "new_updated": self.now,
                    "new_deleted": True,
                    "new_content": None,
                },
            )
            if done.rowcount != 1:
                continue
            await self._append_history(resource_type, resource_id, version, "DELETE", None)
            await self._drop_index(resource_type, resource_id, keep_compartment=True)
            await self.conn.execute(q.DROP_KEYS_OF, q.key(resource_type, resource_id))
            return StoredResource(resource_type, resource_id, version, self.now, None)
        raise Conflict(f"{resource_type}/{resource_id} is being updated concurrently; retry")

    # ---- internals ---------------------------------------------------------------------------

    def _check_confined(
        self, patient: str | None, resource_type: str, body: dict[str, Any]
    ) -> None:
        """A caller confined to one Patient's compartment writes only resources that belong to
        that Patient and to no other (they would otherwise appear in the other's compartment)."""
        if patient is None:
            return
        owners = patient_ids_of(body, self.repo.base_url)
        if patient not in owners or owners - {patient}:
            raise Forbidden(
                f"the {resource_type} must belong to Patient/{patient}'s compartment and no other"
            )

    async def _insert_new(
        self, resource_type: str, resource_id: str, body: dict[str, Any]
    ) -> StoredResource:
        """Insert a client-chosen id: one taken meanwhile is a 409, not a 500."""
        try:
            return await self._insert_claiming(resource_type, resource_id, body)
        except IntegrityError:
            raise Conflict(
                f"{resource_type}/{resource_id} was created concurrently; retry the request"
            ) from None

    async def _insert_claiming(
        self, resource_type: str, resource_id: str, body: dict[str, Any]
    ) -> StoredResource:
        """Insert an id that someone else may insert at the same time: the resource row goes
        in at once, so a collision raises IntegrityError here and leaves the transaction
        usable. PostgreSQL needs a savepoint for that; on SQLite a failed statement undoes
        only itself (and write transactions never overlap), so the savepoint is skipped."""
        if self.repo.db.is_sqlite:
            return await self._insert(resource_type, resource_id, body, fresh_id=False)
        async with self.conn.begin_nested():
            return await self._insert(resource_type, resource_id, body, fresh_id=False)

    def _check_body(self, resource_type: str, body: dict[str, Any]) -> None:
        if body.get("resourceType") != resource_type:
            raise Invalid(
                f"resourceType {body.get('resourceType')!r} differs from the URL's {resource_type}"
            )
        if not self.validated:
            check_resource(body)
        check_rules(body, self.repo.base_url)

    async def _single_match(self, criteria: Criteria, what: str) -> str | None:
        ids = await self.match(criteria, permission="s")
        if len(ids) > 1:
            raise PreconditionFailed(f"{what} criteria matched more than one resource")
        # Matching runs inside the caller's access (see match): what it may not see does not
        # match, so the answer never tells whether something exists elsewhere.
        return ids[0] if ids else None

    async def _state(self, resource_type: str, resource_id: str) -> str | None:
        """'live', 'deleted', or None when the id was never used."""
        row = (await self.conn.execute(q.STATE, q.key(resource_type, resource_id))).first()
        if row is None:
            return None
        return "deleted" if row.deleted else "live"

    def _stamp(
        self, body: dict[str, Any], resource_id: str, version: int
    ) -> tuple[dict[str, Any], bytes]:
        """The resource as stored: server id and meta.versionId/lastUpdated; also serialised."""
        meta = dict(body.get("meta") or {})
        meta["versionId"] = str(version)
        meta["lastUpdated"] = format_instant(self.now)
        stamped = {"resourceType": body["resourceType"], "id": resource_id}
        stamped.update((k, v) for k, v in body.items() if k not in ("resourceType", "id", "meta"))
        stamped["meta"] = meta
        return stamped, orjson.dumps(stamped)

    async def _insert(
        self, resource_type: str, resource_id: str, body: dict[str, Any], *, fresh_id: bool = True
    ) -> StoredResource:
        """Insert version 1. A `fresh_id` (a uuid minted here) cannot be taken, so even the
        resource row waits with the index rows to be written in one batch; a client's id
        is inserted at once, so a collision surfaces inside the caller's savepoint."""
        stamped, content = self._stamp(body, resource_id, 1)
        text = content.decode()
        row = {
            "res_type": resource_type,
            "res_id": resource_id,
            "version": 1,
            "last_updated": self.now,
            "deleted": False,
            "content": text,
        }
        if fresh_id:
            self.conn.defer(q.INSERT_RESOURCE, [row])
        else:
            await self.conn.execute(q.INSERT_RESOURCE, row)
        await self._append_history(resource_type, resource_id, 1, "POST", text)
        await self._write_index(resource_type, resource_id, stamped)
        return StoredResource(resource_type, resource_id, 1, self.now, content)

    async def _replace(
        self, resource_type: str, resource_id: str, old_version: int, body: dict[str, Any]
    ) -> StoredResource | None:
        version = old_version + 1
        stamped, content = self._stamp(body, resource_id, version)
        text = content.decode()
        done = await self.conn.execute(
            q.SET_VERSION,
            {
                **q.key(resource_type, resource_id),
                "old": old_version,
                "new_version": version,
                "new_updated": self.now,
                "new_deleted": False,
                "new_content": text,
            },
        )
        if done.rowcount != 1:
            return None
        # the old index rows go first, so that the history row waits with the new index rows
        # for the next statement (one round trip on PostgreSQL) instead of being sent alone
        await self._drop_index(resource_type, resource_id, keep_compartment=False)
        await self._append_history(resource_type, resource_id, version, "PUT", text)
        await self._write_index(resource_type, resource_id, stamped)
        return StoredResource(resource_type, resource_id, version, self.now, content)

    async def _append_history(
        self, resource_type: str, resource_id: str, version: int, method: str, text: str | None
    ) -> None:
        self.conn.defer(
            q.INSERT_HISTORY,
            [
                {
                    "res_type": resource_type,
                    "res_id": resource_id,
                    "version": version,
                    "last_updated": self.now,
                    "method": method,
                    "content": text,
                }
            ],
        )

    async def _write_index(
        self, resource_type: str, resource_id: str, body: dict[str, Any]
    ) -> None:
        """Hold the index and compartment rows back for the next statement (the old ones, if
        any, are already dropped)."""
        self.changed = True
        for statement, rows in self._index_params(resource_type, resource_id, body):
            if statement is q.INSERT_COMPARTMENT:
                self.patients.update(row["patient_id"] for row in rows)
            self.conn.defer(statement, rows)

    def _index_params(
        self, resource_type: str, resource_id: str, body: dict[str, Any]
    ) -> list[tuple[Any, list[dict[str, Any]]]]:
        """(statement, parameter rows) for the index and compartment rows of a resource."""
        out: list[tuple[Any, list[dict[str, Any]]]] = []
        t, i = resource_type, resource_id
        found = index_rows(body, self.repo.base_url)
        if found.tokens:
            out.append(
                (
                    q.INSERT_TOKEN,
                    [
                        {"res_type": t, "res_id": i, "param": p, "seq": n, "system": s, "value": v}
                        for n, (p, s, v) in enumerate(found.tokens)
                    ],
                )
            )
        if found.dates:
            out.append(
                (
                    q.INSERT_DATE,
                    [
                        {"res_type": t, "res_id": i, "param": p, "seq": n, "low": lo, "high": hi}
                        for n, (p, lo, hi) in enumerate(found.dates)
                    ],
                )
            )
        if found.quantities:
            out.append(
                (
                    q.INSERT_QUANTITY,
                    [
                        {
                            "res_type": t,
                            "res_id": i,
                            "param": p,
                            "seq": n,
                            "system": s,
                            "code": c,
                            "value": v,
                        }
                        for n, (p, s, c, v) in enumerate(found.quantities)
                    ],
                )
            )
        if found.strings:
            out.append(
                (
                    q.INSERT_STRING,
                    [
                        {
                            "res_type": t,
                            "res_id": i,
                            "param": p,
                            "seq": n,
                            "value_normalized": norm,
                            "value_exact": exact,
                        }
                        for n, (p, norm, exact) in enumerate(found.strings)
                    ],
                )
            )
        if found.references:
            out.append(
                (
                    q.INSERT_REFERENCE,
                    [
                        {
                            "res_type": t,
                            "res_id": i,
                            "param": p,
                            "seq": n,
                            "target_type": tt,
                            "target_id": ti,
                            "target_url": tu,
                        }
                        for n, (p, tt, ti, tu) in enumerate(found.references)
                    ],
                )
            )
        patients = patient_ids_of(body, self.repo.base_url)
        if patients:
            out.append(
                (
                    q.INSERT_COMPARTMENT,
                    [
                        {"patient_id": p, "res_type": resource_type, "res_id": resource_id}
                        for p in sorted(patients)
                    ],
                )
            )
        return out

    async def _drop_index(
        self, resource_type: str, resource_id: str, *, keep_compartment: bool
    ) -> None:
        key = q.key(resource_type, resource_id)
        if not self.repo.db.is_sqlite:  # one round trip
            await self.conn.execute(q.pg_drop_index(keep_compartment), key)
            return
        await self.conn.execute(q.DROP_TOKENS, key)
        await self.conn.execute(q.DROP_REFERENCES, key)
        await self.conn.execute(q.DROP_STRINGS, key)
        await self.conn.execute(q.DROP_DATES, key)
        await self.conn.execute(q.DROP_QUANTITIES, key)
        if not keep_compartment:
            await self.conn.execute(q.DROP_COMPARTMENT, key)
