"""`leads_search`: SQLite's substring index over the search document, kept up to date by
triggers.

`search` matches a substring anywhere in "first last", email, phone and company
(app/services/lead_filters.py `search_document`). A LIKE over that cannot use a btree index, so
on SQLite every search read every lead, twice (the page and its count): 100-330 ms at 100,000
leads. PostgreSQL answers it from a pg_trgm index; SQLite (3.34+) has the FTS5 `trigram`
tokenizer, whose phrase queries are substring matches of three characters or more.

- A contentless FTS5 table (`content=''`): it stores only the index, the document is never
  read back (the query selects rowid, which is the lead's id). An external-content table would
  need the document as a view over `leads`, and a view naming `leads` makes SQLite refuse the
  table rename that Alembic's batch mode ends with ("error in view ...: no such table").
- `columnsize=0`: no per-row token counts, which only ranking (bm25) reads.
- Triggers on `leads` keep it right on every write path: a row's document goes in on INSERT,
  the old one out and the new one in when a field of the document changes, out on DELETE. A
  contentless table forgets nothing by itself: the 'delete' command must be given exactly the
  document that was indexed, which the triggers rebuild from OLD.

SQLite only; PostgreSQL has no such table. The Alembic migration
`2026-12-01_sqlite_search_index.py` owns the schema and carries a frozen copy of this SQL; the
DDL here builds the same objects when the tests use `create_all`. A migration that rebuilds
`leads` (batch mode) drops these triggers and must create them again and rebuild the index.
"""

from __future__ import annotations

from sqlalchemy import DDL, column, event, table

from app.models.base import SEARCH_INDEX_TABLE
from app.models.lead import Lead

SEARCH_TABLE = SEARCH_INDEX_TABLE
TRIGRAM_LENGTH = 3  # a shorter term has no trigram: the index cannot answer it

# The query side: a lightweight table clause, not a model (create_all must not create it).
LEADS_SEARCH = table(SEARCH_TABLE, column("rowid"), column("document"))


def document_sql(row: str) -> str:
    """`search_document()` over the trigger row `row` (NEW or OLD), in SQL."""
    return (
        f"{row}.first_name || ' ' || {row}.last_name || '\n' || coalesce({row}.email, '') || "
        f"'\n' || coalesce({row}.phone, '') || '\n' || coalesce({row}.company, '')"
    )


def _add(row: str) -> str:
    return f"""
    INSERT INTO {SEARCH_TABLE} (rowid, document) VALUES ({row}.id, {document_sql(row)});"""


def _remove(row: str) -> str:
    return f"""
    INSERT INTO {SEARCH_TABLE} ({SEARCH_TABLE}, rowid, document)
    VALUES ('delete', {row}.id, {document_sql(row)});"""


CREATE_TABLE = (
    f"CREATE VIRTUAL TABLE {SEARCH_TABLE} USING fts5("
    "document, content='', columnsize=0, tokenize='trigram')"
)
TRIGGERS = (
    f"""CREATE TRIGGER leads_search_after_insert AFTER INSERT ON leads
FOR EACH ROW BEGIN{_add("NEW")}
END""",
    f"""CREATE TRIGGER leads_search_after_update
AFTER UPDATE OF id, first_name, last_name, email, phone, company ON leads
FOR EACH ROW WHEN OLD.id IS NOT NEW.id OR ({document_sql("OLD")}) IS NOT ({document_sql("NEW")})
BEGIN{_remove("OLD")}{_add("NEW")}
END""",
    f"""CREATE TRIGGER leads_search_after_delete AFTER DELETE ON leads
FOR EACH ROW BEGIN{_remove("OLD")}
END""",
)
DROP = (
    *(
        f"DROP TRIGGER IF EXISTS leads_search_after_{event}"
        for event in ("delete", "update", "insert")
    ),
    f"DROP TABLE IF EXISTS {SEARCH_TABLE}",
)


# --- create_all / drop_all ----------------------------------------------------------------------

for _statement in (CREATE_TABLE, *TRIGGERS):
    event.listen(Lead.__table__, "after_create", DDL(_statement).execute_if(dialect="sqlite"))
for _statement in DROP:
    event.listen(Lead.__table__, "before_drop", DDL(_statement).execute_if(dialect="sqlite"))
