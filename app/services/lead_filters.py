"""Turning `get_leads` arguments into SQL: validation of every filter, the WHERE clause and the
ORDER BY. Kept apart from the service so the list query can be read (and tuned) in one place."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import case, func, literal_column, or_
from sqlalchemy.sql.elements import ColumnElement

from app.models import FieldValidationError, Lead, LeadSource, LeadStatus
from app.models.types import tags_overlap
from app.models.validation import PHONE_SEPARATORS, PHONE_SHAPE, normalize_tag
from app.services.exceptions import ValidationException

SORT_FIELDS = (
    "created_at",
    "updated_at",
    "lead_score",
    "last_name",
    "company",
    "status",
    "last_contact_date",
)
SORT_ORDERS = ("asc", "desc")
NULLABLE_SORTS = frozenset({"company", "last_contact_date"})
LIKE_ESCAPE = "\\"

# Statuses sort in pipeline order, not alphabetically: it is how a sales team reads them.
STATUS_POSITION = {status: position for position, status in enumerate(LeadStatus)}
STATUS_ORDER = case(
    {status.value: position for status, position in STATUS_POSITION.items()}, value=Lead.status
)


def sort_column(sort_by: str) -> ColumnElement[Any]:
    if sort_by == "status":
        return STATUS_ORDER
    return getattr(Lead, sort_by)


def escape_like(term: str) -> str:
    """Make `%`, `_` and the escape character itself match literally."""
    return (
        term.replace(LIKE_ESCAPE, LIKE_ESCAPE * 2)
        .replace("%", LIKE_ESCAPE + "%")
        .replace("_", LIKE_ESCAPE + "_")
    )


def _enum_values(enum_cls: type[Any], field_name: str, value: Any) -> list[Any]:
    if value is None:
        return []
    values = [value] if isinstance(value, str) or not isinstance(value, Iterable) else list(value)
    result = []
    for item in values:
        try:
            result.append(enum_cls(item.strip().upper() if isinstance(item, str) else item))
        except (ValueError, AttributeError):
            allowed = ", ".join(m.value for m in enum_cls)
            raise ValidationException(
                f"{field_name} must be one of {allowed}, not {item!r}.", field=field_name
            ) from None
    return list(dict.fromkeys(result))


def _as_bound(field_name: str, value: datetime | date | None, *, end: bool) -> datetime | None:
    """A datetime bound as given (naive = UTC); a plain date covers that whole UTC day."""
    if value is None:
        return None
    try:
        if isinstance(value, datetime):
            return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        if isinstance(value, date):
            day = datetime.combine(value, time.min, tzinfo=UTC)
            return day + timedelta(days=1) if end else day
    except OverflowError:
        raise ValidationException(
            f"{field_name} is outside the range of dates.", field=field_name
        ) from None
    raise ValidationException(f"{field_name} must be a date or date-time.", field=field_name)


def _score(field_name: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 100:
        raise ValidationException(
            f"{field_name} must be a whole number from 0 to 100, not {value!r}.", field=field_name
        )
    return value


def lead_conditions(
    *,
    status: Any = None,
    source: Any = None,
    assigned_to: int | None = None,
    date_range_start: datetime | date | None = None,
    date_range_end: datetime | date | None = None,
    lead_score_min: int | None = None,
    lead_score_max: int | None = None,
    search: str | None = None,
    is_hot_leads_only: bool = False,
    tags: Iterable[str] | str | None = None,
    include_archived: bool = False,
    scope_user_id: int | None = None,
) -> list[ColumnElement[bool]]:
    """Validate every list filter and return the WHERE conditions that apply them."""
    where: list[ColumnElement[bool]] = []

    statuses = _enum_values(LeadStatus, "status", status)
    if statuses:
        where.append(Lead.status.in_(statuses))
    sources = _enum_values(LeadSource, "source", source)
    if sources:
        where.append(Lead.source.in_(sources))

    if assigned_to is not None:
        if isinstance(assigned_to, bool) or not isinstance(assigned_to, int):
            raise ValidationException("assigned_to must be a user id.", field="assigned_to")
        where.append(Lead.assigned_to == assigned_to)
    if scope_user_id is not None:
        where.append(Lead.assigned_to == scope_user_id)

    start = _as_bound("date_range_start", date_range_start, end=False)
    end_is_date = isinstance(date_range_end, date) and not isinstance(date_range_end, datetime)
    end = _as_bound("date_range_end", date_range_end, end=True)
    # A date end bound is exclusive (the next midnight), a datetime one inclusive.
    if start is not None and end is not None and (start >= end if end_is_date else start > end):
        raise ValidationException(
            "date_range_start must not be after date_range_end.", field="date_range_start"
        )
    if start is not None:
        where.append(Lead.created_at >= start)
    if end is not None:
        where.append(Lead.created_at < end if end_is_date else Lead.created_at <= end)

    low = _score("lead_score_min", lead_score_min)
    high = _score("lead_score_max", lead_score_max)
    if low is not None and high is not None and low > high:
        raise ValidationException(
            "lead_score_min must not be greater than lead_score_max.", field="lead_score_min"
        )
    if low is not None:
        where.append(Lead.lead_score >= low)
    if high is not None:
        where.append(Lead.lead_score <= high)

    if search is not None:
        if not isinstance(search, str) or "\x00" in search:
            raise ValidationException("search must be text without NUL characters.", field="search")
        term = search.strip()
        if term:
            where.append(_search(term))

    if is_hot_leads_only:
        where.append(Lead.is_hot_lead)

    if tags is not None:
        if isinstance(tags, str):
            tags = [tags]
        try:
            wanted = list(dict.fromkeys(normalize_tag("tags", tag) for tag in tags))
        except FieldValidationError as exc:
            raise ValidationException(str(exc), field="tags") from None
        if wanted:
            where.append(tags_overlap(Lead.tags, wanted))

    if not include_archived:
        where.append(Lead.archived_at.is_(None))
    return where


def search_document() -> ColumnElement[str]:
    """The text `search` looks in: "first last", email, phone and company, one per line.

    It is spelled exactly like the trigram index in the migration
    `postgres_search_and_tag_indexes`, so PostgreSQL answers it from that index. The constants
    are literal SQL, not bound parameters, for the same reason.
    """
    space, newline, empty = (literal_column(f"'{c}'") for c in (" ", "\n", ""))
    return (
        Lead.first_name
        + space
        + Lead.last_name
        + newline
        + func.coalesce(Lead.email, empty)
        + newline
        + func.coalesce(Lead.phone, empty)
        + newline
        + func.coalesce(Lead.company, empty)
    )


def _search(term: str) -> ColumnElement[bool]:
    # A field never holds a newline, so none in the term can match; dropping them also keeps a
    # match from spanning two fields of the document.
    term = term.replace("\n", " ").replace("\r", " ")
    document = search_document()
    condition = document.ilike(f"%{escape_like(term)}%", escape=LIKE_ESCAPE)
    # Phones are stored without separators, so "+1 (555) 010" must also find "+1555010...".
    phone_term = PHONE_SEPARATORS.sub("", term)
    if phone_term != term and PHONE_SHAPE.fullmatch(phone_term):
        condition = or_(
            condition, document.ilike(f"%{escape_like(phone_term)}%", escape=LIKE_ESCAPE)
        )
    return condition


def order_by(sort_by: str, sort_order: str) -> list[ColumnElement[Any]]:
    if sort_by not in SORT_FIELDS:
        raise ValidationException(
            f"sort_by must be one of {', '.join(SORT_FIELDS)}, not {sort_by!r}.", field="sort_by"
        )
    direction = sort_order.lower() if isinstance(sort_order, str) else sort_order
    if direction not in SORT_ORDERS:
        raise ValidationException(
            f"sort_order must be 'asc' or 'desc', not {sort_order!r}.", field="sort_order"
        )
    column = sort_column(sort_by)
    ordered = column.asc() if direction == "asc" else column.desc()
    if sort_by in NULLABLE_SORTS:
        # Empty values last in both directions, the same on SQLite and PostgreSQL. Only where
        # there can be any: PostgreSQL cannot read a plain btree index backwards for
        # "DESC NULLS LAST", so on a NOT NULL column it would sort the whole match instead.
        ordered = ordered.nulls_last()
    # id breaks ties, so a page boundary never repeats or skips a row.
    return [ordered, Lead.id.asc() if direction == "asc" else Lead.id.desc()]


def page_bounds(skip: Any, limit: Any, max_limit: int) -> tuple[int, int]:
    if isinstance(skip, bool) or not isinstance(skip, int) or skip < 0:
        raise ValidationException(f"skip must be 0 or more, not {skip!r}.", field="skip")
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= max_limit:
        raise ValidationException(
            f"limit must be from 1 to {max_limit}, not {limit!r}.", field="limit"
        )
    return skip, limit
