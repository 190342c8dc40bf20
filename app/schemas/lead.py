"""Lead request and response bodies.

The schemas check shape, types, enums, lengths, ranges and patterns, so the OpenAPI document
tells a client exactly what is accepted; the model's validators still check everything again
(email syntax, trimming), because they guard every path, not only HTTP.

A field that may be left out but never set to null is typed `X | MISSING`: the OpenAPI
document then shows it optional and not nullable, and a generated client cannot send `null`
for it. `| None` appears only where null means something: clear this value (`company`,
`assigned_to`, the dates) or, for `lead_score`, "score it automatically".
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Self

from pydantic import (
    MISSING,
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from app.models import LeadSource, LeadStatus
from app.models.lead import COMPANY_MAX_LENGTH, JOB_TITLE_MAX_LENGTH, is_hot
from app.models.types import TAG_MAX_LENGTH
from app.models.validation import (
    EMAIL_MAX_LENGTH,
    MAX_INT32,
    NAME_MAX_LENGTH,
    NO_NUL_PATTERN,
    NOT_BLANK_PATTERN,
    PHONE_MAX_LENGTH,
    PHONE_PATTERN,
)
from app.schemas.common import (
    BodyId,
    Money,
    RequestBody,
    SettingLimit,
    UtcDateTime,
    given,
    json_int,
)
from app.schemas.filters import LeadFilters, json_filter

# Far beyond any real lead, and far enough below the 32-bit column limit that recording calls
# one by one can never overflow it.
CALL_ATTEMPTS_MAX = 1_000_000

Name = Annotated[str, Field(min_length=1, max_length=NAME_MAX_LENGTH, pattern=NOT_BLANK_PATTERN)]
Tag = Annotated[str, Field(min_length=1, max_length=TAG_MAX_LENGTH, pattern=NOT_BLANK_PATTERN)]
# Limits an operator may change are settings (see SettingLimit), not constants here.
NoteText = Annotated[
    str, Field(min_length=1, pattern=NOT_BLANK_PATTERN), SettingLimit("note_max_length")
]
Email = Annotated[
    str, Field(max_length=EMAIL_MAX_LENGTH, pattern=NO_NUL_PATTERN, examples=["jane@acme.com"])
]
Company = Annotated[str, Field(max_length=COMPANY_MAX_LENGTH, pattern=NO_NUL_PATTERN)]
JobTitle = Annotated[str, Field(max_length=JOB_TITLE_MAX_LENGTH, pattern=NO_NUL_PATTERN)]
EMAIL_DESCRIPTION = (
    "An email address (its syntax is checked, stricter than `format: email`; no DNS lookup). "
    "Blank or null means none."
)
Phone = Annotated[
    str, Field(max_length=PHONE_MAX_LENGTH, pattern=PHONE_PATTERN, examples=["+1 (555) 010-2030"])
]
PHONE_DESCRIPTION = (
    "7 to 15 digits, an optional leading +, spaces, dots, dashes and brackets anywhere; stored "
    "without the separators. Blank or null means none."
)
Score = json_int(Field(ge=0, le=100))
Probability = Annotated[StrictFloat, Field(ge=0.0, le=1.0)]
CallAttempts = json_int(Field(ge=0, le=CALL_ATTEMPTS_MAX))
Count = json_int(Field(ge=0, le=MAX_INT32))
Tags = Annotated[list[Tag], SettingLimit("tags_max_per_lead")]


def _lead_ids_are_distinct(ids: list[int]) -> list[int]:
    if len(set(ids)) != len(ids):
        raise ValueError("must not list an id twice")
    return ids


LeadIds = Annotated[
    list[BodyId],
    Field(
        min_length=1,
        json_schema_extra={"uniqueItems": True},
        description="Distinct lead ids.",
    ),
    SettingLimit("bulk_max_ids"),
    AfterValidator(_lead_ids_are_distinct),
]


class LeadFields(RequestBody):
    """The fields a client may send for a lead, each optional here: LeadCreate requires the
    names, LeadUpdate adds `score_is_manual`."""

    first_name: Name | MISSING = Field(MISSING, description="Trimmed; not blank.")
    last_name: Name | MISSING = Field(MISSING, description="Trimmed; not blank.")
    email: Email | MISSING | None = Field(MISSING, description=EMAIL_DESCRIPTION)
    phone: Phone | MISSING | None = Field(MISSING, description=PHONE_DESCRIPTION)
    company: Company | MISSING | None = Field(MISSING, description="Null or blank: none.")
    job_title: JobTitle | MISSING | None = Field(MISSING, description="Null or blank: none.")
    source: LeadSource | MISSING = Field(
        MISSING, description="Where the lead came from; a new lead without it: OTHER."
    )
    status: LeadStatus | MISSING = Field(
        MISSING, description="Pipeline stage; a new lead without it: NEW."
    )
    assigned_to: BodyId | MISSING | None = Field(
        MISSING,
        description="The owning agent. An agent's leads are the agent's own; a superuser may "
        "name any active user, or null for nobody.",
    )
    lead_score: Score | MISSING | None = Field(
        MISSING,
        description="A manual score, 0-100; null (or, for a new lead, none): scored automatically.",
    )
    probability: Probability | MISSING | None = Field(
        MISSING, description="Chance of winning, 0.0-1.0; null: none."
    )
    estimated_value: Money | MISSING | None = Field(
        MISSING, description="Expected deal value: 0 or more, at most 2 decimal places; null: none."
    )
    tags: Tags | MISSING | None = Field(
        MISSING,
        description="The tag set, stored trimmed and lowercased, duplicates dropped; [] or "
        "null: none.",
    )
    notes: NoteText | MISSING | None = Field(
        MISSING, description="A note to append to the history; null adds none."
    )
    call_attempts: CallAttempts | MISSING = Field(MISSING, description="Calls made so far.")
    last_contact_date: UtcDateTime | MISSING | None = Field(
        MISSING, description="When the lead was last contacted (ISO 8601, naive means UTC)."
    )
    next_follow_up_date: UtcDateTime | MISSING | None = Field(
        MISSING, description="When to follow up (ISO 8601, naive means UTC)."
    )


class LeadCreate(LeadFields):
    """A new lead: a first and last name, and an email or a phone number (or both).
    Scored automatically unless `lead_score` is given."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "first_name": "Jane",
                    "last_name": "Smith",
                    "email": "jane.smith@acme.com",
                    "phone": "+1 555 010 2030",
                    "company": "Acme Corp",
                    "source": "REFERRAL",
                    "tags": ["enterprise"],
                    "notes": "Met at the trade fair.",
                }
            ]
        },
    )

    first_name: Name = Field(description="Trimmed; not blank.")
    last_name: Name = Field(description="Trimmed; not blank.")
    assignment_rule_id: BodyId | MISSING = Field(
        MISSING,
        description="Superusers: the assignment rule that picks the assignee (instead of "
        "`assigned_to`); unassigned if none of its agents is active.",
    )

    def lead_data(self) -> dict[str, Any]:
        """The lead's own fields as sent, without `assignment_rule_id`."""
        return self.model_dump(exclude={"assignment_rule_id"}, exclude_unset=True)


class LeadUpdate(LeadFields):
    """A partial update: only the fields sent are changed, each change recorded in the notes.
    `notes` is appended, never replaces; `tags` replaces the set; `lead_score: null` hands the
    score back to automatic scoring. The lead must keep an email or a phone number."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"status": "CONTACTED", "notes": "Called, wants a demo."}]},
    )

    score_is_manual: StrictBool | MISSING = Field(
        MISSING, description="false returns to automatic scoring."
    )


class LeadRead(BaseModel):
    """A lead as stored, with three values derived from it."""

    model_config = ConfigDict(from_attributes=True)

    id: int = Field(description="The lead's id.")
    first_name: str = Field(description="First name.")
    last_name: str = Field(description="Last name.")
    email: str | None = Field(description="Email address, normalised.")
    phone: str | None = Field(description="Phone number without separators, e.g. +15550102030.")
    company: str | None = Field(description="Company.")
    job_title: str | None = Field(description="Job title.")
    source: LeadSource = Field(description="Where the lead came from.")
    status: LeadStatus = Field(description="Pipeline stage.")
    assigned_to: int | None = Field(description="The owning agent's user id, or null.")
    lead_score: int = Field(description="0-100, automatic unless `score_is_manual`.")
    score_is_manual: bool = Field(description="Whether the score was set by hand.")
    probability: float | None = Field(description="Chance of winning, 0.0-1.0.")
    estimated_value: Money | None = Field(description="Expected deal value.")
    tags: list[str] = Field(description="Tags, lowercased.")
    notes: str | None = Field(
        description="The history: one `[YYYY-MM-DD HH:MM UTC] user N: ...` line per change."
    )
    call_attempts: int = Field(description="Calls made so far.")
    last_contact_date: datetime | None = Field(description="When the lead was last contacted.")
    next_follow_up_date: datetime | None = Field(description="When to follow up.")
    created_by: int | None = Field(description="The user who created it.")
    created_at: datetime = Field(description="When it was created.")
    updated_at: datetime = Field(description="When it last changed.")
    status_changed_at: datetime = Field(
        description="When its current status began (its creation, if the status never changed)."
    )
    archived_at: datetime | None = Field(description="When it was archived; null if live.")
    status_before_archive: LeadStatus | None = Field(
        description="The status it had when archived; restoring gives it back."
    )
    merged_into_id: int | None = Field(
        description="The lead it was merged into (then it is archived); null otherwise."
    )
    version: int = Field(description="1 when created, one more on every change to the lead.")
    days_since_created: int = Field(description="Whole days since `created_at`.")
    days_since_last_contact: int | None = Field(
        description="Whole days since `last_contact_date`, null if never contacted."
    )
    is_hot_lead: bool = Field(description="Score 80 or more, still open, not archived.")


LEAD_DERIVED_FIELDS = ("days_since_created", "days_since_last_contact", "is_hot_lead")
# What a lead shows of its columns (not every column: `archive_added_tag` is bookkeeping).
LEAD_STORED_FIELDS = tuple(
    name for name in LeadRead.model_fields if name not in LEAD_DERIVED_FIELDS
)


class LeadPage(BaseModel):
    """One page of a list of leads."""

    items: list[LeadRead] = Field(description="The leads of this page, in the order asked for.")
    total: int = Field(
        description="How many leads match, counted up to a cap (10,000 by default): when "
        "`total_is_exact` is false there are more, so show it as '10,000+'."
    )
    total_is_exact: bool = Field(description="Whether `total` is the exact count.")
    skip: int = Field(description="The `skip` asked for.")
    limit: int = Field(description="The `limit` asked for.")
    next_cursor: str | None = Field(
        description="Pass as `cursor` to get the next page (same filters and sort); null on "
        "the last page. The way to walk a large result."
    )


class NoteCreate(RequestBody):
    model_config = ConfigDict(json_schema_extra={"examples": [{"text": "Sent the price list."}]})

    text: NoteText = Field(description="The note; it becomes one line of the history.")


class CallCreate(RequestBody):
    model_config = ConfigDict(json_schema_extra={"examples": [{"note": "Left a voicemail."}]})

    note: NoteText | MISSING | None = Field(MISSING, description="What happened on the call.")


BULK_SELECTION = (
    "Which leads: `lead_ids`, or `filter` (the list filters of `GET /leads`), exactly one of "
    "the two. With `filter`, `dry_run: true` answers how many leads it matches "
    '(`{"matched"}`) and changes nothing; a real call must send that count as '
    "`expected_count` (409 `match_count_changed` with the count now if the filter matches "
    "another number of leads by then). An agent's filter matches only their own leads; "
    "archived leads are never changed, so `filter.include_archived` must be false. More "
    "matches than BULK_MAX_IDS: 422, narrow the filter."
)


def _refuse_at(loc: tuple[str, ...], predicate: str, value: Any) -> None:
    """A rule between fields, reported at the field it is about."""
    error = InitErrorDetails(
        type=PydanticCustomError("value_error", predicate), loc=loc, input=value
    )
    raise ValidationError.from_exception_data("BulkSelection", [error])


class BulkSelection(RequestBody):
    """Which leads a bulk change is for: `lead_ids`, or `filter` with a preview (`dry_run`)
    and then the count it showed (`expected_count`)."""

    lead_ids: LeadIds | MISSING = Field(MISSING, description="Distinct lead ids (not with filter).")
    filter: LeadFilters | MISSING = Field(
        MISSING,
        description="The leads matching these list filters (not with lead_ids); "
        "`include_archived` must be false.",
    )
    dry_run: StrictBool = Field(
        False, description="With filter: answer `{matched}` and change nothing."
    )
    expected_count: Count | MISSING = Field(
        MISSING,
        description="With filter, required unless dry_run: the `matched` of the preview; the "
        "call changes nothing (409) if the filter matches another number of leads now.",
    )

    _strict_filter = field_validator("filter", mode="before")(json_filter)

    @model_validator(mode="after")
    def _one_selection(self) -> Self:
        by_ids, by_filter = self.lead_ids is not MISSING, self.filter is not MISSING
        if by_ids == by_filter:
            predicate = "must not be given with filter" if by_ids else "or filter is required"
            _refuse_at(("lead_ids",), predicate, given(self.lead_ids))
        if by_ids and self.dry_run:
            _refuse_at(("dry_run",), "is only for filter (a list of ids needs no preview)", True)
        if by_ids and self.expected_count is not MISSING:
            _refuse_at(("expected_count",), "is only for filter", self.expected_count)
        if by_filter and self.filter.include_archived:  # type: ignore[union-attr]
            _refuse_at(
                ("filter", "include_archived"),
                "must be false: archived leads cannot be changed in bulk (restore them first)",
                True,
            )
        if by_filter and not self.dry_run and self.expected_count is MISSING:
            _refuse_at(
                ("expected_count",),
                "is required with filter: send the `matched` of a dry_run",
                None,
            )
        return self

    @property
    def filters(self) -> LeadFilters | None:
        return given(self.filter)


# The selection's rules as JSON Schema: exactly one of lead_ids and filter; with lead_ids no
# preview and no expected_count; with filter, expected_count unless dry_run.
SELECTION_SCHEMA: dict[str, Any] = {
    "oneOf": [
        {
            "required": ["lead_ids"],
            "not": {"anyOf": [{"required": ["filter"]}, {"required": ["expected_count"]}]},
            "properties": {"dry_run": {"const": False}},
        },
        {
            "required": ["filter"],
            "not": {"required": ["lead_ids"]},
            "anyOf": [
                {"required": ["expected_count"]},
                {"required": ["dry_run"], "properties": {"dry_run": {"const": True}}},
            ],
        },
    ]
}


def _selection_schema(examples: list[dict[str, Any]]) -> dict[str, Any]:
    return {**SELECTION_SCHEMA, "examples": examples}


class BulkStatusUpdate(BulkSelection):
    model_config = ConfigDict(
        json_schema_extra=_selection_schema(
            [
                {"lead_ids": [101, 102], "status": "CONTACTED", "note": "Campaign"},
                {
                    "filter": {"status": ["NEW"], "tags": ["webinar"]},
                    "status": "CONTACTED",
                    "dry_run": True,
                },
                {
                    "filter": {"status": ["NEW"], "tags": ["webinar"]},
                    "status": "CONTACTED",
                    "expected_count": 42,
                },
            ]
        ),
    )

    status: LeadStatus = Field(description="The status every lead gets.")
    note: NoteText | MISSING | None = Field(MISSING, description="A note added to every lead.")


class BulkAssign(BulkSelection):
    model_config = ConfigDict(
        json_schema_extra=_selection_schema(
            [
                {"lead_ids": [101, 102], "agent_user_id": 7},
                {
                    "filter": {"assigned_to": 3, "status": ["NEW"]},
                    "agent_user_id": 7,
                    "dry_run": True,
                },
                {
                    "filter": {"assigned_to": 3, "status": ["NEW"]},
                    "agent_user_id": 7,
                    "expected_count": 12,
                },
            ]
        ),
    )

    agent_user_id: BodyId = Field(description="The active user who gets the leads.")


class BulkResult(BaseModel):
    """What a bulk change did."""

    updated_count: int = Field(description="How many leads changed.")
    lead_ids: list[int] = Field(description="Their ids, ascending.")


class BulkPreview(BaseModel):
    """What a bulk change by filter would change (`dry_run`): nothing was changed."""

    matched: int = Field(
        description="How many leads the filter matches now: send it as `expected_count`."
    )


class RescoreRequest(RequestBody):
    """Which leads to rescore, and whether only to count."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"filter": {"source": ["WEBSITE"]}, "dry_run": True}]},
    )

    filter: LeadFilters | MISSING = Field(
        MISSING,
        description="The leads matching these list filters (`GET /leads`'s); left out: every "
        "live lead. `include_archived` must be false: archived leads are not rescored.",
    )
    dry_run: StrictBool = Field(False, description="Count what would change; change nothing.")

    _strict_filter = field_validator("filter", mode="before")(json_filter)


class RescoreResult(BaseModel):
    """What a rescore changed (or, with dry_run, would change)."""

    matched: int = Field(description="How many leads the filter selects.")
    changed: int = Field(
        description="How many of them had an automatic score the rules now put otherwise, and "
        "got the new one in this call (with dry_run: would get it): at most BULK_MAX_IDS, "
        "the lowest ids first. Manual scores are never changed."
    )
    remaining: int = Field(
        description="How many more still have a stale score: call again until it is 0."
    )


def _counts_by(enum_cls: Any, what: str) -> type[BaseModel]:
    """An object with one count per member of `enum_cls`, every key always present, so that a
    generated client types it as exactly those keys."""
    fields: dict[str, Any] = {
        member.value: (int, Field(description=f"Leads {what} {member.value}."))
        for member in enum_cls
    }
    return create_model(f"LeadsBy{enum_cls.__name__.removeprefix('Lead')}", **fields)


LeadsByStatus = _counts_by(LeadStatus, "in status")
LeadsBySource = _counts_by(LeadSource, "from")


class LeadStatistics(BaseModel):
    """Pipeline figures over the leads the caller may see, archived ones left out."""

    total_leads: int = Field(description="Live leads.")
    leads_by_status: LeadsByStatus = Field(description="Live leads per status.")  # type: ignore[valid-type]
    leads_by_source: LeadsBySource = Field(description="Live leads per source.")  # type: ignore[valid-type]
    average_lead_score: float = Field(description="Mean score, rounded to 2 decimals.")
    hot_leads_count: int = Field(description="Hot leads: score 80+, open, not archived.")
    conversion_rate: float = Field(description="WON leads as a percentage of all leads.")
    median_days_to_won: float | None = Field(
        description="Median days from creation to WON over the live WON leads (rounded to 2 "
        "decimals); null when there are none."
    )


def lead_fields(lead: Any, now: datetime) -> dict[str, Any]:
    """What `LeadRead` shows of a lead (an ORM object or a `LeadRow`): its stored fields and
    the three derived ones. The API's responses (app/api/render.py) and the webhooks' bodies
    are made from it."""
    if isinstance(lead, tuple):  # a `LeadRow` (app/services/lead_queries.py)
        fields = dict(zip(LEAD_STORED_FIELDS, lead, strict=True))
    else:
        fields = {name: getattr(lead, name) for name in LEAD_STORED_FIELDS}
    contacted = fields["last_contact_date"]
    fields["days_since_created"] = (now - fields["created_at"]).days
    fields["days_since_last_contact"] = None if contacted is None else (now - contacted).days
    fields["is_hot_lead"] = is_hot(fields["lead_score"], fields["status"], fields["archived_at"])
    return fields
