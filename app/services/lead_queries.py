"""The SQL of the lead reads, written once: `LeadService` runs these statements in its
session, `LeadReads` (app/services/lead_reads.py) wraps them with the caller's account check
and runs them through a reader. Nothing here touches a database."""

from __future__ import annotations

from collections import namedtuple
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from sqlalchemy import Float, Select, case, func, literal, select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.sql.selectable import ScalarSelect

from app.models import Lead, LeadSource, LeadStatus
from app.models.lead_stats import LeadStats
from app.schemas.filters import LeadFilters, LeadPaging
from app.schemas.lead import LEAD_STORED_FIELDS
from app.services.lead_filters import lead_conditions, order_by
from app.services.pagination import after, decode_cursor, encode_cursor

# The columns of a lead as the API shows it, in LeadRead's order (app/api/render.py zips a row
# with those names), for reads that need rows rather than ORM objects.
LEAD_COLUMNS = tuple(Lead.__table__.c[name] for name in LEAD_STORED_FIELDS)


def cursor_condition(filters: LeadFilters, paging: LeadPaging) -> ColumnElement[bool] | None:
    """The leads past `paging.cursor`; ValidationException for a cursor this API did not make
    for these filters and this sort."""
    if paging.cursor is None:
        return None
    return after(decode_cursor(paging.cursor, paging, filters.fingerprint(paging)))


def page_conditions(
    filters: LeadFilters,
    paging: LeadPaging,
    scope_user_id: int | None,
    beyond: ColumnElement[bool] | None = None,
) -> tuple[list[ColumnElement[bool]], list[ColumnElement[bool]]]:
    """The WHERE of the count (every match) and of the page (the matches past the cursor,
    `beyond`, or `cursor_condition`'s when not given)."""
    where = lead_conditions(filters, scope_user_id=scope_user_id)
    if beyond is None:
        beyond = cursor_condition(filters, paging)
    return where, where if beyond is None else [*where, beyond]


def page_rows(
    page_where: list[ColumnElement[bool]], paging: LeadPaging, *columns: Any
) -> Select[Any]:
    """The page's leads (`columns`, by default `LEAD_COLUMNS`), one more than asked for: is
    there a next page?"""
    return (
        select(*(columns or LEAD_COLUMNS))
        .where(*page_where)
        .order_by(*order_by(paging))
        .offset(paging.skip)
        .limit(paging.limit + 1)
    )


# A lead as a page shows it: a read-only tuple in LEAD_COLUMNS' order, with attribute access
# like a `Lead` (`row.status`), which is all the page and its cursor need of it.
LeadRow = namedtuple("LeadRow", LEAD_STORED_FIELDS)  # type: ignore[misc]


@dataclass
class LeadPageResult:
    items: list[Any]  # `LeadRow`s, or `Lead` objects from `LeadService.get_leads`
    total: int
    total_is_exact: bool
    next_cursor: str | None


def page_result(
    rows: list[Any], filters: LeadFilters, paging: LeadPaging, total: int, total_is_exact: bool
) -> LeadPageResult:
    """The page from `page_rows`' rows: the extra row only tells that there is a next page."""
    items = rows[: paging.limit]
    next_cursor = None
    if len(rows) > paging.limit:
        next_cursor = encode_cursor(items[-1], paging, filters.fingerprint(paging))
    return LeadPageResult(items, total, total_is_exact, next_cursor)


def match_count(where: list[ColumnElement[bool]], cap: int | None) -> Select[Any]:
    """How many leads match, counting at most `cap` + 1 of them (an exact count of a huge
    match costs a scan of all of it); None: all of them."""
    if cap is None:
        return select(func.count()).select_from(Lead).where(*where)
    limited = select(literal(1)).select_from(Lead).where(*where).limit(cap + 1).subquery()
    return select(func.count()).select_from(limited)


def page_with_total(
    where: list[ColumnElement[bool]],
    page_where: list[ColumnElement[bool]],
    paging: LeadPaging,
    cap: int | None,
    *,
    short_page_counts: bool,
) -> Select[Any]:
    """`page_rows` (LEAD_COLUMNS) with the total in front of every row (`match_count`'s
    figure), in one statement.

    `short_page_counts` (only for a page reached without a cursor): a page that is not full
    is its own count, `skip` plus its rows, and the count runs only where the page is full
    (both databases evaluate just the branch of the CASE taken). It is for the filters whose
    matches are costly to find, a search: a rare term's matches are then read once, not twice
    (PostgreSQL, a superuser's rare term at 1M leads: 4.8 ms to 2.8 ms of SQL). Elsewhere the
    plain shape is kept: measured when every request built its statement, the CTE cost the
    app about 0.4 ms a page, more than an indexed count of a short match costs the database.
    (`LeadReads.page` now keeps built statements, so that cost is paid once per query; whether
    the CTE could then serve every filter is not measured yet.)"""
    total: ColumnElement[Any] = match_count(where, cap).scalar_subquery()
    if not short_page_counts:
        return page_rows(page_where, paging, total, *LEAD_COLUMNS)
    page = page_rows(page_where, paging).cte("page")
    in_page = select(func.count()).select_from(page).scalar_subquery()
    total = case((in_page <= paging.limit, paging.skip + in_page), else_=total)
    return select(total, *page.c).order_by(*order_by(paging, page.c))


def counted(count: int, cap: int | None) -> tuple[int, bool]:
    """(total, exact) from `match_count`'s figure."""
    if cap is not None and count > cap:
        return cap, False
    return count, True


def statistics_groups(scope_user_id: int | None) -> Select[Any]:
    """The figures per (status, source) from `lead_stats`, which triggers keep up to date
    (app/models/lead_stats.py): an agent's are their at most 48 rows (a primary-key range),
    everyone's all rows summed; no lead is counted here."""
    query = select(
        LeadStats.status,
        LeadStats.source,
        func.sum(LeadStats.lead_count).label("lead_count"),
        func.sum(LeadStats.score_sum).label("score_sum"),
        func.sum(LeadStats.hot_count).label("hot_count"),
    ).group_by(LeadStats.status, LeadStats.source)
    if scope_user_id is not None:
        query = query.where(LeadStats.assignee_id == scope_user_id)
    return query


class duration(FunctionElement[Any]):
    """The time from the first datetime to the second: an interval on PostgreSQL (what the
    partial indexes on the WON leads' durations hold), fractional days on SQLite."""

    inherit_cache = True
    name = "duration"


@compiles(duration, "postgresql")
def _duration_postgresql(element: duration, compiler: SQLCompiler, **kw: Any) -> str:
    start, end = (compiler.process(c, **kw) for c in element.clauses)
    return f"({end} - {start})"


@compiles(duration, "sqlite")
def _duration_sqlite(element: duration, compiler: SQLCompiler, **kw: Any) -> str:
    start, end = (compiler.process(c, **kw) for c in element.clauses)
    return f"(julianday({end}) - julianday({start}))"


class in_days(FunctionElement[float]):
    """A `duration` as fractional days."""

    type = Float()
    inherit_cache = True
    name = "in_days"


@compiles(in_days, "postgresql")
def _in_days_postgresql(element: in_days, compiler: SQLCompiler, **kw: Any) -> str:
    return f"(EXTRACT(EPOCH FROM {compiler.process(element.clauses, **kw)}) / 86400.0)"


@compiles(in_days, "sqlite")
def _in_days_sqlite(element: in_days, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.clauses, **kw)


def median_days_to_won(scope: Any) -> ScalarSelect[Any]:
    """The median of the days from creation to WON (`status_changed_at`) over the live WON
    leads (of `scope`, a user id or a bound parameter; everyone's when None), NULL when there
    are none: the middle one or two of the sorted durations, found by LIMIT and OFFSET from
    their count. On PostgreSQL two partial indexes hold exactly those durations, sorted
    (everyone's, and per assignee), so both the count and the walk to the middle are index-only
    scans: about 20 ms over 60,000 WON leads, against half a second sorting them from the
    table. (percentile_cont would sort them too, and SQLite has no such function.)"""
    conditions = [Lead.status == LeadStatus.WON, Lead.archived_at.is_(None)]
    if scope is not None:
        conditions.append(Lead.assigned_to == scope)
    took = duration(Lead.created_at, Lead.status_changed_at)
    won = select(func.count().label("n")).where(*conditions).cte("won")
    count = select(won.c.n).scalar_subquery()
    middle = (
        select(took.label("took"))
        .where(*conditions)
        .order_by(took)
        .limit(2 - count % 2)
        .offset((count - 1) // 2)
        .subquery("middle")
    )
    return select(func.avg(in_days(middle.c.took))).scalar_subquery()


def statistics_of(groups: list[tuple], median_days: float | None = None) -> dict[str, Any]:
    """The pipeline figures from `statistics_groups`' rows (status, source, count, score sum,
    hot count) and `median_days_to_won`'s value; Python adds up the at most 48 groups."""
    by_status = dict.fromkeys((s.value for s in LeadStatus), 0)
    by_source = dict.fromkeys((s.value for s in LeadSource), 0)
    total = score_sum = hot = 0
    for status, source, lead_count, scores, hot_count in groups:
        count = int(lead_count)
        by_status[LeadStatus(status).value] += count
        by_source[LeadSource(source).value] += count
        total += count
        score_sum += int(scores)
        hot += int(hot_count)
    return {
        "total_leads": total,
        "leads_by_status": by_status,
        "leads_by_source": by_source,
        "average_lead_score": _ratio(score_sum, total, scale=1),
        "hot_leads_count": hot,
        "conversion_rate": _ratio(by_status[LeadStatus.WON.value], total, scale=100),
        "median_days_to_won": None if median_days is None else round(float(median_days), 2),
    }


def _ratio(part: int, whole: int, *, scale: int) -> float:
    if not whole:
        return 0.0
    value = Decimal(part) * scale / Decimal(whole)
    return float(value.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))
