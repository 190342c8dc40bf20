"""Token versions on users, and the login_failures table behind login throttling

- `users.token_version`: copied into every access token and raised when the password changes
  or the account is deactivated, so tokens issued before stop working at once. Existing rows
  get 0 (the server default), which is also what a token without the claim counts as, so
  tokens issued before this revision keep working until they expire.
- `login_failures`: one row per failed login (email, client address, time), counted per pair to
  lock out password guessing; the index serves the per-pair count and clean-up.

On SQLite the downgrade's column drop rebuilds `users` (batch mode); AUTOINCREMENT is restated
so the rebuilt table still never reuses a deleted user's id.

Revision ID: 14336d283318
Revises: 3a9d5c1e7b20
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "14336d283318"
down_revision = "3a9d5c1e7b20"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(
            sa.Column("token_version", sa.Integer(), server_default="0", nullable=False)
        )
    op.create_table(
        "login_failures",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("client_address", sa.String(length=64), nullable=False),
        sa.Column("failed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_login_failures")),
    )
    op.create_index(
        op.f("ix_login_failures_email_client_address_failed_at"),
        "login_failures",
        ["email", "client_address", "failed_at"],
    )


def downgrade() -> None:
    op.drop_index(
        op.f("ix_login_failures_email_client_address_failed_at"), table_name="login_failures"
    )
    op.drop_table("login_failures")
    with op.batch_alter_table("users", table_kwargs={"sqlite_autoincrement": True}) as batch:
        batch.drop_column("token_version")
