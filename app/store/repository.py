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

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import (
    and_,
    bindparam,
    delete,
    exists,
    func,
    insert,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.exc import IntegrityError

from app.auth.policy import AccessPolicy
from app.db import Database, DbConnection, Prepared
from app.errors import Conflict, Forbidden, Gone, Invalid, NotFound, PreconditionFailed
from app.fhir.compartments import patient_ids_of
from app.fhir.models import RESOURCE_TYPES, validate_resource
from app.fhir.search.criteria import Criteria
from app.fhir.search.extract import token_rows
from app.store.tables import (
    conditional_key,
    resource,
    resource_compartment,
    resource_history,
    spidx_token,
)

__all__ = [
    "FhirRepository",
    "HistoryEntry",
    "HistoryPage",
    "SearchPage",
    "StoredResource",
    "WriteResult",
    "WriteSession",
    "format_instant",
]

_MAX_RETRIES = 20


def utc_now_ms() -> datetime:
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def format_instant(moment: datetime) -> str:
    moment = _aware(moment)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _aware(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class StoredResource:
    resource_type: str
    id: str
    version: int
    last_updated: datetime
    content: bytes | None  # None for a deleted version

    @property
    def etag(self) -> str:
        return f'W/"{self.version}"'

    @property
    def location(self) -> str:
        return f"{self.resource_type}/{self.id}/_history/{self.version}"


@dataclass(frozen=True, slots=True)
class WriteResult:
    resource: StoredResource
    created: bool


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    resource: StoredResource
    method: str  # POST, PUT or DELETE


@dataclass(frozen=True, slots=True)
class HistoryPage:
    entries: list[HistoryEntry]
    next_cursor: int | None


@dataclass(frozen=True, slots=True)
class SearchPage:
    resources: list[StoredResource]
    next_cursor: str | None
    total: int | None = None


def _new_id() -> str:
    return str(uuid.uuid4())


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

    # ---- reads -------------------------------------------------------------------------------

    async def read(self, resource_type: str, resource_id: str) -> StoredResource:
        patient = self.policy.restriction(resource_type, "r")
        params = {"rtype": resource_type, "rid": resource_id}
        if patient:
            row = await self.db.fetch_one(
                _POINT_READ_IN_COMPARTMENT, {**params, "patient": patient}
            )
        else:
            row = await self.db.fetch_one(_POINT_READ, params)
        return _current(resource_type, resource_id, row)

    async def vread(self, resource_type: str, resource_id: str, version: int) -> StoredResource:
        patient = self.policy.restriction(resource_type, "r")
        async with self.db.read() as conn:
            if patient and not await _in_compartment(conn, patient, resource_type, resource_id):
                raise _not_found(resource_type, resource_id)
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
        stored = _stored(row)
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
                conds.append(_compartment_exists(patient, h.res_type, h.res_id))
        else:
            conds.append(self._system_filter(h.res_type, h.res_id))
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
                    patient and not await _in_compartment(conn, patient, resource_type, resource_id)
                ):
                    raise _not_found(resource_type, resource_id)
            rows = (await conn.execute(query)).all()
        more = len(rows) > count
        rows = rows[:count]
        entries = [HistoryEntry(_stored(r), r.method) for r in rows]
        if patient or resource_type is None:
            perm = "r" if resource_id is not None else "s"
            entries = [e for e in entries if self._visible_version(e.resource, perm)]
        return HistoryPage(entries, rows[-1].hid if more and rows else None)

    async def search(
        self, criteria: Criteria, *, count: int, cursor: str | None = None
    ) -> SearchPage:
        """Type-level search over index tables; keyset-paged on the resource id."""
        patient = self.policy.restriction(criteria.resource_type, "s")
        r = resource.c
        conds: list[Any] = [
            r.res_type == criteria.resource_type,
            r.deleted.is_(False),
            criteria.where(),
        ]
        if patient:
            conds.append(_compartment_exists(patient, r.res_type, r.res_id))
        if count == 0:  # _count=0: how many match, no resources
            async with self.db.read() as conn:
                total = await conn.scalar(select(func.count()).select_from(resource).where(*conds))
            return SearchPage([], None, int(total or 0))
        if cursor is not None:
            conds.append(r.res_id > cursor)
        query = (
            select(r.res_type, r.res_id, r.version, r.last_updated, r.content)
            .where(*conds)
            .order_by(r.res_id)
            .limit(count + 1)
        )
        async with self.db.read() as conn:
            rows = (await conn.execute(query)).all()
        more = len(rows) > count
        rows = rows[:count]
        return SearchPage([_stored(row) for row in rows], rows[-1].res_id if more else None)

    def _system_filter(self, type_col: Any, id_col: Any) -> Any:
        open_types, confined_types = [], []
        for rtype in sorted(RESOURCE_TYPES):
            if not self.policy.allows(rtype, "s"):
                continue
            (confined_types if self.policy.restriction(rtype, "s") else open_types).append(rtype)
        parts = []
        if len(open_types) == len(RESOURCE_TYPES):
            return true()
        if open_types:
            parts.append(type_col.in_(open_types))
        if confined_types and self.policy.patient:
            parts.append(
                and_(
                    type_col.in_(confined_types),
                    _compartment_exists(self.policy.patient, type_col, id_col),
                )
            )
        if not parts:
            raise Forbidden("the access token's scopes permit no history")
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
        """One atomic unit of work: everything done through the session commits or none does."""
        async with self.db.write() as conn:
            yield WriteSession(self, conn)

    async def create(
        self, resource_type: str, body: dict[str, Any], *, if_none_exist: Criteria | None = None
    ) -> WriteResult:
        async with self.transaction() as tx:
            return await tx.create(resource_type, body, if_none_exist=if_none_exist)

    async def update(
        self, resource_type: str, resource_id: str, body: dict[str, Any], *, if_match: int | None
    ) -> WriteResult:
        async with self.transaction() as tx:
            return await tx.update(resource_type, resource_id, body, if_match=if_match)

    async def conditional_update(
        self, criteria: Criteria, body: dict[str, Any], *, if_match: int | None
    ) -> WriteResult:
        async with self.transaction() as tx:
            return await tx.conditional_update(criteria, body, if_match=if_match)

    async def delete(self, resource_type: str, resource_id: str) -> StoredResource | None:
        async with self.transaction() as tx:
            return await tx.delete(resource_type, resource_id)


class WriteSession:
    """Writes inside one open transaction (see FhirRepository.transaction)."""

    def __init__(self, repo: FhirRepository, conn: DbConnection) -> None:
        self.repo = repo
        self.conn = conn
        self.now = repo.clock()

    async def read(self, resource_type: str, resource_id: str) -> StoredResource:
        patient = self.repo.policy.restriction(resource_type, "r")
        return await _read(self.conn, resource_type, resource_id, patient)

    async def match(self, criteria: Criteria, *, permission: str = "s") -> list[str]:
        """Ids of the live resources matching `criteria` that the policy lets the caller see."""
        patient = self.repo.policy.restriction(criteria.resource_type, permission)
        r = resource.c
        conds = [r.res_type == criteria.resource_type, r.deleted.is_(False), criteria.where()]
        if patient:
            conds.append(_compartment_exists(patient, r.res_type, r.res_id))
        rows = await self.conn.execute(select(r.res_id).where(*conds).limit(2))
        return [row.res_id for row in rows]

    async def create(
        self,
        resource_type: str,
        body: dict[str, Any],
        *,
        if_none_exist: Criteria | None = None,
        resource_id: str | None = None,
    ) -> WriteResult:
        patient = self.repo.policy.restriction(resource_type, "c")
        self._check_body(resource_type, body)
        if patient and patient not in patient_ids_of(body, self.repo.base_url):
            raise Forbidden(f"the new {resource_type} is outside Patient/{patient}'s compartment")
        new_id = resource_id or _new_id()
        if if_none_exist is None:
            return WriteResult(await self._insert(resource_type, new_id, body), created=True)
        for _ in range(_MAX_RETRIES):
            existing = await self._single_match(if_none_exist, "If-None-Exist")
            if existing is not None:
                return WriteResult(await self.read(resource_type, existing), created=False)
            key = if_none_exist.key_hash()
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
            return WriteResult(await self._insert(resource_type, new_id, body), created=True)
        raise Conflict("conditional create did not settle under contention; retry the request")

    async def update(
        self,
        resource_type: str,
        resource_id: str,
        body: dict[str, Any],
        *,
        if_match: int | None = None,
    ) -> WriteResult:
        policy = self.repo.policy
        patient = policy.restriction(resource_type, "u")
        if body.get("id") != resource_id:
            raise Invalid(
                f"the resource id ({body.get('id')!r}) must match the URL's ({resource_id!r})"
            )
        self._check_body(resource_type, body)
        if patient and patient not in patient_ids_of(body, self.repo.base_url):
            raise Forbidden(f"the {resource_type} would be outside Patient/{patient}'s compartment")
        for _ in range(_MAX_RETRIES):
            current = (await self.conn.execute(_CURRENT, _key(resource_type, resource_id))).first()
            if current is None:
                if if_match is not None:
                    raise PreconditionFailed(
                        f"If-Match given but {resource_type}/{resource_id} does not exist"
                    )
                policy.restriction(resource_type, "c")
                try:
                    async with self.conn.begin_nested():
                        stored = await self._insert(resource_type, resource_id, body)
                except IntegrityError:
                    continue  # created concurrently: update it instead
                return WriteResult(stored, created=True)
            if if_match is not None and current.version != if_match:
                raise PreconditionFailed(
                    f"{resource_type}/{resource_id} is at version {current.version}, "
                    f"not {if_match} (If-Match)"
                )
            if patient and not await _in_compartment(
                self.conn, patient, resource_type, resource_id
            ):
                raise Forbidden(f"{resource_type}/{resource_id} is outside the token's compartment")
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
            return await self.create(
                resource_type, body, if_none_exist=criteria, resource_id=body_id or None
            )
        if body.get("id") not in (None, existing):
            raise Invalid(
                f"the resource id ({body.get('id')!r}) differs from the matched {existing!r}"
            )
        return await self.update(
            resource_type, existing, {**body, "id": existing}, if_match=if_match
        )

    async def delete(self, resource_type: str, resource_id: str) -> StoredResource | None:
        """Logical delete; returns the deletion version, or None if already deleted."""
        patient = self.repo.policy.restriction(resource_type, "d")
        for _ in range(_MAX_RETRIES):
            current = (await self.conn.execute(_CURRENT, _key(resource_type, resource_id))).first()
            if patient and (
                current is None
                or not await _in_compartment(self.conn, patient, resource_type, resource_id)
            ):
                raise Forbidden(f"{resource_type}/{resource_id} is outside the token's compartment")
            if current is None:
                raise _not_found(resource_type, resource_id)
            if current.deleted:
                return None
            version = current.version + 1
            done = await self.conn.execute(
                _SET_VERSION,
                {
                    **_key(resource_type, resource_id),
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
            await self.conn.execute(_DROP_KEYS_OF, _key(resource_type, resource_id))
            return StoredResource(resource_type, resource_id, version, self.now, None)
        raise Conflict(f"{resource_type}/{resource_id} is being updated concurrently; retry")

    # ---- internals ---------------------------------------------------------------------------

    def _check_body(self, resource_type: str, body: dict[str, Any]) -> None:
        if body.get("resourceType") != resource_type:
            raise Invalid(
                f"resourceType {body.get('resourceType')!r} differs from the URL's {resource_type}"
            )
        validate_resource(body)

    async def _single_match(self, criteria: Criteria, what: str) -> str | None:
        ids = await self.match(criteria, permission="s")
        if len(ids) > 1:
            raise PreconditionFailed(f"{what} criteria matched more than one resource")
        if not ids:
            # A match the caller may not see still blocks a conditional write.
            r = resource.c
            hidden = await self.conn.execute(
                select(r.res_id)
                .where(
                    r.res_type == criteria.resource_type,
                    r.deleted.is_(False),
                    criteria.where(),
                )
                .limit(1)
            )
            if hidden.first() is not None:
                raise Forbidden(f"{what} criteria matched a resource outside the token's access")
        return ids[0] if ids else None

    async def _state(self, resource_type: str, resource_id: str) -> str | None:
        """'live', 'deleted', or None when the id was never used."""
        r = resource.c
        row = (
            await self.conn.execute(
                select(r.deleted).where(r.res_type == resource_type, r.res_id == resource_id)
            )
        ).first()
        if row is None:
            return None
        return "deleted" if row.deleted else "live"

    def _stamp(self, body: dict[str, Any], resource_id: str, version: int) -> bytes:
        meta = dict(body.get("meta") or {})
        meta["versionId"] = str(version)
        meta["lastUpdated"] = format_instant(self.now)
        stamped = {"resourceType": body["resourceType"], "id": resource_id}
        stamped.update((k, v) for k, v in body.items() if k not in ("resourceType", "id", "meta"))
        stamped["meta"] = meta
        return orjson.dumps(stamped)

    async def _insert(
        self, resource_type: str, resource_id: str, body: dict[str, Any]
    ) -> StoredResource:
        content = self._stamp(body, resource_id, 1)
        text = content.decode()
        await self.conn.execute(
            _INSERT_RESOURCE,
            {
                "res_type": resource_type,
                "res_id": resource_id,
                "version": 1,
                "last_updated": self.now,
                "deleted": False,
                "content": text,
            },
        )
        await self._append_history(resource_type, resource_id, 1, "POST", text)
        await self._write_index(resource_type, resource_id, body, fresh=True)
        return StoredResource(resource_type, resource_id, 1, self.now, content)

    async def _replace(
        self, resource_type: str, resource_id: str, old_version: int, body: dict[str, Any]
    ) -> StoredResource | None:
        version = old_version + 1
        content = self._stamp(body, resource_id, version)
        text = content.decode()
        done = await self.conn.execute(
            _SET_VERSION,
            {
                **_key(resource_type, resource_id),
                "old": old_version,
                "new_version": version,
                "new_updated": self.now,
                "new_deleted": False,
                "new_content": text,
            },
        )
        if done.rowcount != 1:
            return None
        await self._append_history(resource_type, resource_id, version, "PUT", text)
        await self._write_index(resource_type, resource_id, body, fresh=False)
        return StoredResource(resource_type, resource_id, version, self.now, content)

    async def _append_history(
        self, resource_type: str, resource_id: str, version: int, method: str, text: str | None
    ) -> None:
        await self.conn.execute(
            _INSERT_HISTORY,
            {
                "res_type": resource_type,
                "res_id": resource_id,
                "version": version,
                "last_updated": self.now,
                "method": method,
                "content": text,
            },
        )

    async def _write_index(
        self, resource_type: str, resource_id: str, body: dict[str, Any], *, fresh: bool
    ) -> None:
        if not fresh:
            await self._drop_index(resource_type, resource_id, keep_compartment=False)
        tokens = token_rows(body)
        if tokens:
            await self.conn.execute(
                _INSERT_TOKEN,
                [
                    {
                        "res_type": resource_type,
                        "res_id": resource_id,
                        "param": p,
                        "system": s,
                        "value": v,
                    }
                    for p, s, v in tokens
                ],
            )
        stamped = {**body, "id": resource_id}
        patients = patient_ids_of(stamped, self.repo.base_url)
        if patients:
            await self.conn.execute(
                _INSERT_COMPARTMENT,
                [
                    {"patient_id": p, "res_type": resource_type, "res_id": resource_id}
                    for p in sorted(patients)
                ],
            )

    async def _drop_index(
        self, resource_type: str, resource_id: str, *, keep_compartment: bool
    ) -> None:
        key = _key(resource_type, resource_id)
        await self.conn.execute(_DROP_TOKENS, key)
        if not keep_compartment:
            await self.conn.execute(_DROP_COMPARTMENT, key)


# ---- shared query helpers ---------------------------------------------------------------------

# The read statements are built once: constructing a select costs more than running it.
_r = resource.c
_rc = resource_compartment.c
_READ = select(_r.res_type, _r.res_id, _r.version, _r.last_updated, _r.deleted, _r.content).where(
    _r.res_type == bindparam("rtype"), _r.res_id == bindparam("rid")
)
_READ_IN_COMPARTMENT = _READ.where(
    exists(
        select(1).where(
            _rc.patient_id == bindparam("patient"),
            _rc.res_type == _r.res_type,
            _rc.res_id == _r.res_id,
        )
    )
)


_CURRENT = Prepared(
    select(_r.version, _r.deleted).where(
        _r.res_type == bindparam("rtype"), _r.res_id == bindparam("rid")
    )
)
_SET_VERSION = Prepared(
    update(resource)
    .where(
        _r.res_type == bindparam("rtype"),
        _r.res_id == bindparam("rid"),
        _r.version == bindparam("old"),
    )
    .values(
        version=bindparam("new_version"),
        last_updated=bindparam("new_updated"),
        deleted=bindparam("new_deleted"),
        content=bindparam("new_content", type_=resource.c.content.type),
    )
)
_INSERT_RESOURCE = Prepared(insert(resource))
_INSERT_HISTORY = Prepared(
    insert(resource_history),
    ["res_type", "res_id", "version", "last_updated", "method", "content"],
)
_INSERT_TOKEN = Prepared(insert(spidx_token), ["res_type", "res_id", "param", "system", "value"])
_INSERT_COMPARTMENT = Prepared(insert(resource_compartment))
_DROP_TOKENS = Prepared(
    delete(spidx_token).where(
        spidx_token.c.res_type == bindparam("rtype"), spidx_token.c.res_id == bindparam("rid")
    )
)
_DROP_COMPARTMENT = Prepared(
    delete(resource_compartment).where(
        _rc.res_type == bindparam("rtype"), _rc.res_id == bindparam("rid")
    )
)
_DROP_KEYS_OF = Prepared(
    delete(conditional_key).where(
        conditional_key.c.res_type == bindparam("rtype"),
        conditional_key.c.res_id == bindparam("rid"),
    )
)
_IN_COMPARTMENT = Prepared(
    select(_rc.patient_id).where(
        _rc.patient_id == bindparam("patient"),
        _rc.res_type == bindparam("rtype"),
        _rc.res_id == bindparam("rid"),
    )
)


def _key(resource_type: str, resource_id: str) -> dict[str, str]:
    return {"rtype": resource_type, "rid": resource_id}


_POINT_READ = Prepared(_READ)
_POINT_READ_IN_COMPARTMENT = Prepared(_READ_IN_COMPARTMENT)


async def _read(
    conn: DbConnection, resource_type: str, resource_id: str, patient: str | None
) -> StoredResource:
    params = {"rtype": resource_type, "rid": resource_id}
    if patient:
        row = (await conn.execute(_READ_IN_COMPARTMENT, {**params, "patient": patient})).first()
    else:
        row = (await conn.execute(_READ, params)).first()
    return _current(resource_type, resource_id, tuple(row) if row is not None else None)


def _current(resource_type: str, resource_id: str, row: tuple[Any, ...] | None) -> StoredResource:
    """A row of _READ -> the current version, or 404/410."""
    if row is None:
        raise _not_found(resource_type, resource_id)
    _type, _id, version, last_updated, deleted, content = row
    if deleted:
        raise Gone(f"{resource_type}/{resource_id} was deleted", headers={"ETag": f'W/"{version}"'})
    return StoredResource(
        resource_type,
        resource_id,
        version,
        _aware(last_updated),
        content.encode() if isinstance(content, str) else content,
    )


def _stored(row: Any) -> StoredResource:
    content = row.content
    return StoredResource(
        row.res_type,
        row.res_id,
        row.version,
        _aware(row.last_updated),
        content.encode() if isinstance(content, str) else content,
    )


def _compartment_exists(patient: str, type_col: Any, id_col: Any) -> Any:
    c = resource_compartment.c
    return exists(
        select(1).where(c.patient_id == patient, c.res_type == type_col, c.res_id == id_col)
    )


async def _in_compartment(
    conn: DbConnection, patient: str, resource_type: str, resource_id: str
) -> bool:
    row = await conn.execute(
        _IN_COMPARTMENT, {"patient": patient, **_key(resource_type, resource_id)}
    )
    return row.first() is not None


def _not_found(resource_type: str, resource_id: str) -> NotFound:
    return NotFound(f"{resource_type}/{resource_id} is not known")
