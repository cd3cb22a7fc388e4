"""String search index (spidx_string).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "spidx_string",
        sa.Column("row_id", _id, autoincrement=True, nullable=False),
        sa.Column("res_type", sa.String(64), nullable=False),
        sa.Column("res_id", sa.String(64), nullable=False),
        sa.Column("param", sa.String(64), nullable=False),
        sa.Column("value_normalized", sa.Text(), nullable=False),
        sa.Column("value_exact", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("row_id", name="pk_spidx_string"),
    )
    op.create_index(
        "ix_spidx_string_res_type_param_value_normalized",
        "spidx_string",
        ["res_type", "param", "value_normalized"],
    )
    op.create_index("ix_spidx_string_res_type_res_id", "spidx_string", ["res_type", "res_id"])


def downgrade() -> None:
    op.drop_table("spidx_string")
