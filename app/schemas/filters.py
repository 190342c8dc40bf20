"""The list filters, declared once: `LeadFilters` is what `GET /leads` accepts as its query, what
`LeadService.get_leads`/`list_leads` are given, and what the SQL is built from
(`app.services.lead_filters.lead_conditions`). A new filter is added here and nowhere else:
the route, the OpenAPI document, the service and later every feature that selects leads by
filter (export, bulk changes, webhook filters) pick it up.

Paging and sorting are a second model, `LeadPaging`; `LeadListQuery` is the two together, the
query model of `GET /leads`, where any other parameter is a 422 naming it.

HTTP callers must send values exactly as the schema lists them (`status=NEW`). Python callers
may also pass one value where a list is expected, enum values in any case and any iterable:
`LeadFilters.from_python(status="new", tags="vip")` validates with that leniency.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta
from enum import Enum
from typing import Annotated, Any, Literal, Self

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from app.models import LeadSource, LeadStatus
from app.models.lead import COMPANY_MAX_LENGTH
from app.models.types import TAG_MAX_LENGTH
from app.models.validation import NO_NUL_PATTERN, NOT_BLANK_PATTERN, enum_member
from app.schemas.common import MAX_ID, DateBound, QueryId, SettingLimit, whole_number

SORT_FIELDS = (
    "created_at",
    "updated_at",
    "lead_score",
    "last_name",
    "company",
    "status",
    "last_contact_date",
)
SortField = Literal[SORT_FIELDS]  # type: ignore[valid-type]
SortOrder = Literal["asc", "desc"]
SEARCH_MAX_LENGTH = 200
TAGS_MAX_FILTER = 50
# Room for the longest cursor the API hands out: base64 of a sort value of up to 200 characters
# (a company) at up to 4 UTF-8 bytes each, and the rest of the cursor's document.
CURSOR_MAX_LENGTH = 4 * (4 * COMPANY_MAX_LENGTH + 200) // 3
# Python callers get the lenient reading (see the module docstring) through this context.
LENIENT = {"lenient": True}

Score = whole_number(Field(ge=0, le=100))
SearchText = Annotated[str, Field(max_length=SEARCH_MAX_LENGTH, pattern=NO_NUL_PATTERN)]
TagFilter = Annotated[
    str, Field(min_length=1, max_length=TAG_MAX_LENGTH, pattern=NOT_BLANK_PATTERN)
]


def _lenient(info: ValidationInfo) -> bool:
    return bool(info.context and info.context.get("lenient"))


class _FromPython(BaseModel):
    @classmethod
    def from_python(cls, **values: Any) -> Self:
        """Validated with the leniency Python callers get (see the module docstring)."""
        return cls.model_validate(values, context=LENIENT)


class LeadFilters(_FromPython):
    """Which leads: every filter given must match (archived leads only with
    `include_archived`). An agent's lists are limited to their own leads whatever these say."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    status: list[LeadStatus] | None = Field(
        None, description="Any of these statuses; repeat the parameter for several."
    )
    source: list[LeadSource] | None = Field(
        None, description="Any of these sources; repeat the parameter for several."
    )
    assigned_to: QueryId | None = Field(None, description="Only this user's leads.")
    date_range_start: DateBound | None = Field(
        None,
        description="Created at or after this: a date-time, or a date (from its midnight, UTC).",
    )
    date_range_end: DateBound | None = Field(
        None,
        description="Created at or before this date-time, or on or before this date (UTC).",
    )
    lead_score_min: Score | None = Field(None, description="Lowest lead score, 0-100.")
    lead_score_max: Score | None = Field(
        None, description="Highest lead score, 0-100; not below `lead_score_min`."
    )
    search: SearchText | None = Field(
        None, description="Case-insensitive text in the name, email, phone or company."
    )
    is_hot_leads_only: bool = Field(
        False, description="Only hot leads: score 80 or more, still open, not archived."
    )
    tags: Annotated[list[TagFilter], Field(max_length=TAGS_MAX_FILTER)] | None = Field(
        None, description="Leads having any of these tags (compared lowercased)."
    )
    include_archived: bool = Field(False, description="Include archived (soft-deleted) leads.")

    @field_validator("status", "source", mode="before")
    @classmethod
    def _enum_list(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None or not _lenient(info):
            return value
        enum_cls = LeadStatus if info.field_name == "status" else LeadSource
        values = _as_list(value)
        values = values if isinstance(values, list) else [values]
        return list(dict.fromkeys(enum_member(enum_cls, str(info.field_name), v) for v in values))

    @field_validator("tags", mode="before")
    @classmethod
    def _tag_list(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None or not _lenient(info):
            return value
        return _as_list(value)

    @model_validator(mode="after")
    def _ranges_in_order(self) -> LeadFilters:
        """A range whose ends are crossed matches nothing: surely a mistake, so say so,
        naming its start (the caller then sees which pair is meant)."""
        start, end, end_inclusive = self.created_range()
        if (
            start is not None
            and end is not None
            and (start > end if end_inclusive else start >= end)
        ):
            _refuse("date_range_start", "must not be after date range end", self.date_range_start)
        low, high = self.lead_score_min, self.lead_score_max
        if low is not None and high is not None and low > high:
            _refuse("lead_score_min", "must not be greater than lead score max", low)
        return self

    def created_range(self) -> tuple[datetime | None, datetime | None, bool]:
        """The `created_at` bounds in UTC, and whether the end is inclusive: a date end covers
        its whole day, so it is exclusive at the next midnight; a date-time end is inclusive."""
        end = self.date_range_end
        end_is_date = isinstance(end, date) and not isinstance(end, datetime)
        return _as_bound(self.date_range_start), _as_bound(end, end=True), not end_is_date

    def fingerprint(self, paging: LeadPaging) -> str:
        """A short digest of what a page was asked for (filters and sort), carried in its cursor,
        so that a cursor is not followed under other filters (it would start in the wrong
        place). Same filters in another order or case give the same digest."""
        canonical = self.model_dump(mode="json", include=set(LeadFilters.model_fields))
        for name, value in canonical.items():
            if isinstance(value, list):
                canonical[name] = sorted({str(v).strip().lower() for v in value})
        canonical["sort"] = [paging.sort_by, paging.sort_order]
        digest = hashlib.blake2b(
            orjson.dumps(canonical, option=orjson.OPT_SORT_KEYS), digest_size=6
        )
        return digest.hexdigest()


class LeadPaging(_FromPython):
    """Which page, in which order. Walk a large result with `cursor` (`next_cursor` of the
    previous page, same filters and sort), not `skip`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cursor: Annotated[str, Field(max_length=CURSOR_MAX_LENGTH)] | None = Field(
        None, description="`next_cursor` of the previous page."
    )
    skip: whole_number(Field(ge=0, le=MAX_ID)) = Field(  # type: ignore[valid-type]
        0, description="Leads to skip (not with `cursor`)."
    )
    limit: whole_number(Field(ge=1), SettingLimit("page_max_limit")) = Field(  # type: ignore[valid-type]
        100, description="Leads per page."
    )
    sort_by: SortField = Field("created_at", description="What the page is ordered by.")
    sort_order: SortOrder = Field("desc", description="asc or desc (newest first).")
    exact_total: bool = Field(
        False, description="Count every match, however many (slow on huge results)."
    )

    @field_validator("sort_order", mode="before")
    @classmethod
    def _any_case(cls, value: Any, info: ValidationInfo) -> Any:
        return value.strip().lower() if _lenient(info) and isinstance(value, str) else value

    @field_validator("skip")
    @classmethod
    def _skip_or_cursor(cls, skip: Any, info: ValidationInfo) -> Any:
        if skip and info.data.get("cursor") is not None:
            raise PydanticCustomError("value_error", "must not be given with a cursor")
        return skip


class LeadListQuery(LeadPaging, LeadFilters):
    """`GET /leads`'s query: the filters and the paging, and nothing else. It is both a
    `LeadFilters` and a `LeadPaging`, so the route hands it to the service as either."""


ExportFormat = Literal["csv", "jsonl"]


class LeadExportQuery(LeadFilters):
    """`GET /leads/export`'s query: the list filters, and how to write the leads."""

    format: ExportFormat = Field("csv", description="csv, or jsonl (one JSON lead per line).")
    bom: bool = Field(False, description="CSV only: start with a UTF-8 byte order mark, for Excel.")


def json_filter(value: Any) -> Any:
    """`LeadFilters` validated as the JSON it came in as, strictly: its types are made for
    query strings, where `"1"` is a number and `0` a flag, which a JSON body must not be. The
    `mode="before"` validator of a body's filter field (webhooks, bulk changes, rescoring)."""
    if isinstance(value, dict):
        return LeadFilters.model_validate_json(orjson.dumps(value), strict=True)
    return value


def _refuse(field: str, predicate: str, value: Any) -> None:
    """A cross-field error reported at one field, as a field's own error would be."""
    error = InitErrorDetails(
        type=PydanticCustomError("value_error", predicate), loc=(field,), input=value
    )
    raise ValidationError.from_exception_data("LeadFilters", [error])


def _as_list(value: Any) -> Any:
    """One value or any iterable of them, as a list (a Python caller's `status="NEW"`)."""
    if isinstance(value, str | Enum):
        return [value]
    if isinstance(value, Iterable) and not isinstance(value, bytes | dict):
        return list(value)
    return value  # not a list: pydantic refuses it with its usual message


def _as_bound(value: datetime | date | None, *, end: bool = False) -> datetime | None:
    """A datetime bound as given (already UTC); a plain date is its UTC day's first instant,
    or as an end the next day's."""
    if value is None or isinstance(value, datetime):
        return value
    day = datetime.combine(value, time.min, tzinfo=UTC)
    return day + timedelta(days=1) if end else day
