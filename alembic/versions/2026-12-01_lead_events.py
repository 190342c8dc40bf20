"""Lead events and lead versions

`lead_events` holds one row per change to a lead, written in the change's own transaction
(app/models/lead_event.py). It has no foreign key to `leads`: a lead's events outlive it.
`leads.version` starts at 1 and counts the lead's changes; existing leads start at 1.

Revision ID: 9b4e1f6c2a58
Revises: 7d3b9e2f4a16
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "9b4e1f6c2a58"
down_revision = "7d3b9e2f4a16"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "lead_events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
        sa.Column("lead_id", sa.Integer(), nullable=False),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column(
            "actor_id",
            sa.Integer(),
            sa.ForeignKey("users.id", ondelete="SET NULL", name="fk_lead_events_actor_id_users"),
            nullable=True,
        ),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "changes", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False
        ),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("request_id", sa.String(128), nullable=True),
        sa.Column("lead_version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_lead_events"),
    )
    op.create_index("ix_lead_events_lead_id_id", "lead_events", ["lead_id", "id"])
    # A plain ADD COLUMN with a default on both databases (no table rebuild on SQLite, which
    # would drop the statistics triggers; PostgreSQL 11+ stores the default without a rewrite).
    op.add_column("leads", sa.Column("version", sa.Integer(), nullable=False, server_default="1"))


def downgrade() -> None:
    op.execute("ALTER TABLE leads DROP COLUMN version")
    op.drop_index("ix_lead_events_lead_id_id", table_name="lead_events")
    op.drop_table("lead_events")
