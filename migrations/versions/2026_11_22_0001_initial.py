"""Initial schema: versioned resources, history, token index, compartments, conditional keys.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_ts = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "resource",
        sa.Column("res_type", sa.String(64), nullable=False),
        sa.Column("res_id", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("last_updated", _ts, nullable=False),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("content", _json, nullable=True),
        sa.PrimaryKeyConstraint("res_type", "res_id", name="pk_resource"),
    )
    op.create_index("ix_resource_res_type_last_updated", "resource", ["res_type", "last_updated"])

    op.create_table(
        "resource_history",
        sa.Column("hid", _id, autoincrement=True, nullable=False),
        sa.Column("res_type", sa.String(64), nullable=False),
        sa.Column("res_id", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("last_updated", _ts, nullable=False),
        sa.Column("method", sa.String(8), nullable=False),
        sa.Column("content", _json, nullable=True),
        sa.PrimaryKeyConstraint("hid", name="pk_resource_history"),
        sa.UniqueConstraint(
            "res_type", "res_id", "version", name="uq_resource_history_res_type_res_id_version"
        ),
    )
    op.create_index("ix_resource_history_res_type_hid", "resource_history", ["res_type", "hid"])
    op.create_index("ix_resource_history_last_updated", "resource_history", ["last_updated"])

    op.create_table(
        "spidx_token",
        sa.Column("row_id", _id, autoincrement=True, nullable=False),
        sa.Column("res_type", sa.String(64), nullable=False),
        sa.Column("res_id", sa.String(64), nullable=False),
        sa.Column("param", sa.String(64), nullable=False),
        sa.Column("system", sa.Text(), nullable=True),
        sa.Column("value", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("row_id", name="pk_spidx_token"),
    )
    op.create_index(
        "ix_spidx_token_res_type_param_value_system",
        "spidx_token",
        ["res_type", "param", "value", "system"],
    )
    op.create_index("ix_spidx_token_res_type_res_id", "spidx_token", ["res_type", "res_id"])

    op.create_table(
        "resource_compartment",
        sa.Column("patient_id", sa.String(64), nullable=False),
        sa.Column("res_type", sa.String(64), nullable=False),
        sa.Column("res_id", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("patient_id", "res_type", "res_id", name="pk_resource_compartment"),
        sqlite_with_rowid=False,
    )
    op.create_index(
        "ix_resource_compartment_res_type_res_id", "resource_compartment", ["res_type", "res_id"]
    )

    op.create_table(
        "conditional_key",
        sa.Column("res_type", sa.String(64), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("res_id", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("res_type", "key_hash", name="pk_conditional_key"),
        sqlite_with_rowid=False,
    )
    op.create_index("ix_conditional_key_res_type_res_id", "conditional_key", ["res_type", "res_id"])


def downgrade() -> None:
    op.drop_table("conditional_key")
    op.drop_table("resource_compartment")
    op.drop_table("spidx_token")
    op.drop_table("resource_history")
    op.drop_table("resource")
