"""SQLite: seed the query planner's statistics (sqlite_stat1) with a representative shape.

Without statistics SQLite guesses, and for the index tables it guesses wrong in the ways
that matter most: it checks a date or a supporting reference by scanning a whole parameter's
index range instead of seeking the candidate's own (type, id, param) rows, which turned a 3 ms
$everything into 2.6 s at 30,000 resources. The rows below are ANALYZE's output on a
synthetic database (bench/synth.py), scaled to a million resources; only their proportions
matter. SQLite documents writing sqlite_stat1 by hand for exactly this
(https://sqlite.org/optoverview.html#manual_control_of_query_plans_using_sqlite_stat_tables).
A later ANALYZE replaces them with the real figures. PostgreSQL keeps its own statistics.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (table, index, "rows, then average rows per distinct prefix of the index's columns")
STATS = [
    ("resource", "sqlite_autoindex_resource_1", "1000000 110000 1"),
    ("resource", "ix_resource_res_type_last_updated", "1000000 110000 18"),
    ("resource_compartment", "resource_compartment", "1000000 100 18 1"),
    ("resource_compartment", "ix_resource_compartment_res_type_res_id", "1000000 170000 1"),
    ("spidx_date", "ix_spidx_date_res_type_param_low_high", "2000000 220000 130000 6 6"),
    ("spidx_date", "ix_spidx_date_res_type_res_id_param", "2000000 220000 2 1"),
    (
        "spidx_quantity",
        "ix_spidx_quantity_res_type_param_code_value",
        "1600000 1600000 800000 90000 6",
    ),
    ("spidx_quantity", "ix_spidx_quantity_res_type_res_id_param", "1600000 1600000 2 1"),
    (
        "spidx_reference",
        "ix_spidx_reference_res_type_param_target_id_res_id_target_type",
        "4000000 570000 180000 13 1 1",
    ),
    ("spidx_reference", "ix_spidx_reference_res_type_res_id_param", "4000000 570000 5 1"),
    ("spidx_reference", "ix_spidx_reference_target_type_target_id", "4000000 800000 38"),
    ("spidx_string", "ix_spidx_string_res_type_param_value_normalized", "1900000 230000 90000 16"),
    ("spidx_string", "ix_spidx_string_res_type_res_id_param", "1900000 230000 3 1"),
    (
        "spidx_token",
        "ix_spidx_token_res_type_param_value_res_id_system",
        "3700000 600000 230000 313 1 1",
    ),
    ("spidx_token", "ix_spidx_token_res_type_res_id_param", "3700000 600000 4 1"),
]


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return
    bind.exec_driver_sql("ANALYZE sqlite_schema")  # creates sqlite_stat1 if it is missing
    for table, index, stat in STATS:
        bind.execute(
            sa.text("DELETE FROM sqlite_stat1 WHERE tbl = :t AND idx = :i"),
            {"t": table, "i": index},
        )
        bind.execute(
            sa.text("INSERT INTO sqlite_stat1 (tbl, idx, stat) VALUES (:t, :i, :s)"),
            {"t": table, "i": index, "s": stat},
        )
    bind.exec_driver_sql("ANALYZE sqlite_schema")  # reload the statistics


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        for table, index, _ in STATS:
            bind.execute(
                sa.text("DELETE FROM sqlite_stat1 WHERE tbl = :t AND idx = :i"),
                {"t": table, "i": index},
            )
