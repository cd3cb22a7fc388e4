"""Quantity and number search index (spidx_quantity).

Revision ID: 0008
Revises: 0004
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


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
    op.create_index("ix_spidx_quantity_res_type_res_id", "spidx_quantity", ["res_type", "res_id"])


def downgrade() -> None:
    op.drop_table("spidx_quantity")
