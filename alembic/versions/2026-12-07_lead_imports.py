"""CSV imports: `lead_imports`, and the import that made each event

`lead_imports` keeps each import, its file while it runs in the background, and its counts;
`lead_import_errors` its refused rows. `lead_events.import_id` names the import
that made an event, null for every other change.

Revision ID: f4c1a9d3e785
Revises: e2b8f4a6c913
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "f4c1a9d3e785"
down_revision = "e2b8f4a6c913"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "lead_imports",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("created_by", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("on_error", sa.String(16), nullable=False),
        sa.Column("dry_run", sa.Boolean(), nullable=False),
        sa.Column("options", sa.JSON(), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=True),
        sa.Column("total_rows", sa.Integer(), nullable=False),
        sa.Column("processed_rows", sa.Integer(), nullable=False),
        sa.Column("report", sa.JSON(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["created_by"],
            ["users.id"],
            name=op.f("fk_lead_imports_created_by_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lead_imports")),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_lead_imports_status_id", "lead_imports", ["status", "id"])
    op.create_table(
        "lead_import_errors",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("import_id", BIG_ID, nullable=False),
        sa.Column("row", sa.Integer(), nullable=False),
        sa.Column("column", sa.Text(), nullable=True),
        sa.Column("value", sa.Text(), nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["import_id"],
            ["lead_imports.id"],
            name=op.f("fk_lead_import_errors_import_id_lead_imports"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lead_import_errors")),
    )
    op.create_index(
        "ix_lead_import_errors_import_id_row", "lead_import_errors", ["import_id", "row"]
    )
    with op.batch_alter_table("lead_events") as batch:
        batch.add_column(sa.Column("import_id", BIG_ID, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("lead_events") as batch:
        batch.drop_column("import_id")
    op.drop_table("lead_import_errors")
    op.drop_table("lead_imports")
