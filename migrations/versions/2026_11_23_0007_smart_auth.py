"""SMART authorization server (clients, users, assertion ids, codes, refresh tokens, revoked
access tokens) and the audit log.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_ts = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "oauth_client",
        sa.Column("client_id", sa.String(128), nullable=False),
        sa.Column("scope", sa.Text(), nullable=False),
        sa.Column("jwks", sa.Text(), nullable=True),
        sa.Column("jwks_url", sa.Text(), nullable=True),
        sa.Column("redirect_uris", sa.Text(), nullable=False),
        sa.Column("public", sa.Boolean(), nullable=False),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        sa.Column("created", _ts, nullable=False),
        sa.PrimaryKeyConstraint("client_id", name="pk_oauth_client"),
    )
    op.create_table(
        "oauth_user",
        sa.Column("username", sa.String(128), nullable=False),
        sa.Column("password_hash", sa.Text(), nullable=False),
        sa.Column("fhir_user", sa.String(200), nullable=True),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        sa.Column("created", _ts, nullable=False),
        sa.PrimaryKeyConstraint("username", name="pk_oauth_user"),
    )
    op.create_table(
        "oauth_assertion_jti",
        sa.Column("client_id", sa.String(128), nullable=False),
        sa.Column("jti", sa.String(256), nullable=False),
        sa.Column("expires_at", _ts, nullable=False),
        sa.PrimaryKeyConstraint("client_id", "jti", name="pk_oauth_assertion_jti"),
        sqlite_with_rowid=False,
    )
    op.create_index("ix_oauth_assertion_jti_expires_at", "oauth_assertion_jti", ["expires_at"])
    op.create_table(
        "oauth_code",
        sa.Column("code_hash", sa.String(64), nullable=False),
        sa.Column("client_id", sa.String(128), nullable=False),
        sa.Column("grant", sa.Text(), nullable=False),
        sa.Column("expires_at", _ts, nullable=False),
        sa.Column("used", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("code_hash", name="pk_oauth_code"),
    )
    op.create_index("ix_oauth_code_expires_at", "oauth_code", ["expires_at"])
    op.create_table(
        "oauth_refresh",
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("family", sa.String(64), nullable=False),
        sa.Column("client_id", sa.String(128), nullable=False),
        sa.Column("grant", sa.Text(), nullable=False),
        sa.Column("expires_at", _ts, nullable=False),
        sa.Column("revoked", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("token_hash", name="pk_oauth_refresh"),
    )
    op.create_index("ix_oauth_refresh_family", "oauth_refresh", ["family"])
    op.create_index("ix_oauth_refresh_expires_at", "oauth_refresh", ["expires_at"])
    op.create_table(
        "oauth_revoked",
        sa.Column("seq", _id, autoincrement=True, nullable=False),
        sa.Column("jti", sa.String(256), nullable=False),
        sa.Column("expires_at", _ts, nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_oauth_revoked"),
        sa.UniqueConstraint("jti", name="uq_oauth_revoked_jti"),
    )
    op.create_index("ix_oauth_revoked_expires_at", "oauth_revoked", ["expires_at"])
    op.create_table(
        "audit_event",
        sa.Column("seq", _id, autoincrement=True, nullable=False),
        sa.Column("event_id", sa.String(64), nullable=False),
        sa.Column("recorded", _ts, nullable=False),
        sa.Column("action", sa.String(1), nullable=False),
        sa.Column("outcome", sa.String(2), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("interaction", sa.String(32), nullable=False),
        sa.Column("client_id", sa.String(128), nullable=True),
        sa.Column("subject", sa.String(200), nullable=True),
        sa.Column("patient", sa.String(64), nullable=True),
        sa.Column("res_type", sa.String(64), nullable=True),
        sa.Column("res_id", sa.String(64), nullable=True),
        sa.Column("search_params", sa.Text(), nullable=True),
        sa.Column("purpose", sa.String(200), nullable=True),
        sa.Column("request_id", sa.String(32), nullable=True),
        sa.PrimaryKeyConstraint("seq", name="pk_audit_event"),
        sa.UniqueConstraint("event_id", name="uq_audit_event_event_id"),
    )
    op.create_index("ix_audit_event_recorded", "audit_event", ["recorded"])
    op.create_index("ix_audit_event_patient_seq", "audit_event", ["patient", "seq"])


def downgrade() -> None:
    for name in (
        "audit_event",
        "oauth_revoked",
        "oauth_refresh",
        "oauth_code",
        "oauth_assertion_jti",
        "oauth_user",
        "oauth_client",
    ):
        op.drop_table(name)
