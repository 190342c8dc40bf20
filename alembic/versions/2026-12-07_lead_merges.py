"""`leads.merged_into_id`: the lead a merged lead went into

`POST /leads/{id}/merge` archives the leads it merges into the survivor and sets this column
on them; `POST /leads/{id}/unmerge` clears it (app/services/lead_merges.py). A partial index
finds a survivor's merged leads. No foreign key: SQLite cannot drop a column that a constraint
names without rebuilding the table, which would drop its statistics triggers, so the
downgrade could not be written; a hard delete of a survivor clears the column instead.

Revision ID: c3f9a2d4e610
Revises: b7e2f0c4d913
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "c3f9a2d4e610"
down_revision = "b7e2f0c4d913"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("leads", sa.Column("merged_into_id", sa.Integer(), nullable=True))
    op.create_index(
        "ix_leads_merged_into_id",
        "leads",
        ["merged_into_id"],
        postgresql_where=sa.text("merged_into_id IS NOT NULL"),
        sqlite_where=sa.text("merged_into_id IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_leads_merged_into_id", table_name="leads")
    op.execute("ALTER TABLE leads DROP COLUMN merged_into_id")
