"""ADT event notifications: the outbox, deliveries, receivers and subscription counters.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_at = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "event_outbox",
        sa.Column("id", _id, autoincrement=True, nullable=False),
        sa.Column("event_key", sa.String(36), nullable=False),
        sa.Column("journal_id", _id, nullable=True),
        sa.Column("trigger", sa.String(8), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("patient_id", sa.String(64), nullable=False),
        sa.Column("patient_version", sa.Integer(), nullable=False),
        sa.Column("encounter_id", sa.String(64), nullable=True),
        sa.Column("encounter_version", sa.Integer(), nullable=True),
        sa.Column("other_patient_id", sa.String(64), nullable=True),
        sa.Column("sender", sa.String(512), nullable=False),
        sa.Column("occurred_at", _at, nullable=True),
        sa.Column("received_at", _at, nullable=False),
        sa.Column("created_at", _at, nullable=False),
        sa.Column("routed", sa.Boolean(), nullable=False),
        sa.Column("routed_at", _at, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_event_outbox"),
        sa.UniqueConstraint("event_key", name="uq_event_outbox_event_key"),
    )
    op.create_index("ix_event_outbox_routed_id", "event_outbox", ["routed", "id"])
    op.create_index("ix_event_outbox_journal_id", "event_outbox", ["journal_id"])
    op.create_table(
        "event_delivery",
        sa.Column("id", _id, autoincrement=True, nullable=False),
        sa.Column("event_id", _id, nullable=False),
        sa.Column("target_kind", sa.String(16), nullable=False),
        sa.Column("target_id", sa.String(200), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("endpoint", sa.Text(), nullable=False),
        sa.Column("idempotency_key", sa.String(36), nullable=False),
        sa.Column("event_number", sa.BigInteger(), nullable=True),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", _at, nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", _at, nullable=False),
        sa.Column("delivered_at", _at, nullable=True),
        sa.Column("delay_ms", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_event_delivery"),
        sa.UniqueConstraint(
            "event_id",
            "target_kind",
            "target_id",
            name="uq_event_delivery_event_id_target_kind_target_id",
        ),
    )
    op.create_index(
        "ix_event_delivery_status_next_attempt_at",
        "event_delivery",
        ["status", "next_attempt_at"],
    )
    op.create_table(
        "event_receiver",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("endpoint", sa.Text(), nullable=False),
        sa.Column("kinds", sa.Text(), nullable=False),
        sa.Column("panel", sa.String(64), nullable=True),
        sa.Column("headers", sa.Text(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", _at, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_event_receiver"),
    )
    op.create_table(
        "event_subscription_counter",
        sa.Column("subscription_id", sa.String(64), nullable=False),
        sa.Column("events_since_start", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("subscription_id", name="pk_event_subscription_counter"),
        sqlite_with_rowid=False,
    )


def downgrade() -> None:
    op.drop_table("event_subscription_counter")
    op.drop_table("event_receiver")
    op.drop_table("event_delivery")
    op.drop_table("event_outbox")
