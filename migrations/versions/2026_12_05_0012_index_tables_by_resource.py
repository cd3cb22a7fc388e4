"""Index tables keyed by their resource: (res_type, res_id, param, seq) instead of a row id.

Each index row used to cost three b-trees: on SQLite the rowid table, the (type, id, param)
index and the value index; on PostgreSQL the row-id key (and its sequence), the (type, id,
param) index and the value index, beside the heap. Keyed by (type, id, param, seq), where seq
numbers a resource's rows within the table, the key does the (type, id, param) index's work,
and on SQLite the tables are WITHOUT ROWID so the rows live in the key's b-tree: two b-trees
per row. Replaying exactly the rows our write paths store (bench/floor_bench.py, back to back
with the previous schema) took 14-29% less CPU on SQLite (REST creates one commit each, HL7
messages in groups of 8, APCD lines in batches of 2,000) and 21-24% less PostgreSQL server
CPU for HL7 and APCD batches; docs/benchmarks.md, "Storage floors", has the figures.

Each table is rebuilt: the new one is created beside it, filled with the old rows (seq from
their row ids' order within each resource), the old one dropped, the new one renamed and its
value indexes built. Dropping a table also drops its planner statistics, so the ones 0009
seeded are seeded again, those of the (type, id, param) indexes on the keys that replace them.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_binary = sa.Text().with_variant(sa.Text(collation="C"), "postgresql")
_KEY = ("res_type", "res_id", "param")

# table -> (its value columns as (name, type, nullable), its value indexes as (name, columns))
_TABLES: dict[str, tuple[list[tuple[str, Any, bool]], list[tuple[str, list[str]]]]] = {
    "spidx_token": (
        [("system", sa.Text(), True), ("value", sa.Text(), True)],
        [
            (
                "ix_spidx_token_res_type_param_value_res_id_system",
                ["res_type", "param", "value", "res_id", "system"],
            )
        ],
    ),
    "spidx_date": (
        [
            ("low", sa.DateTime(timezone=True), False),
            ("high", sa.DateTime(timezone=True), False),
        ],
        [("ix_spidx_date_res_type_param_low_high", ["res_type", "param", "low", "high"])],
    ),
    "spidx_quantity": (
        [
            ("system", sa.Text(), True),
            ("code", sa.Text(), True),
            ("value", sa.Double(), False),
        ],
        [("ix_spidx_quantity_res_type_param_code_value", ["res_type", "param", "code", "value"])],
    ),
    "spidx_string": (
        [
            ("value_normalized", _binary, False),
            ("value_exact", sa.Text(), False),
        ],
        [
            (
                "ix_spidx_string_res_type_param_value_normalized",
                ["res_type", "param", "value_normalized"],
            )
        ],
    ),
    "spidx_reference": (
        [
            ("target_type", sa.String(64), True),
            ("target_id", sa.String(64), True),
            ("target_url", sa.Text(), True),
        ],
        [
            (
                "ix_spidx_reference_res_type_param_target_id_res_id_target_type",
                ["res_type", "param", "target_id", "res_id", "target_type"],
            ),
            ("ix_spidx_reference_target_type_target_id", ["target_type", "target_id"]),
        ],
    ),
}

# 0009's planner statistics for these tables. Dropping a table drops its rows of sqlite_stat1,
# so each rebuild seeds them again: the value indexes' as they were, the (type, id, param)
# index's on the key that replaces it (one more column: seq, one row each).
_VALUE_STATS = [
    ("spidx_date", "ix_spidx_date_res_type_param_low_high", "2000000 220000 130000 6 6"),
    (
        "spidx_quantity",
        "ix_spidx_quantity_res_type_param_code_value",
        "1600000 1600000 800000 90000 6",
    ),
    (
        "spidx_reference",
        "ix_spidx_reference_res_type_param_target_id_res_id_target_type",
        "4000000 570000 180000 13 1 1",
    ),
    ("spidx_reference", "ix_spidx_reference_target_type_target_id", "4000000 800000 38"),
    ("spidx_string", "ix_spidx_string_res_type_param_value_normalized", "1900000 230000 90000 16"),
    (
        "spidx_token",
        "ix_spidx_token_res_type_param_value_res_id_system",
        "3700000 600000 230000 313 1 1",
    ),
]
_RESOURCE_SIDE_STATS = {
    "spidx_date": "2000000 220000 2 1",
    "spidx_quantity": "1600000 1600000 2 1",
    "spidx_reference": "4000000 570000 5 1",
    "spidx_string": "1900000 230000 3 1",
    "spidx_token": "3700000 600000 4 1",
}


def _key_columns(*, seq: bool) -> list[sa.Column]:
    columns = [sa.Column(name, sa.String(64), nullable=False) for name in _KEY]
    if seq:
        columns.append(sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False))
    return columns


def _value_columns(table: str) -> list[sa.Column]:
    return [sa.Column(name, kind, nullable=null) for name, kind, null in _TABLES[table][0]]


def _rebuild(table: str, *, keyed: bool) -> None:
    """Create the new shape of `table` beside it, copy the rows, swap; then its indexes."""
    sqlite = op.get_bind().dialect.name == "sqlite"
    value_indexes = _TABLES[table][1]
    names = [name for name, _kind, _null in _TABLES[table][0]]
    new = f"{table}_new"
    # on PostgreSQL a constraint's name is unique in the schema while both tables exist
    pk_name = f"pk_{table}" if sqlite else f"pk_{new}"
    if keyed:
        op.create_table(
            new,
            *_key_columns(seq=True),
            *_value_columns(table),
            sa.PrimaryKeyConstraint(*_KEY, "seq", name=pk_name),
            sqlite_with_rowid=False,
        )
        op.execute(
            f"INSERT INTO {new} ({', '.join((*_KEY, 'seq', *names))}) "
            f"SELECT {', '.join(_KEY)}, "
            "ROW_NUMBER() OVER (PARTITION BY res_type, res_id ORDER BY row_id) - 1, "
            f"{', '.join(names)} FROM {table}"
        )
    else:
        op.create_table(
            new,
            sa.Column("row_id", _id, autoincrement=True, nullable=False),
            *_key_columns(seq=False),
            *_value_columns(table),
            sa.PrimaryKeyConstraint("row_id", name=pk_name),
        )
        op.execute(
            f"INSERT INTO {new} ({', '.join((*_KEY, *names))}) "
            f"SELECT {', '.join((*_KEY, *names))} FROM {table} ORDER BY res_type, res_id, seq"
        )
    op.drop_table(table)
    op.rename_table(new, table)
    if not sqlite:
        op.execute(f"ALTER TABLE {table} RENAME CONSTRAINT {pk_name} TO pk_{table}")
        if not keyed:
            op.execute(f"ALTER SEQUENCE {new}_row_id_seq RENAME TO {table}_row_id_seq")
    for name, columns in value_indexes:
        op.create_index(name, table, columns)
    if not keyed:
        op.create_index(f"ix_{table}_res_type_res_id_param", table, list(_KEY))


def _seed_stats(*, keyed: bool) -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return
    bind.exec_driver_sql("ANALYZE sqlite_schema")  # creates sqlite_stat1 if it is missing
    rows = list(_VALUE_STATS)
    for table, stat in _RESOURCE_SIDE_STATS.items():
        if keyed:  # the key's b-tree carries the table's name in sqlite_stat1
            rows.append((table, table, stat + " 1"))
        else:
            rows.append((table, f"ix_{table}_res_type_res_id_param", stat))
    for table, index, stat in rows:
        bind.execute(
            sa.text("DELETE FROM sqlite_stat1 WHERE tbl = :t AND idx = :i"),
            {"t": table, "i": index},
        )
        bind.execute(
            sa.text("INSERT INTO sqlite_stat1 (tbl, idx, stat) VALUES (:t, :i, :s)"),
            {"t": table, "i": index, "s": stat},
        )
    bind.exec_driver_sql("ANALYZE sqlite_schema")  # reload the statistics


def upgrade() -> None:
    for table in _TABLES:
        _rebuild(table, keyed=True)
    _seed_stats(keyed=True)


def downgrade() -> None:
    for table in _TABLES:
        _rebuild(table, keyed=False)
    _seed_stats(keyed=False)
