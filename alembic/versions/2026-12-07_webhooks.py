"""Webhooks: subscriptions, their deliveries, and the dispatcher's mark on lead events

`webhooks` holds the subscriptions (URL, event types, an optional lead filter, the signing
secret and, after a rotation, the previous one for a day). `webhook_deliveries` holds one row
per event and matching subscription, with the body it sends and its retry state.

`lead_events.dispatched_at` is null until the dispatcher has made an event's deliveries; a
partial index keeps the undispatched ones at hand. Events older than this revision predate
every subscription: they are marked dispatched when it is applied.

Revision ID: d7a3e5c1b924
Revises: c41f7b9e2a63
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "d7a3e5c1b924"
down_revision = "c41f7b9e2a63"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSONB = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
UNDISPATCHED = sa.text("dispatched_at IS NULL")
PENDING = sa.text("status = 'pending'")


def upgrade() -> None:
    op.create_table(
        "webhooks",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("url", sa.String(2048), nullable=False),
        sa.Column("event_types", sa.JSON(), nullable=False),
        sa.Column("description", sa.String(500), nullable=True),
        sa.Column("filter", JSONB, nullable=True),
        sa.Column("secret", sa.String(64), nullable=False),
        sa.Column("previous_secret", sa.String(64), nullable=True),
        sa.Column("previous_secret_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("is_active", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("disabled_reason", sa.String(200), nullable=True),
        sa.Column("failing_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_by", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["created_by"],
            ["users.id"],
            name=op.f("fk_webhooks_created_by_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhooks")),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("webhook_id", BIG_ID, nullable=False),
        sa.Column("event_id", BIG_ID, nullable=True),
        sa.Column("message_id", sa.String(64), nullable=False),
        sa.Column("event_type", sa.String(32), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("status", sa.String(9), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.String(1000), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["webhook_id"],
            ["webhooks.id"],
            name=op.f("fk_webhook_deliveries_webhook_id_webhooks"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_deliveries")),
        sqlite_autoincrement=True,
    )
    op.create_index(
        op.f("ix_webhook_deliveries_webhook_id_id"),
        "webhook_deliveries",
        ["webhook_id", "id"],
        unique=False,
    )
    op.create_index(
        "ix_webhook_deliveries_pending",
        "webhook_deliveries",
        ["webhook_id", "id"],
        unique=False,
        postgresql_where=PENDING,
        sqlite_where=PENDING,
    )
    with op.batch_alter_table("lead_events") as batch:
        batch.add_column(sa.Column("dispatched_at", sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE lead_events SET dispatched_at = occurred_at")
    op.create_index(
        "ix_lead_events_undispatched",
        "lead_events",
        ["id"],
        unique=False,
        postgresql_where=UNDISPATCHED,
        sqlite_where=UNDISPATCHED,
    )


def downgrade() -> None:
    op.drop_index("ix_lead_events_undispatched", table_name="lead_events")
    with op.batch_alter_table("lead_events") as batch:
        batch.drop_column("dispatched_at")
    op.drop_index("ix_webhook_deliveries_pending", table_name="webhook_deliveries")
    op.drop_index(op.f("ix_webhook_deliveries_webhook_id_id"), table_name="webhook_deliveries")
    op.drop_table("webhook_deliveries")
    op.drop_table("webhooks")
