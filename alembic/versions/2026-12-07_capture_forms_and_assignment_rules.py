"""capture forms, their rate counts, and assignment rules (issue 17)

`assignment_rules` decide who a new lead goes to (app/services/assignment_rules.py), with the
round robin's turn in `last_position`; `capture_forms` are the public web forms that post
leads (app/services/lead_capture.py), found by a digest of their public key;
`capture_rate_counts` count each client address's submissions per form and minute.

Revision ID: 5e8d1c7b3a20
Revises: c3f9a2d4e610
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "5e8d1c7b3a20"
down_revision = "c3f9a2d4e610"
branch_labels = None
depends_on = None

JSONB = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TAGS = sa.JSON().with_variant(postgresql.ARRAY(sa.String(length=50)), "postgresql")


def upgrade() -> None:
    op.create_table(
        "assignment_rules",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("strategy", sa.String(20), nullable=False),
        sa.Column("agent_ids", JSONB, nullable=False),
        sa.Column("last_position", sa.Integer(), server_default=sa.text("-1"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_assignment_rules")),
        sa.UniqueConstraint("name", name=op.f("uq_assignment_rules_name")),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "capture_forms",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("key_digest", sa.String(64), nullable=False),
        sa.Column("key_hint", sa.String(8), nullable=False),
        sa.Column("allowed_origins", JSONB, nullable=False),
        sa.Column("source", sa.String(20), nullable=False),
        sa.Column("tags", TAGS, nullable=False),
        sa.Column("assignment_rule_id", sa.Integer(), nullable=True),
        sa.Column("created_by", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["assignment_rule_id"],
            ["assignment_rules.id"],
            name=op.f("fk_capture_forms_assignment_rule_id_assignment_rules"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["created_by"],
            ["users.id"],
            name=op.f("fk_capture_forms_created_by_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_capture_forms")),
        sa.UniqueConstraint("key_digest", name=op.f("uq_capture_forms_key_digest")),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "capture_rate_counts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("form_id", sa.Integer(), nullable=False),
        sa.Column("client_address", sa.String(64), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["form_id"],
            ["capture_forms.id"],
            name=op.f("fk_capture_rate_counts_form_id_capture_forms"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_capture_rate_counts")),
    )
    op.create_index(
        op.f("ix_capture_rate_counts_form_id_client_address_window_start"),
        "capture_rate_counts",
        ["form_id", "client_address", "window_start"],
        unique=True,
    )


def downgrade() -> None:
    op.drop_index(
        op.f("ix_capture_rate_counts_form_id_client_address_window_start"),
        table_name="capture_rate_counts",
    )
    op.drop_table("capture_rate_counts")
    op.drop_table("capture_forms")
    op.drop_table("assignment_rules")
