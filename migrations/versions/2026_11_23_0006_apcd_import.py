"""APCD-CDL import journal, line errors, member map and claim versions.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "apcd_import",
        sa.Column("import_id", sa.String(64), nullable=False),
        sa.Column("file_name", sa.Text(), nullable=False),
        sa.Column("file_type", sa.String(2), nullable=False),
        sa.Column("layout", sa.String(32), nullable=False),
        sa.Column("submitter", sa.String(16), nullable=False),
        sa.Column("payer", sa.String(16), nullable=False),
        sa.Column("period", sa.String(16), nullable=False),
        sa.Column("record_count", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("lines_done", sa.Integer(), nullable=False),
        sa.Column("lines_read", sa.Integer(), nullable=False),
        sa.Column("loaded", sa.Integer(), nullable=False),
        sa.Column("rejected", sa.Integer(), nullable=False),
        sa.Column("created", sa.Integer(), nullable=False),
        sa.Column("updated", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("import_id", name="pk_apcd_import"),
    )
    op.create_table(
        "apcd_import_error",
        sa.Column("row_id", _id, autoincrement=True, nullable=False),
        sa.Column("import_id", sa.String(64), nullable=False),
        sa.Column("line", sa.Integer(), nullable=False),
        sa.Column("field_id", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("row_id", name="pk_apcd_import_error"),
    )
    op.create_index(
        "ix_apcd_import_error_import_id_line", "apcd_import_error", ["import_id", "line"]
    )
    op.create_table(
        "apcd_member",
        sa.Column("namespace", sa.String(64), nullable=False),
        sa.Column("member_id", sa.String(64), nullable=False),
        sa.Column("patient_id", sa.String(64), nullable=False),
        sa.Column("linked", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("namespace", "member_id", name="pk_apcd_member"),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "apcd_claim",
        sa.Column("namespace", sa.String(64), nullable=False),
        sa.Column("claim_id", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("voided", sa.Boolean(), nullable=False),
        sa.Column("resources", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("namespace", "claim_id", name="pk_apcd_claim"),
    )


def downgrade() -> None:
    op.drop_table("apcd_claim")
    op.drop_table("apcd_member")
    op.drop_table("apcd_import_error")
    op.drop_table("apcd_import")
