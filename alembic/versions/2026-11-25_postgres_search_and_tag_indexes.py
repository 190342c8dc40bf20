"""PostgreSQL search and tag indexes

Substring search (`ILIKE '%term%'`) and "any of these tags" (`tags && ARRAY[...]`) cannot use a
btree index, so on a large table they would scan every row. On PostgreSQL:

- a trigram GIN index (pg_trgm) over the search document, the exact expression the list query
  searches: "first last", email, phone and company joined by newlines (a newline never occurs
  in a search term, so a match never spans two fields);
- a GIN index over the tag array.

SQLite has neither index type; there this migration does nothing. The downgrade drops the two
indexes and leaves the pg_trgm extension, which other schemas in the database may use.

Revision ID: 5c2f0e7d9a41
Revises: 1b57e6c77cfe
Create Date: 2026-11-25
"""

from __future__ import annotations

from alembic import op

revision = "5c2f0e7d9a41"
down_revision = "1b57e6c77cfe"
branch_labels = None
depends_on = None

SEARCH_DOCUMENT = (
    "first_name || ' ' || last_name || '\n' || coalesce(email, '') || '\n' || "
    "coalesce(phone, '') || '\n' || coalesce(company, '')"
)


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    op.execute(
        f"CREATE INDEX ix_leads_search_trgm ON leads USING gin (({SEARCH_DOCUMENT}) gin_trgm_ops)"
    )
    op.execute("CREATE INDEX ix_leads_tags_gin ON leads USING gin (tags)")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP INDEX IF EXISTS ix_leads_tags_gin")
    op.execute("DROP INDEX IF EXISTS ix_leads_search_trgm")
