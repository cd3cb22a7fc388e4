"""Intermediary registry: registrations (adapter kind, settings, credentials, status) and the
outcomes of their checks. The Organization and Endpoint themselves are FHIR resources.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_ts = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "intermediary",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("endpoint_id", sa.String(64), nullable=False),
        sa.Column("organization_id", sa.String(64), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("settings", sa.Text(), nullable=False),
        sa.Column("auth_method", sa.String(32), nullable=False),
        sa.Column("client_id", sa.Text(), nullable=True),
        sa.Column("token_url", sa.Text(), nullable=True),
        sa.Column("key_file", sa.Text(), nullable=True),
        sa.Column("scope", sa.Text(), nullable=True),
        sa.Column("cert_file", sa.Text(), nullable=True),
        sa.Column("cert_key_file", sa.Text(), nullable=True),
        sa.Column("ca_file", sa.Text(), nullable=True),
        sa.Column("created", _ts, nullable=False),
        sa.Column("updated", _ts, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_intermediary"),
        sa.UniqueConstraint("endpoint_id", name="uq_intermediary_endpoint_id"),
    )
    op.create_table(
        "intermediary_check",
        sa.Column("seq", _id, autoincrement=True, nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("checked_at", _ts, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("passed", sa.Integer(), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.Column("skipped", sa.Integer(), nullable=False),
        sa.Column("failures", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_intermediary_check"),
    )
    op.create_index("ix_intermediary_check_name_seq", "intermediary_check", ["name", "seq"])


def downgrade() -> None:
    op.drop_table("intermediary_check")
    op.drop_table("intermediary")
