"""PostgreSQL covering index for pipeline statistics

The statistics query groups every live (not archived) lead by status and source and sums scores,
optionally for one agent. A partial index holding exactly those columns lets PostgreSQL answer it
with an index-only scan instead of reading the wide lead rows (notes make them large), and an
agent's figures come from a small range of it. SQLite: nothing to do.

Revision ID: 8e41b7c2d903
Revises: 5c2f0e7d9a41
Create Date: 2026-11-25
"""

from __future__ import annotations

from alembic import op

revision = "8e41b7c2d903"
down_revision = "5c2f0e7d9a41"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        "CREATE INDEX ix_leads_statistics ON leads (assigned_to, status, source) "
        "INCLUDE (lead_score) WHERE archived_at IS NULL"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP INDEX IF EXISTS ix_leads_statistics")
