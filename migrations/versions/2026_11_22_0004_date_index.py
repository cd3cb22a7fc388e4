"""Date search index (spidx_date).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "spidx_date",
        sa.Column("row_id", _id, autoincrement=True, nullable=False),
        sa.Column("res_type", sa.String(64), nullable=False),
        sa.Column("res_id", sa.String(64), nullable=False),
        sa.Column("param", sa.String(64), nullable=False),
        sa.Column("low", sa.DateTime(timezone=True), nullable=False),
        sa.Column("high", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("row_id", name="pk_spidx_date"),
    )
    op.create_index(
        "ix_spidx_date_res_type_param_low_high", "spidx_date", ["res_type", "param", "low", "high"]
    )
    op.create_index("ix_spidx_date_res_type_res_id", "spidx_date", ["res_type", "res_id"])


def downgrade() -> None:
    op.drop_table("spidx_date")
