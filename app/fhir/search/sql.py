"""Search criteria compiled to SQL over the typed index tables.

Every indexed parameter compiles to one shape: EXISTS an index row of that parameter for the
resource in question, meeting the value's condition (https://hl7.org/fhir/R4/search.html). The
resource in question is an `Owner`: the outer `resource` row for a plain search, the target of
a reference for a chain, the referring resource for `_has`. Chains and `_has` look at other
resources, so the caller's access policy comes in as a `Guard`: a chain through a resource the
caller may not see matches nothing, exactly as if that resource did not exist.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    and_,
    exists,
    false,
    func,
    literal,
    not_,
    or_,
    select,
    true,
)

from app.fhir.search.criteria import (
    CompositeValue,
    Criteria,
    Criterion,
    DateValue,
    NumberValue,
    RefValue,
    StringValue,
    TokenValue,
    Value,
)
from app.fhir.search.extract import normalize
from app.fhir.search.query import SortKey
from app.store.tables import (
    resource,
    spidx_date,
    spidx_quantity,
    spidx_reference,
    spidx_string,
    spidx_token,
)

__all__ = [
    "INDEX_TABLES",
    "Guard",
    "Owner",
    "criteria_condition",
    "criterion_condition",
    "driver_page",
    "keyset_condition",
    "order_by",
    "sort_expression",
]

INDEX_TABLES = {
    "token": spidx_token,
    "uri": spidx_token,
    "reference": spidx_reference,
    "string": spidx_string,
    "date": spidx_date,
    "quantity": spidx_quantity,
    "number": spidx_quantity,
}

# (resource type, type column or literal, id column) -> the policy's condition on that resource
Guard = Callable[[str, Any, Any], ColumnElement[bool]]


def _open(_type: str, _type_col: Any, _id_col: Any) -> ColumnElement[bool]:
    return true()


@dataclass(frozen=True, slots=True)
class Owner:
    """The resource a condition is about: its type (a column, or a literal type name) and id."""

    type: Any
    id: Any


def criteria_condition(
    criteria: Criteria, guard: Guard | None = None, *, driven: bool = False
) -> ColumnElement[bool]:
    """AND of the criteria on `resource`. The likeliest-selective criterion becomes the
    driver: an uncorrelated `res_id IN (ids from its index)` that both databases run once
    and look the resources up from; the others become probes, correlated EXISTS checks on
    each candidate through the index tables' (type, id) index. `driven`: the caller already
    drives the search (a compartment), so every criterion is a probe."""
    owner = Owner(criteria.resource_type, resource.c.res_id)
    guard = guard or _open
    driver = None if driven else _driver(criteria)
    return and_(
        true(),
        *(
            criterion_condition(c, owner, guard, probe=i != driver)
            for i, c in enumerate(criteria.criteria)
        ),
    )


_NEVER_DRIVES = 9


def _driver(criteria: Criteria) -> int | None:
    """The index of the criterion that drives the search: the likeliest-selective one."""
    ranked = sorted(range(len(criteria.criteria)), key=lambda i: _rank(criteria.criteria[i]))
    if not ranked or _rank(criteria.criteria[ranked[0]]) >= _NEVER_DRIVES:
        return None
    return ranked[0]


def driver_page(
    criteria: Criteria,
    guard: Guard | None = None,
    *,
    limit: int,
    after: str | None = None,
    before: str | None = None,
) -> Any:
    """One page of ids in id order, read from the driving criterion's index table, or None
    when no criterion can drive this way (no driver, `_id`, a composite).

    `SELECT id FROM <driver's index rows> WHERE <the driver's condition> AND <every other
    criterion, checked on that id> GROUP BY id ORDER BY id LIMIT n`. Where the driver's index
    is ordered by id once its leading columns are fixed (a token or reference value, `_has`
    through its reference index), both databases read it in order and stop at the page; a
    range (a string prefix, a date) is sorted first, which costs what the id list did. The
    plain plan, `id IN (every id the driver yields)`, builds the whole list first: at a
    million resources that was tens of thousands of ids (and, for `_has`, a lookup each) to
    cut a page of 20, and on PostgreSQL a walk over the type's rows to merge with it. Index
    rows exist for live resources only (a delete drops them), so no row of the page is a
    deleted resource. `after`/`before`: keyset bounds (before: the page ends there, read
    backwards)."""
    driver = _driver(criteria)
    if driver is None:
        return None
    lead = criteria.criteria[driver]
    if lead.param == "_id" or lead.kind == "composite":
        return None
    guard = guard or _open
    owner = Owner(criteria.resource_type, resource.c.res_id)
    if lead.kind == "has":  # the nested criteria checked per referring resource, in order
        condition = _has(lead, owner, guard, probe=False, nested_probe=True)
    else:
        condition = criterion_condition(lead, owner, guard)
    inner = getattr(getattr(condition, "right", None), "element", None)
    if not isinstance(inner, Select):
        return None
    id_col = inner.selected_columns[0]
    on_id = Owner(criteria.resource_type, id_col)
    page = inner.where(
        *(
            criterion_condition(c, on_id, guard, probe=True)
            for n, c in enumerate(criteria.criteria)
            if n != driver
        )
    )
    if after is not None:
        page = page.where(id_col > after)
    if before is not None:
        page = page.where(id_col < before)
    ordered = id_col.desc() if before is not None else id_col.asc()
    return page.group_by(id_col).order_by(ordered).limit(limit)


def _rank(criterion: Criterion) -> int:
    """A guess at selectivity (lower: fewer matches), from the kind of criterion alone."""
    if criterion.modifier in ("missing", "not"):
        return _NEVER_DRIVES
    if criterion.param == "_id":
        return 0
    if criterion.kind == "date" and _within_a_day(criterion):
        return 3  # `birthdate=1970-01-01`: a day of dates is few rows, fewer than a name's
    return {
        "reference": 1,
        "token": 2,
        "uri": 2,
        "chain": 3,
        "has": 3,
        "string": 4,
        "composite": 4,
        "date": 6,
        "quantity": 6,
        "number": 6,
    }.get(criterion.kind, 5)


def _within_a_day(criterion: Criterion) -> bool:
    """Every value is an equality (`eq`, the default) covering a day or less."""
    return bool(criterion.values) and all(
        isinstance(v, DateValue) and v.prefix == "eq" and v.high - v.low <= timedelta(days=1)
        for v in criterion.values
    )


def criterion_condition(
    criterion: Criterion, owner: Owner, guard: Guard, *, probe: bool = False
) -> ColumnElement[bool]:
    if criterion.kind == "chain":
        return _chain(criterion, owner, guard, probe)
    if criterion.kind == "has":
        return _has(criterion, owner, guard, probe)
    if criterion.param == "_id":
        ids = [v.code for v in criterion.values if isinstance(v, TokenValue) and v.code]
        return owner.id.in_(ids) if ids else false()  # type: ignore[no-any-return]
    if criterion.modifier == "missing":
        missing = criterion.values[0]
        wanted = isinstance(missing, TokenValue) and missing.code == "true"
        return _indexed(criterion, owner, negate=wanted, probe=probe)
    if criterion.kind == "composite":
        return or_(*(_composite(criterion, v, owner, probe) for v in criterion.values))
    table = INDEX_TABLES[criterion.kind].alias()
    condition = or_(*(_value(table.c, v) for v in criterion.values))
    negate = criterion.modifier == "not"
    return _indexed(criterion, owner, condition, table, negate=negate, probe=probe)


def _indexed(
    criterion: Criterion,
    owner: Owner,
    condition: ColumnElement[bool] | None = None,
    table: Any = None,
    param: str | None = None,
    *,
    negate: bool = False,
    probe: bool = False,
) -> ColumnElement[bool]:
    """The owner has (or, `negate`d, has not) an index row of the parameter meeting
    `condition`: as a driver, its id is IN the ids the index gives (uncorrelated, run once);
    as a probe, EXISTS such a row among the owner's own rows."""
    if table is None:
        table = INDEX_TABLES[criterion.kind].alias()
    col = table.c
    conds = [col.res_type == owner.type, col.param == (param or criterion.param)]
    if condition is not None:
        conds.append(condition)
    if probe:
        found = exists(select(1).where(col.res_id == owner.id, *conds))
        return ~found if negate else found
    ids = select(col.res_id).where(*conds)
    return owner.id.not_in(ids) if negate else owner.id.in_(ids)  # type: ignore[no-any-return]


def _composite(
    criterion: Criterion, value: Value, owner: Owner, probe: bool
) -> ColumnElement[bool]:
    """A composite over the resource itself: every component matches on that resource."""
    assert isinstance(value, CompositeValue)
    conds = []
    for n, (component, part) in enumerate(value.parts):
        table = INDEX_TABLES[_kind_of(part)].alias()
        condition = _value(table.c, part)
        # the first component may drive; the rest check the resources it yields
        conds.append(_indexed(criterion, owner, condition, table, component, probe=probe or n > 0))
    return and_(*conds)


def _kind_of(value: Value) -> str:
    match value:
        case TokenValue():
            return "token"
        case StringValue():
            return "string"
        case DateValue():
            return "date"
        case NumberValue():
            return "quantity"
        case RefValue():
            return "reference"
    raise TypeError(value)


def _value(col: Any, value: Value) -> ColumnElement[bool]:
    match value:
        case TokenValue():
            return _token(col, value)
        case StringValue():
            return _string(col, value)
        case DateValue():
            return _date(col, value)
        case NumberValue():
            return _number(col, value)
        case RefValue():
            return _reference(col, value)
    raise TypeError(value)


def _token(col: Any, v: TokenValue) -> ColumnElement[bool]:
    conds = []
    if v.code is not None:
        conds.append(col.value == v.code)
    if v.system == "":
        conds.append(col.system.is_(None))
    elif v.system is not None:
        conds.append(col.system == v.system)
    return and_(true(), *conds)


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _string(col: Any, v: StringValue) -> ColumnElement[bool]:
    match v.modifier:
        case "exact":
            return col.value_exact == v.text  # type: ignore[no-any-return]
        case "contains":
            return col.value_normalized.like(  # type: ignore[no-any-return]
                f"%{_like_escape(normalize(v.text))}%", escape="\\"
            )
        case "below":  # uri: the value and everything under it (token table, no system)
            return col.value.like(f"{_like_escape(v.text)}%", escape="\\")  # type: ignore[no-any-return]
        case "above":  # uri: the value and every uri it lies under
            stored_length = func.length(col.value)
            return func.substr(literal(v.text), 1, stored_length) == col.value  # type: ignore[no-any-return]
    return _prefix(col.value_normalized, normalize(v.text))


def _prefix(column: Any, prefix: str) -> ColumnElement[bool]:
    """Starts with `prefix`, as the index range [prefix, prefix with its last character
    incremented): the columns compare by code point on both backends (see tables.py)."""
    last = ord(prefix[-1]) if prefix else 0
    if not prefix or last >= 0x10FFFF or 0xD7FF <= last < 0xE000:
        return column.like(f"{_like_escape(prefix)}%", escape="\\")  # type: ignore[no-any-return]
    upper = prefix[:-1] + chr(last + 1)
    return and_(column >= prefix, column < upper)


def _reference(col: Any, v: RefValue) -> ColumnElement[bool]:
    if v.url is not None:
        return col.target_url == v.url  # type: ignore[no-any-return]
    if v.type is not None:
        return and_(col.target_id == v.id, col.target_type == v.type)
    return col.target_id == v.id  # type: ignore[no-any-return]


def _date(col: Any, v: DateValue) -> ColumnElement[bool]:
    """https://hl7.org/fhir/R4/search.html#prefix, over half-open ranges [low, high)."""
    # `low < v.high` follows from the other two (every range has low < high), but it bounds
    # the scan of the (param, low, high) index to the value's own span
    within = and_(col.low >= v.low, col.low < v.high, col.high <= v.high)
    match v.prefix:
        case "eq":
            return within
        case "ne":
            return not_(within)
        case "gt":
            return col.high > v.high  # type: ignore[no-any-return]
        case "lt":
            return col.low < v.low  # type: ignore[no-any-return]
        case "ge":
            return or_(col.high > v.high, within)
        case "le":
            return or_(col.low < v.low, within)
        case "sa":
            return col.low >= v.high  # type: ignore[no-any-return]
        case "eb":
            return col.high <= v.low  # type: ignore[no-any-return]
    # ap: overlaps the value widened by 10% of its distance from now (at least a day)
    now = datetime.now(UTC)
    slack = max(abs(now - v.low) / 10, timedelta(days=1))
    return and_(col.low < v.high + slack, col.high > v.low - slack)


def _number(col: Any, v: NumberValue) -> ColumnElement[bool]:
    """https://hl7.org/fhir/R4/search.html#number: `eq` and `ne` honour the precision of the
    value as written; the unit must match when the value names one (by code, or by system
    and code), compared without unit conversion."""
    match v.prefix:
        case "eq":
            cond = and_(col.value >= v.low, col.value < v.high)
        case "ne":
            cond = or_(col.value < v.low, col.value >= v.high)
        case "gt" | "sa":
            cond = col.value > v.value
        case "lt" | "eb":
            cond = col.value < v.value
        case "ge":
            cond = col.value >= v.value
        case "le":
            cond = col.value <= v.value
        case _:  # ap: within 10% of the value
            slack = abs(v.value) / 10 + (v.high - v.low) / 2
            cond = and_(col.value >= v.value - slack, col.value <= v.value + slack)
    if v.code is not None:
        cond = and_(cond, col.code == v.code)
    if v.system is not None:
        cond = and_(cond, col.system == v.system)
    return cond  # type: ignore[no-any-return]


def _chain(criterion: Criterion, owner: Owner, guard: Guard, probe: bool) -> ColumnElement[bool]:
    """The owner references (through `param`) a resource meeting the nested condition."""
    ref = spidx_reference.alias()
    alternatives = []
    for target, inner in criterion.nested:
        target_owner = Owner(target, ref.c.target_id)
        alternatives.append(
            and_(
                ref.c.target_type == target,
                criterion_condition(inner, target_owner, guard),
                guard(target, target, ref.c.target_id),
            )
        )
    conds = [ref.c.res_type == owner.type, ref.c.param == criterion.param, or_(*alternatives)]
    if probe:
        return exists(select(1).where(ref.c.res_id == owner.id, *conds))
    return owner.id.in_(select(ref.c.res_id).where(*conds))  # type: ignore[no-any-return]


def _has(
    criterion: Criterion,
    owner: Owner,
    guard: Guard,
    probe: bool,
    *,
    nested_probe: bool | None = None,
) -> ColumnElement[bool]:
    """A resource of the nested type references the owner through `via` and meets the nested
    condition. The nested condition is checked per referring resource (correlated) when this
    is a probe, or when `nested_probe` says so; otherwise it is a list of its own."""
    ((source, inner),) = criterion.nested
    ref = spidx_reference.alias()
    source_owner = Owner(source, ref.c.res_id)
    conds = [
        ref.c.res_type == source,
        ref.c.param == criterion.via,
        ref.c.target_type == owner.type,
        # as a probe, the referring resources of one candidate are few: check each of them
        # (correlated) rather than list every resource the nested criteria match
        criterion_condition(
            inner, source_owner, guard, probe=probe if nested_probe is None else nested_probe
        ),
        guard(source, source, ref.c.res_id),
    ]
    if probe:
        return exists(select(1).where(ref.c.target_id == owner.id, *conds))
    return owner.id.in_(select(ref.c.target_id).where(*conds))  # type: ignore[no-any-return]


# ---- sorting and keyset paging ----------------------------------------------------------------

_SORT_COLUMN = {
    "string": "value_normalized",
    "token": "value",
    "uri": "value",
    "number": "value",
    "quantity": "value",
    "reference": "target_id",
}


def sort_expression(key: SortKey) -> Any:
    """The value a resource sorts by (https://hl7.org/fhir/R4/search.html#sort): for a
    repeating element the lowest value ascending and the highest descending; a resource
    without a value sorts last either way."""
    r = resource.c
    if key.param == "_id":
        return r.res_id
    if key.param == "_lastUpdated":
        return r.last_updated
    table = INDEX_TABLES[key.kind].alias()
    if key.kind == "date":
        column = table.c.high if key.descending else table.c.low
    else:
        column = table.c[_SORT_COLUMN[key.kind]]
    aggregate = func.max(column) if key.descending else func.min(column)
    return (
        select(aggregate)
        .where(
            table.c.res_type == r.res_type,
            table.c.res_id == r.res_id,
            table.c.param == key.param,
        )
        .scalar_subquery()
    )


def order_by(keys: tuple[SortKey, ...], exprs: list[Any], *, reverse: bool) -> list[Any]:
    """ORDER BY for the sort keys (nulls last), then the id; all flipped for a `prev` page."""
    out = []
    for key, expr in zip(keys, exprs, strict=True):
        descending = key.descending != reverse
        ordered = expr.desc() if descending else expr.asc()
        out.append(ordered.nulls_first() if reverse else ordered.nulls_last())
    out.append(resource.c.res_id.desc() if reverse else resource.c.res_id.asc())
    return out


def keyset_condition(
    keys: tuple[SortKey, ...],
    exprs: list[Any],
    values: tuple[Any, ...],
    last_id: str,
    *,
    after: bool,
) -> ColumnElement[bool]:
    """Rows strictly after (or before) the boundary row in the sort order, nulls last:
    the lexicographic comparison over (keys..., id), built from the innermost key out."""
    r = resource.c
    cond: ColumnElement[bool] = r.res_id > last_id if after else r.res_id < last_id
    for key, expr, value in reversed(list(zip(keys, exprs, values, strict=True))):
        if value is None:
            strict = false() if after else expr.is_not(None)
            equal = expr.is_(None)
        else:
            forward = (expr < value) if key.descending else (expr > value)
            backward = (expr > value) if key.descending else (expr < value)
            strict = or_(forward, expr.is_(None)) if after else backward
            equal = expr == value
        cond = or_(strict, and_(equal, cond))
    return cond
