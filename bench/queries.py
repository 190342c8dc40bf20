"""The list, detail and statistics SQL of the API, written out once for the floor.

`bench/floor_app.py` serves these queries and `bench/run.py` times them straight through
asyncpg. They mirror what `LeadService` sends for the same request (see
`app/services/lead_filters.py` and `app/services/lead_service.py`): the same WHERE conditions in
the same form (the search expression is spelled exactly like the trigram index, tags use `&&`),
the same ORDER BY (`created_at DESC, id DESC` by default; NULLS LAST on nullable keys only),
LIMIT (one row more than asked, to tell whether there is a next page) and OFFSET, the keyset
condition of a `cursor`, and a count.
When the API's SQL changes, change it here too: `bench/run.py` compares the floor's answers with
the API's before measuring and warns about any difference.

The count is exact, or, with `count_cap`, counts at most `count_cap + 1` matching rows (the
capped total issue 5 asks for: above the cap `total` is the cap and `total_is_exact` false).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

# Every column of `leads`, in the order LeadRead lists them.
LEAD_COLUMNS = (
    "id",
    "first_name",
    "last_name",
    "email",
    "phone",
    "company",
    "job_title",
    "source",
    "status",
    "assigned_to",
    "lead_score",
    "score_is_manual",
    "probability",
    "estimated_value",
    "tags",
    "notes",
    "call_attempts",
    "last_contact_date",
    "next_follow_up_date",
    "created_by",
    "created_at",
    "updated_at",
    "status_changed_at",
    "archived_at",
    "status_before_archive",
    "merged_into_id",
    "version",
)
SELECT_COLUMNS = ", ".join(f"leads.{name}" for name in LEAD_COLUMNS)

# Exactly the expression of the trigram index `ix_leads_search_trgm` (and of
# lead_filters.search_document), so PostgreSQL can answer `search` from that index.
SEARCH_DOCUMENT = (
    "leads.first_name || ' ' || leads.last_name || '\n' || coalesce(leads.email, '') || '\n' || "
    "coalesce(leads.phone, '') || '\n' || coalesce(leads.company, '')"
)
SORT_COLUMNS = {
    "created_at": "leads.created_at",
    "updated_at": "leads.updated_at",
    "lead_score": "leads.lead_score",
    "last_name": "leads.last_name",
    "company": "leads.company",
    "last_contact_date": "leads.last_contact_date",
    "status": (
        "CASE leads.status WHEN 'NEW' THEN 0 WHEN 'CONTACTED' THEN 1 WHEN 'QUALIFIED' THEN 2 "
        "WHEN 'PROPOSAL' THEN 3 WHEN 'NEGOTIATION' THEN 4 WHEN 'WON' THEN 5 WHEN 'LOST' THEN 6 "
        "WHEN 'CALLBACK' THEN 7 END"
    ),
}
NULLABLE_SORTS = frozenset({"company", "last_contact_date"})
DATETIME_SORTS = frozenset({"created_at", "updated_at", "last_contact_date"})
HOT_LEAD_MIN_SCORE = 80
CLOSED_STATUSES = ("WON", "LOST")
STATUSES = ("NEW", "CONTACTED", "QUALIFIED", "PROPOSAL", "NEGOTIATION", "WON", "LOST", "CALLBACK")
SOURCES = ("WEBSITE", "FACEBOOK", "INSTAGRAM", "WHATSAPP", "REFERRAL", "OTHER")
LIKE_ESCAPE = "\\"


@dataclass(frozen=True)
class ListQuery:
    """The filters of `GET /leads` that the benchmark uses, plus the agent scope the API adds
    for a non-superuser (`scope_user_id`)."""

    status: tuple[str, ...] = ()
    source: tuple[str, ...] = ()
    assigned_to: int | None = None
    lead_score_min: int | None = None
    lead_score_max: int | None = None
    search: str | None = None
    tags: tuple[str, ...] = ()
    scope_user_id: int | None = None
    skip: int = 0
    limit: int = 100
    sort_by: str = "created_at"
    sort_order: str = "desc"
    after: tuple[Any, int] | None = None  # a cursor's (sort value, id)

    @classmethod
    def from_params(cls, params: Mapping[str, Any], scope_user_id: int | None = None) -> ListQuery:
        """From query parameters as the API takes them (`status`, `tags` may be lists)."""

        def many(name: str) -> tuple[str, ...]:
            value = params.get(name)
            if value is None:
                return ()
            values = [value] if isinstance(value, str) else list(value)
            return tuple(dict.fromkeys(v.strip().upper() for v in values))

        def number(name: str) -> int | None:
            value = params.get(name)
            return None if value in (None, "") else int(value)

        sort_by = params.get("sort_by") or "created_at"
        sort_order = (params.get("sort_order") or "desc").lower()
        cursor = params.get("cursor")
        tags = params.get("tags")
        tag_values = () if tags is None else ([tags] if isinstance(tags, str) else list(tags))
        return cls(
            status=many("status"),
            source=many("source"),
            assigned_to=number("assigned_to"),
            lead_score_min=number("lead_score_min"),
            lead_score_max=number("lead_score_max"),
            search=params.get("search"),
            tags=tuple(dict.fromkeys(t.strip().lower() for t in tag_values)),
            scope_user_id=scope_user_id,
            skip=number("skip") or 0,
            limit=number("limit") or 100,
            sort_by=sort_by,
            sort_order=sort_order,
            after=decode_cursor(cursor, sort_by) if cursor else None,
        )


def encode_cursor(row: Mapping[str, Any], sort_by: str, sort_order: str) -> str:
    """The API's cursor (app/services/pagination.py): base64 of {"s", "o", "v", "i"}."""
    value = row[sort_by] if sort_by != "status" else STATUSES.index(row["status"])
    if isinstance(value, datetime):
        value = value.isoformat()
    document = {"s": sort_by, "o": sort_order, "v": value, "i": row["id"]}
    raw = json.dumps(document, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(token: str, sort_by: str) -> tuple[Any, int]:
    document = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    value = document["v"]
    if sort_by in DATETIME_SORTS and value is not None:
        value = datetime.fromisoformat(value)
    return value, int(document["i"])


@dataclass
class Sql:
    text: str
    args: list[Any] = field(default_factory=list)

    def arg(self, value: Any) -> str:
        self.args.append(value)
        return f"${len(self.args)}"


def _escape_like(term: str) -> str:
    return (
        term.replace(LIKE_ESCAPE, LIKE_ESCAPE * 2)
        .replace("%", LIKE_ESCAPE + "%")
        .replace("_", LIKE_ESCAPE + "_")
    )


def _where(query: ListQuery, sql: Sql) -> str:
    conditions = []
    if query.status:
        conditions.append(f"leads.status IN ({', '.join(sql.arg(s) for s in query.status)})")
    if query.source:
        conditions.append(f"leads.source IN ({', '.join(sql.arg(s) for s in query.source)})")
    if query.assigned_to is not None:
        conditions.append(f"leads.assigned_to = {sql.arg(query.assigned_to)}")
    if query.scope_user_id is not None:
        conditions.append(f"leads.assigned_to = {sql.arg(query.scope_user_id)}")
    if query.lead_score_min is not None:
        conditions.append(f"leads.lead_score >= {sql.arg(query.lead_score_min)}")
    if query.lead_score_max is not None:
        conditions.append(f"leads.lead_score <= {sql.arg(query.lead_score_max)}")
    term = (query.search or "").strip().replace("\n", " ").replace("\r", " ")
    if term:
        # (The API also tries a phone-number spelling of terms like "+1 (555) 010"; the
        # benchmark's terms are plain words.)
        pattern = sql.arg(f"%{_escape_like(term)}%")
        conditions.append(f"({SEARCH_DOCUMENT}) ILIKE {pattern} ESCAPE '\\'")
    if query.tags:
        conditions.append(f"(leads.tags && CAST({sql.arg(list(query.tags))} AS VARCHAR(50)[]))")
    conditions.append("leads.archived_at IS NULL")
    return " AND ".join(conditions)


def _after(query: ListQuery, sql: Sql) -> str:
    """The keyset condition: rows after the cursor's row (empty values last, ties by id)."""
    assert query.after is not None
    value, last_id = query.after
    column = SORT_COLUMNS[query.sort_by]
    less = "<" if query.sort_order == "desc" else ">"
    if query.sort_by not in NULLABLE_SORTS:
        return f"({column}, leads.id) {less} ({sql.arg(value)}, {sql.arg(last_id)})"
    beyond_id = f"leads.id {less} {sql.arg(last_id)}"
    if value is None:
        return f"({column} IS NULL AND {beyond_id})"
    mark = sql.arg(value)
    return f"({column} {less} {mark} OR ({column} = {mark} AND {beyond_id}) OR {column} IS NULL)"


def count_sql(query: ListQuery, count_cap: int | None = None) -> Sql:
    """How many leads match: exact, or at most `count_cap + 1`."""
    sql = Sql("")
    where = _where(query, sql)
    if count_cap is None:
        sql.text = f"SELECT count(*) FROM leads WHERE {where}"
    else:
        limit = sql.arg(count_cap + 1)
        sql.text = (
            f"SELECT count(*) FROM (SELECT 1 FROM leads WHERE {where} LIMIT {limit}) AS matching"
        )
    return sql


def page_sql(query: ListQuery) -> Sql:
    """The page, with one row more than asked when there is one (so there is a next page)."""
    sql = Sql("")
    where = _where(query, sql)
    if query.after is not None:
        where += " AND " + _after(query, sql)
    column = SORT_COLUMNS[query.sort_by]
    direction = "ASC" if query.sort_order == "asc" else "DESC"
    nulls = " NULLS LAST" if query.sort_by in NULLABLE_SORTS else ""  # as the API does
    limit, offset = sql.arg(query.limit + 1), sql.arg(query.skip)
    sql.text = (
        f"SELECT {SELECT_COLUMNS} FROM leads WHERE {where} "
        f"ORDER BY {column} {direction}{nulls}, leads.id {direction} "
        f"LIMIT {limit} OFFSET {offset}"
    )
    return sql


def detail_sql(lead_id: int) -> Sql:
    return Sql(f"SELECT {SELECT_COLUMNS} FROM leads WHERE leads.id = $1", [lead_id])


def statistics_sql(scope_user_id: int | None = None) -> Sql:
    """One GROUP BY (status, source); "hot" leaves out the "not archived" test the WHERE makes,
    as the API does, so every column is in the partial index ix_leads_statistics."""
    sql = Sql("")
    where = "leads.archived_at IS NULL"
    if scope_user_id is not None:
        where += f" AND leads.assigned_to = {sql.arg(scope_user_id)}"
    closed = ", ".join(f"'{s}'" for s in CLOSED_STATUSES)
    sql.text = (
        "SELECT leads.status, leads.source, count(*), coalesce(sum(leads.lead_score), 0), "
        f"coalesce(sum(CASE WHEN (leads.lead_score >= {HOT_LEAD_MIN_SCORE} "
        f"AND leads.status NOT IN ({closed})) THEN 1 ELSE 0 END), 0) "
        f"FROM leads WHERE {where} GROUP BY leads.status, leads.source"
    )
    return sql


# ------------------------------------------------------------------- response shaping (floor)


def lead_json(row: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    """A row as LeadRead shows it: every column plus the three derived fields."""
    lead = dict(row)
    created = lead["created_at"]
    contacted = lead["last_contact_date"]
    lead["days_since_created"] = (now - created).days
    lead["days_since_last_contact"] = None if contacted is None else (now - contacted).days
    lead["is_hot_lead"] = (
        lead["lead_score"] >= HOT_LEAD_MIN_SCORE
        and lead["status"] not in CLOSED_STATUSES
        and lead["archived_at"] is None
    )
    return lead


def page_json(
    rows: Iterable[Mapping[str, Any]],
    counted: int,
    query: ListQuery,
    count_cap: int | None,
) -> dict[str, Any]:
    now = datetime.now(UTC)
    rows = list(rows)
    items = rows[: query.limit]
    more = len(rows) > query.limit
    return {
        "items": [lead_json(row, now) for row in items],
        "total": counted if count_cap is None else min(counted, count_cap),
        "total_is_exact": count_cap is None or counted <= count_cap,
        "skip": query.skip,
        "limit": query.limit,
        "next_cursor": encode_cursor(items[-1], query.sort_by, query.sort_order) if more else None,
    }


def statistics_json(rows: Sequence[Sequence[Any]]) -> dict[str, Any]:
    """What LeadService.get_lead_statistics makes of the GROUP BY rows."""
    by_status = dict.fromkeys(STATUSES, 0)
    by_source = dict.fromkeys(SOURCES, 0)
    total = score_sum = hot = 0
    for status, source, count, scores, hot_count in rows:
        by_status[status] += count
        by_source[source] += count
        total += count
        score_sum += int(scores)
        hot += int(hot_count)
    return {
        "total_leads": total,
        "leads_by_status": by_status,
        "leads_by_source": by_source,
        "average_lead_score": _ratio(score_sum, total, scale=1),
        "hot_leads_count": hot,
        "conversion_rate": _ratio(by_status["WON"], total, scale=100),
    }


def _ratio(part: int, whole: int, *, scale: int) -> float:
    if not whole:
        return 0.0
    value = Decimal(part) * scale / Decimal(whole)
    return float(value.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))
