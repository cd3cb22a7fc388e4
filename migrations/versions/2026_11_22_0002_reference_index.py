"""Reference search index (spidx_reference).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "spidx_reference",
        sa.Column("row_id", _id, autoincrement=True, nullable=False),
        sa.Column("res_type", sa.String(64), nullable=False),
        sa.Column("res_id", sa.String(64), nullable=False),
        sa.Column("param", sa.String(64), nullable=False),
        sa.Column("target_type", sa.String(64), nullable=True),
        sa.Column("target_id", sa.String(64), nullable=True),
        sa.Column("target_url", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("row_id", name="pk_spidx_reference"),
    )
    op.create_index(
        "ix_spidx_reference_res_type_param_target_id_target_type",
        "spidx_reference",
        ["res_type", "param", "target_id", "target_type"],
    )
    op.create_index("ix_spidx_reference_res_type_res_id", "spidx_reference", ["res_type", "res_id"])
    op.create_index(
        "ix_spidx_reference_target_type_target_id", "spidx_reference", ["target_type", "target_id"]
    )


def downgrade() -> None:
    op.drop_table("spidx_reference")
