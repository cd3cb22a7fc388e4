"""Statements the repository runs on every request, built once (see app.db.Prepared), and the
small query helpers shared by reads and writes."""

from __future__ import annotations

from functools import cache
from typing import Any

from sqlalchemy import bindparam, delete, exists, insert, select, text, update

from app.db import DbConnection, Prepared, pg_unnest_sql
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
INSERT_TOKEN = Prepared(
    insert(spidx_token), ["res_type", "res_id", "param", "seq", "system", "value"]
)
INSERT_REFERENCE = Prepared(
    insert(spidx_reference),
    ["res_type", "res_id", "param", "seq", "target_type", "target_id", "target_url"],
)
INSERT_DATE = Prepared(insert(spidx_date), ["res_type", "res_id", "param", "seq", "low", "high"])
DROP_DATES = Prepared(
    delete(spidx_date).where(
        spidx_date.c.res_type == bindparam("rtype"), spidx_date.c.res_id == bindparam("rid")
    )
)
INSERT_QUANTITY = Prepared(
    insert(spidx_quantity), ["res_type", "res_id", "param", "seq", "system", "code", "value"]
)
DROP_QUANTITIES = Prepared(
    delete(spidx_quantity).where(
        spidx_quantity.c.res_type == bindparam("rtype"), spidx_quantity.c.res_id == bindparam("rid")
    )
)
INSERT_STRING = Prepared(
    insert(spidx_string),
    ["res_type", "res_id", "param", "seq", "value_normalized", "value_exact"],
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


@cache
def pg_bulk_create(index_statements: tuple[Prepared, ...]) -> Any:
    """New resources, their history rows and their index rows as ONE PostgreSQL statement
    (data-modifying CTEs over arrays): one round trip, all or nothing. The history rows are
    made from the resource rows the first CTE returns, so each body is sent and parsed into
    JSONB once. Parameters: see pg_bulk_create_params."""
    h = resource_history.c
    resource_sql = pg_unnest_sql(INSERT_RESOURCE.statement, INSERT_RESOURCE.pg_param_names, "r")
    parts = [
        f"r AS ({resource_sql} RETURNING res_type, res_id, version, last_updated, content)",
        f'h AS (INSERT INTO "{resource_history.name}" ("{h.res_type.name}", "{h.res_id.name}", '
        f'"{h.version.name}", "{h.last_updated.name}", "{h.method.name}", "{h.content.name}") '
        "SELECT res_type, res_id, version, last_updated, 'POST', content FROM r)",
    ]
    for k, statement in enumerate(index_statements):
        sql = pg_unnest_sql(statement.statement, statement.pg_param_names, f"s{k}c")
        if sql is None:
            raise ValueError("pg_bulk_create takes plain INSERT statements only")
        parts.append(f"w{k} AS ({sql})")
    return text("WITH " + ", ".join(parts) + " SELECT 1")


def pg_bulk_create_params(
    resource_rows: list[dict[str, Any]], index_batches: list[tuple[Prepared, list[dict[str, Any]]]]
) -> dict[str, Any]:
    """The arrays for pg_bulk_create(tuple of the batches' statements)."""
    params = {
        f"r{i}": [row[name] for row in resource_rows]
        for i, name in enumerate(INSERT_RESOURCE.pg_param_names)
    }
    for k, (statement, rows) in enumerate(index_batches):
        for i, name in enumerate(statement.pg_param_names):
            params[f"s{k}c{i}"] = [row[name] for row in rows]
    return params


@cache
def pg_drop_index(keep_compartment: bool) -> Any:
    """The index rows (and unless kept, the compartment rows) of one resource, dropped by one
    PostgreSQL statement (data-modifying CTEs) instead of one per table."""
    tables = [spidx_token, spidx_reference, spidx_string, spidx_date, spidx_quantity]
    if not keep_compartment:
        tables.append(resource_compartment)
    deletes = [
        f'DELETE FROM "{t.name}" WHERE "{t.c.res_type.name}" = :rtype '
        f'AND "{t.c.res_id.name}" = :rid'
        for t in tables
    ]
    ctes = ", ".join(f"d{k} AS ({sql})" for k, sql in enumerate(deletes[:-1]))
    return text(f"WITH {ctes} {deletes[-1]}")


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
