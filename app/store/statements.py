"""Statements the repository runs on every request, built once (see app.db.Prepared), and the
small query helpers shared by reads and writes."""

from __future__ import annotations

from typing import Any

from sqlalchemy import bindparam, delete, exists, insert, select, text, update

from app.db import DbConnection, Prepared
from app.errors import Gone, NotFound
from app.store.base import StoredResource, aware
from app.store.tables import (
    conditional_key,
    resource,
    resource_compartment,
    resource_history,
    spidx_date,
    spidx_quantity,
    spidx_reference,
    spidx_string,
    spidx_token,
)

# The read statements are built once: constructing a select costs more than running it.
_r = resource.c
_rc = resource_compartment.c
READ = select(_r.res_type, _r.res_id, _r.version, _r.last_updated, _r.deleted, _r.content).where(
    _r.res_type == bindparam("rtype"), _r.res_id == bindparam("rid")
)
STATE = Prepared(
    select(_r.deleted).where(_r.res_type == bindparam("rtype"), _r.res_id == bindparam("rid"))
)
READ_IN_COMPARTMENT = READ.where(
    exists(
        select(1).where(
            _rc.patient_id == bindparam("patient"),
            _rc.res_type == _r.res_type,
            _rc.res_id == _r.res_id,
        )
    )
)


CURRENT = Prepared(
    select(_r.version, _r.deleted).where(
        _r.res_type == bindparam("rtype"), _r.res_id == bindparam("rid")
    )
)
SET_VERSION = Prepared(
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
INSERT_RESOURCE = Prepared(insert(resource))
INSERT_HISTORY = Prepared(
    insert(resource_history),
    ["res_type", "res_id", "version", "last_updated", "method", "content"],
)
INSERT_TOKEN = Prepared(insert(spidx_token), ["res_type", "res_id", "param", "system", "value"])
INSERT_REFERENCE = Prepared(
    insert(spidx_reference),
    ["res_type", "res_id", "param", "target_type", "target_id", "target_url"],
)
INSERT_DATE = Prepared(insert(spidx_date), ["res_type", "res_id", "param", "low", "high"])
DROP_DATES = Prepared(
    delete(spidx_date).where(
        spidx_date.c.res_type == bindparam("rtype"), spidx_date.c.res_id == bindparam("rid")
    )
)
INSERT_QUANTITY = Prepared(
    insert(spidx_quantity), ["res_type", "res_id", "param", "system", "code", "value"]
)
DROP_QUANTITIES = Prepared(
    delete(spidx_quantity).where(
        spidx_quantity.c.res_type == bindparam("rtype"), spidx_quantity.c.res_id == bindparam("rid")
    )
)
INSERT_STRING = Prepared(
    insert(spidx_string), ["res_type", "res_id", "param", "value_normalized", "value_exact"]
)
DROP_STRINGS = Prepared(
    delete(spidx_string).where(
        spidx_string.c.res_type == bindparam("rtype"), spidx_string.c.res_id == bindparam("rid")
    )
)
DROP_REFERENCES = Prepared(
    delete(spidx_reference).where(
        spidx_reference.c.res_type == bindparam("rtype"),
        spidx_reference.c.res_id == bindparam("rid"),
    )
)
INSERT_COMPARTMENT = Prepared(insert(resource_compartment))
DROP_TOKENS = Prepared(
    delete(spidx_token).where(
        spidx_token.c.res_type == bindparam("rtype"), spidx_token.c.res_id == bindparam("rid")
    )
)
DROP_COMPARTMENT = Prepared(
    delete(resource_compartment).where(
        _rc.res_type == bindparam("rtype"), _rc.res_id == bindparam("rid")
    )
)
DROP_KEYS_OF = Prepared(
    delete(conditional_key).where(
        conditional_key.c.res_type == bindparam("rtype"),
        conditional_key.c.res_id == bindparam("rid"),
    )
)
IN_COMPARTMENT = Prepared(
    select(_rc.patient_id).where(
        _rc.patient_id == bindparam("patient"),
        _rc.res_type == bindparam("rtype"),
        _rc.res_id == bindparam("rid"),
    )
)


def _drop_all(*tables: Any) -> Any:
    """One PostgreSQL statement deleting a resource's rows from each table (data-modifying
    WITH clauses all run, read or not: https://www.postgresql.org/docs/current/queries-with.html#QUERIES-WITH-MODIFYING)."""
    clauses = ", ".join(
        f'd{n} AS (DELETE FROM "{t.name}" WHERE res_type = :rtype AND res_id = :rid)'
        for n, t in enumerate(tables)
    )
    return text(f"WITH {clauses} SELECT 1")


_INDEX_TABLES = (spidx_token, spidx_reference, spidx_string, spidx_date, spidx_quantity)
# PostgreSQL: a resource's index rows (and compartment rows) in one round trip instead of six
PG_DROP_INDEX = _drop_all(*_INDEX_TABLES, resource_compartment)
PG_DROP_INDEX_KEEP_COMPARTMENT = _drop_all(*_INDEX_TABLES)


def key(resource_type: str, resource_id: str) -> dict[str, str]:
    return {"rtype": resource_type, "rid": resource_id}


POINT_READ = Prepared(READ)
POINT_READ_IN_COMPARTMENT = Prepared(READ_IN_COMPARTMENT)


async def read_current(
    conn: DbConnection, resource_type: str, resource_id: str, patient: str | None
) -> StoredResource:
    params = {"rtype": resource_type, "rid": resource_id}
    if patient:
        found = await conn.execute(POINT_READ_IN_COMPARTMENT, {**params, "patient": patient})
        row = found.first()
    else:
        row = (await conn.execute(POINT_READ, params)).first()
    return current_row(resource_type, resource_id, tuple(row) if row is not None else None)


def current_row(
    resource_type: str, resource_id: str, row: tuple[Any, ...] | None
) -> StoredResource:
    """A row of READ -> the current version, or 404/410."""
    if row is None:
        raise not_found(resource_type, resource_id)
    _type, _id, version, last_updated, deleted, content = row
    if deleted:
        raise Gone(f"{resource_type}/{resource_id} was deleted", headers={"ETag": f'W/"{version}"'})
    return StoredResource(
        resource_type,
        resource_id,
        version,
        aware(last_updated),
        content.encode() if isinstance(content, str) else content,
    )


def stored_row(row: Any) -> StoredResource:
    content = row.content
    return StoredResource(
        row.res_type,
        row.res_id,
        row.version,
        aware(row.last_updated),
        content.encode() if isinstance(content, str) else content,
    )


def compartment_member(patient: str, resource_type: str, id_col: Any) -> Any:
    """`id_col` is the id of a `resource_type` in the patient's compartment, as an
    uncorrelated IN over the compartment table's primary key (it can drive a search)."""
    c = resource_compartment.c
    members = select(c.res_id).where(c.patient_id == patient, c.res_type == resource_type)
    return id_col.in_(members)


def compartment_exists(patient: str, type_col: Any, id_col: Any) -> Any:
    c = resource_compartment.c
    return exists(
        select(1).where(c.patient_id == patient, c.res_type == type_col, c.res_id == id_col)
    )


async def in_compartment(
    conn: DbConnection, patient: str, resource_type: str, resource_id: str
) -> bool:
    row = await conn.execute(
        IN_COMPARTMENT, {"patient": patient, **key(resource_type, resource_id)}
    )
    return row.first() is not None


def not_found(resource_type: str, resource_id: str) -> NotFound:
    return NotFound(f"{resource_type}/{resource_id} is not known")
