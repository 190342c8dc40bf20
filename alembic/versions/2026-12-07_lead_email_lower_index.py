"""An index on `lower(email)`: duplicate checks and import upserts compare emails lowercased

`POST /leads` looks for a live lead with the new lead's email (case aside) before creating it,
and an upsert import matches rows to leads the same way (app/services/lead_duplicates.py,
app/services/lead_imports.py). The plain `email` index cannot answer `lower(email) = ...`.
Both databases take an index on the expression; it is migration-only (autogenerate cannot
compare expression indexes: app/models/base.py MIGRATION_ONLY_INDEXES).

Revision ID: a1d7c3e9f052
Revises: f4c1a9d3e785
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

revision = "a1d7c3e9f052"
down_revision = "f4c1a9d3e785"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE INDEX ix_leads_email_lower ON leads (lower(email))")


def downgrade() -> None:
    op.execute("DROP INDEX ix_leads_email_lower")
