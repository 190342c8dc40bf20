"""Sessions, refresh tokens, API keys and service accounts; login failures by address

A session is one login on one device; every access token names one, and the account check
refuses a token whose session has ended. Refresh tokens are kept as SHA-256 digests, the
replaced ones too (a replaced token coming back revokes its session).

`api_keys` holds the keys of scripts and integrations (a digest of each key, never the key), and
`users.is_service_account` marks accounts that use only keys. `login_failures` gets an index by (client_address, failed_at), for the per-address limit.

Access tokens issued before this revision carry no session and stop working: their holders
log in again (they lasted an hour at most).

Revision ID: c41f7b9e2a63
Revises: a6c9e2d4f815
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "c41f7b9e2a63"
down_revision = "a6c9e2d4f815"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "auth_sessions",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("user_agent", sa.String(300), nullable=True),
        sa.Column("client_address", sa.String(64), nullable=True),
        sa.Column("chain_key", sa.LargeBinary(32), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoke_reason", sa.String(30), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_auth_sessions_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_auth_sessions")),
        sqlite_autoincrement=True,
    )
    op.create_index(
        op.f("ix_auth_sessions_user_id_created_at"),
        "auth_sessions",
        ["user_id", "created_at"],
        unique=False,
    )
    op.create_table(
        "refresh_tokens",
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column(
            "session_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("replaced_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["auth_sessions.id"],
            name=op.f("fk_refresh_tokens_session_id_auth_sessions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("digest", name=op.f("pk_refresh_tokens")),
    )
    op.create_index(
        op.f("ix_refresh_tokens_session_id_issued_at"),
        "refresh_tokens",
        ["session_id", "issued_at"],
        unique=False,
    )
    op.create_index(
        op.f("ix_login_failures_client_address_failed_at"),
        "login_failures",
        ["client_address", "failed_at"],
        unique=False,
    )

    op.create_table(
        "api_keys",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("prefix", sa.String(8), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("scope", sa.String(5), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_api_keys_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("prefix", name=op.f("uq_api_keys_prefix")),
        sqlite_autoincrement=True,
    )
    op.create_index(
        op.f("ix_api_keys_user_id_created_at"), "api_keys", ["user_id", "created_at"], unique=False
    )
    with op.batch_alter_table("users", table_kwargs={"sqlite_autoincrement": True}) as batch:
        batch.add_column(
            sa.Column("is_service_account", sa.Boolean(), server_default=sa.false(), nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("users", table_kwargs={"sqlite_autoincrement": True}) as batch:
        batch.drop_column("is_service_account")
    op.drop_index(op.f("ix_api_keys_user_id_created_at"), table_name="api_keys")
    op.drop_table("api_keys")
    op.drop_index(op.f("ix_login_failures_client_address_failed_at"), table_name="login_failures")
    op.drop_index(op.f("ix_refresh_tokens_session_id_issued_at"), table_name="refresh_tokens")
    op.drop_table("refresh_tokens")
    op.drop_index(op.f("ix_auth_sessions_user_id_created_at"), table_name="auth_sessions")
    op.drop_table("auth_sessions")
