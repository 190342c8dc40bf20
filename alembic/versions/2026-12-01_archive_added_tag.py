"""Remember whether archiving added the `archived` tag

`leads.archive_added_tag` is set when a lead is archived (true when the tag was added then,
false when the lead already had it) and cleared on restore, which removes the tag only when
archiving added it. Leads archived before this revision get true: the old restore always
removed the tag, so they keep behaving as they did.

The column goes with ALTER TABLE ... DROP COLUMN on both databases (SQLite has it since 3.35),
not by rebuilding the table, which would drop the statistics triggers on SQLite.

Revision ID: 5c2e8f1a9d47
Revises: 14336d283318
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "5c2e8f1a9d47"
down_revision = "14336d283318"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("leads", sa.Column("archive_added_tag", sa.Boolean(), nullable=True))
    op.execute("UPDATE leads SET archive_added_tag = true WHERE archived_at IS NOT NULL")


def downgrade() -> None:
    op.execute("ALTER TABLE leads DROP COLUMN archive_added_tag")
