"""Type-level search over the index tables, with keyset paging and included resources.

Implements https://hl7.org/fhir/R4/search.html for the storage side: the criteria compile to
SQL (app.fhir.search.sql), the page is cut by a keyset over (sort values..., id) so links stay
correct while resources are written, and `_include`/`_revinclude` follow the reference index.
The caller's policy is applied to every row that leaves here, included ones too.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, false, func, select, true

from app.errors import Forbidden
from app.fhir.search.query import Cursor, IncludeSpec, SearchQuery
from app.fhir.search.sql import driver_page, keyset_condition, order_by, sort_expression
from app.store import statements as q
from app.store.base import StoredResource, aware
from app.store.tables import resource, spidx_reference

if TYPE_CHECKING:
    from app.store.repository import FhirRepository

__all__ = ["MAX_INCLUDED", "SearchPage", "run_search"]

MAX_INCLUDED = 1000  # included resources per page
MAX_ITERATIONS = 4  # rounds of :iterate


@dataclass(slots=True)
class SearchPage:
    resources: list[StoredResource]
    next_cursor: Cursor | None = None
    prev_cursor: Cursor | None = None
    total: int | None = None
    included: list[StoredResource] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def policy_guard(repo: FhirRepository, permission: str = "s") -> Any:
    """The policy as a SQL condition on any resource (see app.fhir.search.sql.Guard)."""

    def guard(resource_type: str, type_expr: Any, id_expr: Any) -> ColumnElement[bool]:
        try:
            patient = repo.policy.restriction(resource_type, permission)
        except Forbidden:
            return false()
        if patient is None:
            return true()
        if isinstance(type_expr, str):
            return q.compartment_member(patient, type_expr, id_expr)  # type: ignore[no-any-return]
        return q.compartment_exists(patient, type_expr, id_expr)  # type: ignore[no-any-return]

    return guard


async def run_search(repo: FhirRepository, query: SearchQuery) -> SearchPage:
    criteria = query.criteria
    patient = repo.policy.restriction(criteria.resource_type, "s")
    r = resource.c
    guard = policy_guard(repo)
    base: list[Any] = [r.res_type == criteria.resource_type, r.deleted.is_(False)]

    def matching() -> list[Any]:
        """Every criterion as a condition on `resource` (built only when needed: building a
        statement costs about as much as running it)."""
        conds = [*base, criteria.where(guard, driven=patient is not None)]
        if patient:
            conds.append(q.compartment_member(patient, criteria.resource_type, r.res_id))
        return conds

    total = None
    if query.total != "none" or query.count == 0:
        async with repo.db.read() as conn:
            counted = select(func.count()).select_from(resource).where(*matching())
            total = int(await conn.scalar(counted) or 0)
    if query.count == 0:
        return SearchPage([], total=total)
    exprs = [sort_expression(k) for k in query.sort]
    cursor = query.cursor
    backwards = cursor is not None and cursor.direction == "prev"
    labels = [e.label(f"k{i}") for i, e in enumerate(exprs)]
    page_ids = None
    if patient is None and not query.sort:  # in id order: the driver can cut the page itself
        bound = cursor.last_id if cursor is not None else None
        page_ids = driver_page(
            criteria,
            guard,
            limit=query.count + 1,
            after=None if backwards else bound,
            before=bound if backwards else None,
        )
    if page_ids is not None:
        conds = [*base, r.res_id.in_(page_ids)]
    else:
        conds = matching()
        if cursor is not None:
            conds.append(
                keyset_condition(
                    query.sort, exprs, cursor.values, cursor.last_id, after=not backwards
                )
            )
    statement = (
        select(r.res_type, r.res_id, r.version, r.last_updated, r.content, *labels)
        .where(*conds)
        .order_by(*order_by(query.sort, exprs, reverse=backwards))
        .limit(query.count + 1)
    )
    async with repo.db.read() as conn:
        rows = (await conn.execute(statement)).all()
    more = len(rows) > query.count
    rows = rows[: query.count]
    if backwards:
        rows.reverse()
    page = SearchPage([q.stored_row(row) for row in rows], total=total)
    if rows:
        first, last = rows[0], rows[-1]
        if more or backwards:
            page.next_cursor = Cursor("next", _sort_values(last, exprs), last.res_id)
        if cursor is not None and (more or not backwards):
            page.prev_cursor = Cursor("prev", _sort_values(first, exprs), first.res_id)
    if query.includes and page.resources:
        page.included, page.notes = await _included(repo, page.resources, query.includes)
    return page


def _sort_values(row: Any, exprs: list[Any]) -> tuple[Any, ...]:
    values = []
    for i in range(len(exprs)):
        value = row._mapping[f"k{i}"]
        values.append(aware(value) if hasattr(value, "tzinfo") else value)
    return tuple(values)


async def _included(
    repo: FhirRepository, matches: list[StoredResource], specs: Iterable[IncludeSpec]
) -> tuple[list[StoredResource], list[str]]:
    """Follow `_include` and `_revinclude` from the matches; `:iterate` ones also from what
    they bring in, for a few rounds. Each resource appears once, matches first."""
    specs = tuple(specs)
    seen = {(s.resource_type, s.id) for s in matches}
    frontier = list(seen)
    included: list[StoredResource] = []
    notes: list[str] = []
    for round_no in range(MAX_ITERATIONS):
        active = [s for s in specs if s.iterate or round_no == 0]
        if not active or not frontier:
            break
        keys: list[tuple[str, str]] = []
        async with repo.db.read() as conn:
            for spec in active:
                keys += await _follow(conn, spec, frontier)
        fresh = [k for k in dict.fromkeys(keys) if k not in seen]
        if len(included) + len(fresh) > MAX_INCLUDED:
            fresh = fresh[: MAX_INCLUDED - len(included)]
            notes.append(
                f"included resources were capped at {MAX_INCLUDED} for this page; "
                "ask for smaller pages to get all of them"
            )
        seen.update(fresh)
        loaded = await _load_visible(repo, fresh)
        included += loaded
        frontier = [(s.resource_type, s.id) for s in loaded]
        if notes:
            break
    return included, notes


async def _follow(conn: Any, spec: IncludeSpec, frontier: list[tuple[str, str]]) -> list[Any]:
    ref = spidx_reference.c
    out: list[tuple[str, str]] = []
    by_type: dict[str, list[str]] = {}
    for rtype, rid in frontier:
        by_type.setdefault(rtype, []).append(rid)
    for rtype, ids in by_type.items():
        for chunk in _chunks(ids, 500):
            if spec.reverse:
                if spec.target is not None and spec.target != rtype:
                    continue
                statement = select(ref.res_type, ref.res_id).where(
                    ref.res_type == spec.source,
                    ref.param == spec.param,
                    ref.target_type == rtype,
                    ref.target_id.in_(chunk),
                )
            else:
                if spec.source != rtype:
                    continue
                conds = [ref.res_type == rtype, ref.res_id.in_(chunk), ref.target_id.is_not(None)]
                if spec.param is not None:
                    conds.append(ref.param == spec.param)
                if spec.target is not None:
                    conds.append(ref.target_type == spec.target)
                statement = select(ref.target_type, ref.target_id).where(*conds)
            out += [(row[0], row[1]) for row in await conn.execute(statement)]
    return out


async def _load_visible(repo: FhirRepository, keys: list[tuple[str, str]]) -> list[StoredResource]:
    """The live resources among `keys` that the policy lets the caller read."""
    r = resource.c
    guard = policy_guard(repo, "r")
    by_type: dict[str, list[str]] = {}
    for rtype, rid in keys:
        by_type.setdefault(rtype, []).append(rid)
    found: dict[tuple[str, str], StoredResource] = {}
    async with repo.db.read() as conn:
        for rtype, ids in by_type.items():
            for chunk in _chunks(ids, 500):
                statement = select(
                    r.res_type, r.res_id, r.version, r.last_updated, r.content
                ).where(
                    r.res_type == rtype,
                    r.res_id.in_(chunk),
                    r.deleted.is_(False),
                    guard(rtype, r.res_type, r.res_id),
                )
                for row in await conn.execute(statement):
                    found[(row.res_type, row.res_id)] = q.stored_row(row)
    return [found[k] for k in keys if k in found]


def _chunks(items: list[str], size: int) -> Iterable[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
