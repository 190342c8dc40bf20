"""SQLite search index: an FTS5 trigram table over the search document, kept by triggers

On SQLite, `search` (a case-insensitive substring match over "first last", email, phone and
company) read every lead, for the page and again for its count. SQLite 3.34+ has the FTS5
trigram tokenizer, whose phrase queries are substring matches: `leads_search` indexes the same
document the PostgreSQL trigram index does (`postgres_search_and_tag_indexes`), contentless
(only the index is stored; the query needs nothing but the rowid, which is the lead's id), and
triggers on `leads` keep it up to date (see app/models/lead_search.py).

The triggers are created first and the backfill runs after them, in the same transaction, which
holds SQLite's write lock throughout. The SQL is a frozen copy of app/models/lead_search.py at
the time of writing. The downgrade drops the triggers and the table (with its shadow tables).
PostgreSQL: nothing to do.

Revision ID: 7d3b9e2f4a16
Revises: 5c2e8f1a9d47
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlite3

from alembic import op

revision = "7d3b9e2f4a16"
down_revision = "5c2e8f1a9d47"
branch_labels = None
depends_on = None

TRIGRAM_SINCE = (3, 34, 0)


def _document(row: str) -> str:
    return (
        f"{row}.first_name || ' ' || {row}.last_name || '\n' || coalesce({row}.email, '') || "
        f"'\n' || coalesce({row}.phone, '') || '\n' || coalesce({row}.company, '')"
    )


CREATE_TABLE = (
    "CREATE VIRTUAL TABLE leads_search USING fts5("
    "document, content='', columnsize=0, tokenize='trigram')"
)
TRIGGERS = (
    f"""CREATE TRIGGER leads_search_after_insert AFTER INSERT ON leads
FOR EACH ROW BEGIN
    INSERT INTO leads_search (rowid, document) VALUES (NEW.id, {_document("NEW")});
END""",
    f"""CREATE TRIGGER leads_search_after_update
AFTER UPDATE OF id, first_name, last_name, email, phone, company ON leads
FOR EACH ROW WHEN OLD.id IS NOT NEW.id OR ({_document("OLD")}) IS NOT ({_document("NEW")})
BEGIN
    INSERT INTO leads_search (leads_search, rowid, document)
    VALUES ('delete', OLD.id, {_document("OLD")});
    INSERT INTO leads_search (rowid, document) VALUES (NEW.id, {_document("NEW")});
END""",
    f"""CREATE TRIGGER leads_search_after_delete AFTER DELETE ON leads
FOR EACH ROW BEGIN
    INSERT INTO leads_search (leads_search, rowid, document)
    VALUES ('delete', OLD.id, {_document("OLD")});
END""",
)
BACKFILL = f"INSERT INTO leads_search (rowid, document) SELECT id, {_document('leads')} FROM leads"


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    if sqlite3.sqlite_version_info < TRIGRAM_SINCE:
        raise RuntimeError(
            f"SQLite {sqlite3.sqlite_version} has no FTS5 trigram tokenizer (3.34 or later)"
        )
    op.execute(CREATE_TABLE)
    for statement in TRIGGERS:
        op.execute(statement)
    op.execute(BACKFILL)


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for event in ("delete", "update", "insert"):
        op.execute(f"DROP TRIGGER IF EXISTS leads_search_after_{event}")
    op.execute("DROP TABLE IF EXISTS leads_search")
