"""Lead events for the live stream: whose lead each was, and the order they were dispatched in

`lead_events.assigned_to` is the lead's assignee once the change was made, so the stream can
show an agent the events of their leads as they were then. Events older than this revision
take their lead's assignee now, the best that is known of them (null for a deleted lead).

`lead_events.dispatch_order` is set by the dispatcher with `dispatched_at`: the order in which
events became visible, which the stream follows. Events already dispatched take their id, which
is the order they were dispatched in as far as anything read them.

Revision ID: e2b8f4a6c913
Revises: d7a3e5c1b924
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "e2b8f4a6c913"
down_revision = "d7a3e5c1b924"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("lead_events") as batch:
        batch.add_column(sa.Column("assigned_to", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("dispatch_order", BIG_ID, nullable=True))
    op.execute(
        "UPDATE lead_events SET assigned_to = "
        "(SELECT leads.assigned_to FROM leads WHERE leads.id = lead_events.lead_id), "
        "dispatch_order = CASE WHEN dispatched_at IS NULL THEN NULL ELSE id END"
    )
    op.create_index(
        op.f("ix_lead_events_dispatch_order"), "lead_events", ["dispatch_order"], unique=True
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_lead_events_dispatch_order"), table_name="lead_events")
    with op.batch_alter_table("lead_events") as batch:
        batch.drop_column("dispatch_order")
        batch.drop_column("assigned_to")
