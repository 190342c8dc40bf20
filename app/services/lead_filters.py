"""Turning `LeadFilters` and `LeadPaging` into SQL: the WHERE clause and the ORDER BY. The
models validate every value; this module only builds the query, so it can be read (and tuned)
in one place."""

from __future__ import annotations

import functools
from typing import Any

from sqlalchemy import Boolean, bindparam, case, func, literal_column, or_, select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.visitors import InternalTraversal

from app.models import LEADS_SEARCH, TRIGRAM_LENGTH, Lead, LeadStatus
from app.models.types import tags_overlap
from app.models.validation import PHONE_SEPARATORS, PHONE_SHAPE, normalize_tag
from app.schemas.filters import LeadFilters, LeadPaging

# The table's columns: conditions on them build several times faster than on the ORM's
# attributes (no instrumentation to pass through), and render the same SQL.
LEADS = Lead.__table__.c
NULLABLE_SORTS = frozenset({"company", "last_contact_date"})
LIKE_ESCAPE = "\\"

# Statuses sort in pipeline order, not alphabetically: it is how a sales team reads them.
STATUS_POSITION = {status: position for position, status in enumerate(LeadStatus)}
STATUS_WHENS = {status.value: position for status, position in STATUS_POSITION.items()}
STATUS_ORDER = case(STATUS_WHENS, value=LEADS.status)


def sort_column(sort_by: str, columns: Any = None) -> ColumnElement[Any]:
    """The expression a sort orders by, over the leads table or over `columns` (a subquery's
    columns, named like the table's)."""
    if columns is None:
        return STATUS_ORDER if sort_by == "status" else LEADS[sort_by]
    if sort_by == "status":
        return case(STATUS_WHENS, value=columns.status)
    return columns[sort_by]


def escape_like(term: str) -> str:
    """Make `%`, `_` and the escape character itself match literally."""
    return (
        term.replace(LIKE_ESCAPE, LIKE_ESCAPE * 2)
        .replace("%", LIKE_ESCAPE + "%")
        .replace("_", LIKE_ESCAPE + "_")
    )


def lead_conditions(
    filters: LeadFilters, *, scope_user_id: int | None = None
) -> list[ColumnElement[bool]]:
    """The WHERE conditions that apply `filters` (already validated by the model), limited to
    one assignee's leads when `scope_user_id` is given."""
    where: list[ColumnElement[bool]] = []
    if filters.status:
        where.append(LEADS.status.in_(list(dict.fromkeys(filters.status))))
    if filters.source:
        where.append(LEADS.source.in_(list(dict.fromkeys(filters.source))))
    if filters.assigned_to is not None:
        where.append(LEADS.assigned_to == filters.assigned_to)
    if scope_user_id is not None:
        where.append(LEADS.assigned_to == scope_user_id)

    start, end, end_inclusive = filters.created_range()
    if start is not None:
        where.append(LEADS.created_at >= start)
    if end is not None:
        where.append(LEADS.created_at <= end if end_inclusive else LEADS.created_at < end)

    if filters.lead_score_min is not None:
        where.append(LEADS.lead_score >= filters.lead_score_min)
    if filters.lead_score_max is not None:
        where.append(LEADS.lead_score <= filters.lead_score_max)

    term = (filters.search or "").strip()
    if term:
        where.append(_search(term))
    if filters.is_hot_leads_only:
        where.append(Lead.is_hot_lead)
    if filters.tags:
        wanted = list(dict.fromkeys(normalize_tag("tags", tag) for tag in filters.tags))
        where.append(tags_overlap(LEADS.tags, wanted))
    if not filters.include_archived:
        where.append(LEADS.archived_at.is_(None))
    return where


@functools.cache  # an expression is immutable: build it once, use it in every statement
def search_document() -> ColumnElement[str]:
    """The text `search` looks in: "first last", email, phone and company, one per line.

    It is spelled exactly like the trigram index in the migration
    `postgres_search_and_tag_indexes`, so PostgreSQL answers it from that index. The constants
    are literal SQL, not bound parameters, for the same reason.
    """
    space, newline, empty = (literal_column(f"'{c}'") for c in (" ", "\n", ""))
    return (
        LEADS.first_name
        + space
        + LEADS.last_name
        + newline
        + func.coalesce(LEADS.email, empty)
        + newline
        + func.coalesce(LEADS.phone, empty)
        + newline
        + func.coalesce(LEADS.company, empty)
    )


def _search(term: str) -> ColumnElement[bool]:
    # A field never holds a newline, so none in the term can match; dropping them also keeps a
    # match from spanning two fields of the document.
    term = term.replace("\n", " ").replace("\r", " ")
    terms = [term]
    # Phones are stored without separators, so "+1 (555) 010" must also find "+1555010...".
    phone_term = PHONE_SEPARATORS.sub("", term)
    if phone_term != term and PHONE_SHAPE.fullmatch(phone_term):
        terms.append(phone_term)
    return SqliteAlternative(_like_search(terms), _indexed_search(terms))


def _like_search(terms: list[str]) -> ColumnElement[bool]:
    """A case-insensitive substring match of any of `terms` over the document: PostgreSQL
    answers it from its trigram index (ix_leads_search_trgm); elsewhere it reads every lead."""
    document = search_document()
    return or_(*(document.ilike(f"%{escape_like(t)}%", escape=LIKE_ESCAPE) for t in terms))


def _indexed_search(terms: list[str]) -> ColumnElement[bool]:
    """`_like_search` answered from SQLite's trigram index (app/models/lead_search.py): every
    term of three characters or more in one MATCH (a phrase of trigrams is a substring match,
    case-folded like the LIKE); a shorter one has no trigram, so it still scans."""
    indexed = [t for t in terms if len(t) >= TRIGRAM_LENGTH]
    conditions = [_like_search([t]) for t in terms if len(t) < TRIGRAM_LENGTH]
    if indexed:
        query = " OR ".join(fts5_string(t) for t in indexed)
        matches = select(LEADS_SEARCH.c.rowid).where(
            LEADS_SEARCH.c.document.match(bindparam("search_match", query, unique=True))
        )
        conditions.insert(0, LEADS.id.in_(matches))
    return or_(*conditions)


def fts5_string(term: str) -> str:
    """`term` as an FTS5 string: a phrase, taken literally (no operators, no `%`/`_` magic)."""
    return '"' + term.replace('"', '""') + '"'


class SqliteAlternative(ColumnElement[bool]):
    """`default` on every database but SQLite, `sqlite` there: the SQL of a statement follows
    the dialect that compiles it, so the shared lead queries need no dialect of their own."""

    type = Boolean()
    inherit_cache = True
    _is_implicitly_boolean = True  # a condition already: no "= 1" after it on SQLite
    _traverse_internals = (
        ("default", InternalTraversal.dp_clauseelement),
        ("sqlite", InternalTraversal.dp_clauseelement),
    )

    def __init__(self, default: ColumnElement[bool], sqlite: ColumnElement[bool]) -> None:
        self.default = default
        self.sqlite = sqlite

    def self_group(self, against: Any = None) -> ColumnElement[Any]:
        # Inside an AND, an OR of two terms needs its parentheses, whichever branch renders.
        return SqliteAlternative(
            self.default.self_group(against=against), self.sqlite.self_group(against=against)
        )


@compiles(SqliteAlternative)
def _compile_default(element: SqliteAlternative, compiler: Any, **kw: Any) -> str:
    return compiler.process(element.default, **kw)


@compiles(SqliteAlternative, "sqlite")
def _compile_sqlite(element: SqliteAlternative, compiler: Any, **kw: Any) -> str:
    return compiler.process(element.sqlite, **kw)


def order_by(paging: LeadPaging, columns: Any = None) -> list[ColumnElement[Any]]:
    """The ORDER BY of a page, over the leads table or over `columns` (see `sort_column`)."""
    column = sort_column(paging.sort_by, columns)
    ascending = paging.sort_order == "asc"
    ordered = column.asc() if ascending else column.desc()
    if paging.sort_by in NULLABLE_SORTS:
        # Empty values last in both directions, the same on SQLite and PostgreSQL. Only where
        # there can be any: PostgreSQL cannot read a plain btree index backwards for
        # "DESC NULLS LAST", so on a NOT NULL column it would sort the whole match instead.
        ordered = ordered.nulls_last()
    # id breaks ties, so a page boundary never repeats or skips a row.
    ids = LEADS.id if columns is None else columns.id
    return [ordered, ids.asc() if ascending else ids.desc()]
