"""Quantity and number search index (spidx_quantity); index shapes for driven searches.

Every index table gets a (type, id, param) index, which answers the correlated checks a
search makes on each candidate resource; the token and reference value indexes carry the
resource id before the rest, so those checks seek straight to one row. String values are
compared by code point on PostgreSQL too (collation "C"), so a prefix search is an index range.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TABLES = ("spidx_token", "spidx_date", "spidx_string", "spidx_reference")


def upgrade() -> None:
    op.create_table(
        "spidx_quantity",
        sa.Column("row_id", _id, autoincrement=True, nullable=False),
        sa.Column("res_type", sa.String(64), nullable=False),
        sa.Column("res_id", sa.String(64), nullable=False),
        sa.Column("param", sa.String(64), nullable=False),
        sa.Column("system", sa.Text(), nullable=True),
        sa.Column("code", sa.Text(), nullable=True),
        sa.Column("value", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("row_id", name="pk_spidx_quantity"),
    )
    op.create_index(
        "ix_spidx_quantity_res_type_param_code_value",
        "spidx_quantity",
        ["res_type", "param", "code", "value"],
    )
    for table in ("spidx_quantity", *_TABLES):
        op.create_index(f"ix_{table}_res_type_res_id_param", table, ["res_type", "res_id", "param"])
    for table in _TABLES:
        op.drop_index(f"ix_{table}_res_type_res_id", table_name=table)
    op.drop_index("ix_spidx_token_res_type_param_value_system", table_name="spidx_token")
    op.create_index(
        "ix_spidx_token_res_type_param_value_res_id_system",
        "spidx_token",
        ["res_type", "param", "value", "res_id", "system"],
    )
    op.drop_index(
        "ix_spidx_reference_res_type_param_target_id_target_type", table_name="spidx_reference"
    )
    op.create_index(
        "ix_spidx_reference_res_type_param_target_id_res_id_target_type",
        "spidx_reference",
        ["res_type", "param", "target_id", "res_id", "target_type"],
    )
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index("ix_spidx_string_res_type_param_value_normalized", table_name="spidx_string")
        op.alter_column(
            "spidx_string",
            "value_normalized",
            type_=sa.Text(collation="C"),
            existing_nullable=False,
        )
        op.create_index(
            "ix_spidx_string_res_type_param_value_normalized",
            "spidx_string",
            ["res_type", "param", "value_normalized"],
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column(
            "spidx_string", "value_normalized", type_=sa.Text(), existing_nullable=False
        )
    op.drop_index(
        "ix_spidx_reference_res_type_param_target_id_res_id_target_type",
        table_name="spidx_reference",
    )
    op.create_index(
        "ix_spidx_reference_res_type_param_target_id_target_type",
        "spidx_reference",
        ["res_type", "param", "target_id", "target_type"],
    )
    op.drop_index("ix_spidx_token_res_type_param_value_res_id_system", table_name="spidx_token")
    op.create_index(
        "ix_spidx_token_res_type_param_value_system",
        "spidx_token",
        ["res_type", "param", "value", "system"],
    )
    for table in _TABLES:
        op.create_index(f"ix_{table}_res_type_res_id", table, ["res_type", "res_id"])
        op.drop_index(f"ix_{table}_res_type_res_id_param", table_name=table)
    op.drop_table("spidx_quantity")
