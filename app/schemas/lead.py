"""Lead request and response bodies.

The schemas check shape, types, enums, lengths and ranges, so the OpenAPI document tells a
client exactly what is accepted; the model's validators still check everything again (email
syntax, phone form, trimming), because they guard every path, not only HTTP.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainSerializer

from app.models import LeadSource, LeadStatus
from app.models.lead import COMPANY_MAX_LENGTH, JOB_TITLE_MAX_LENGTH
from app.models.types import TAG_MAX_LENGTH
from app.models.validation import EMAIL_MAX_LENGTH, NAME_MAX_LENGTH
from app.schemas.common import RequestBody, SettingLimit, UtcDateTime

MAX_ID = 2**31 - 1  # ids are 32-bit integers in the database
# Far beyond any real lead, and far enough below the 32-bit column limit that recording calls
# one by one can never overflow it.
CALL_ATTEMPTS_MAX = 1_000_000

DbId = Annotated[int, Field(ge=1, le=MAX_ID)]
Name = Annotated[str, Field(min_length=1, max_length=NAME_MAX_LENGTH)]
Tag = Annotated[str, Field(min_length=1, max_length=TAG_MAX_LENGTH)]
# Limits an operator may change are settings (see SettingLimit), not constants here.
NoteText = Annotated[str, Field(min_length=1), SettingLimit("note_max_length")]
Money = Annotated[
    Decimal,
    Field(ge=0, max_digits=15, decimal_places=2),
    PlainSerializer(float, return_type=float, when_used="json"),
]


def _unique_ids(ids: list[int]) -> list[int]:
    if len(set(ids)) != len(ids):
        raise ValueError("lead ids must not repeat")
    return ids


LeadIds = Annotated[
    list[DbId],
    Field(min_length=1),
    SettingLimit("bulk_max_ids"),
    AfterValidator(_unique_ids),
]


class LeadFields(RequestBody):
    """Fields a client may send, all optional here; LeadCreate makes the names required."""

    model_config = ConfigDict(extra="forbid")

    first_name: Name | None = None
    last_name: Name | None = None
    email: Annotated[str, Field(max_length=EMAIL_MAX_LENGTH, examples=["jane@acme.com"])] | None = (
        None
    )
    phone: Annotated[str, Field(max_length=40, examples=["+1 (555) 010-2030"])] | None = None
    company: Annotated[str, Field(max_length=COMPANY_MAX_LENGTH)] | None = None
    job_title: Annotated[str, Field(max_length=JOB_TITLE_MAX_LENGTH)] | None = None
    source: LeadSource | None = None
    status: LeadStatus | None = None
    assigned_to: DbId | None = None
    lead_score: Annotated[int, Field(ge=0, le=100)] | None = None
    probability: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    estimated_value: Money | None = None
    tags: Annotated[list[Tag], SettingLimit("tags_max_per_lead")] | None = None
    notes: NoteText | None = None
    call_attempts: Annotated[int, Field(ge=0, le=CALL_ATTEMPTS_MAX)] | None = None
    last_contact_date: UtcDateTime | None = None
    next_follow_up_date: UtcDateTime | None = None


class LeadCreate(LeadFields):
    first_name: Name
    last_name: Name

    model_config = ConfigDict(
        extra="forbid",
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


class LeadUpdate(LeadFields):
    """A partial update: only the fields sent are changed. `notes` is appended, never replaces;
    `tags` replaces the set; `lead_score: null` hands the score back to automatic scoring."""

    score_is_manual: bool | None = None

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"status": "CONTACTED", "notes": "Called, wants a demo."}]},
    )


class LeadRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    first_name: str
    last_name: str
    email: str | None
    phone: str | None
    company: str | None
    job_title: str | None
    source: LeadSource
    status: LeadStatus
    assigned_to: int | None
    lead_score: int
    score_is_manual: bool
    probability: float | None
    estimated_value: Money | None
    tags: list[str]
    notes: str | None
    call_attempts: int
    last_contact_date: datetime | None
    next_follow_up_date: datetime | None
    created_by: int | None
    created_at: datetime
    updated_at: datetime
    archived_at: datetime | None
    status_before_archive: LeadStatus | None
    days_since_created: int
    days_since_last_contact: int | None
    is_hot_lead: bool


class LeadPage(BaseModel):
    items: list[LeadRead]
    total: int = Field(
        description="How many leads match, counted up to a cap (10,000 by default): when "
        "`total_is_exact` is false there are more, so show it as '10,000+'."
    )
    total_is_exact: bool
    skip: int
    limit: int
    next_cursor: str | None = Field(
        description="Pass as `cursor` to get the next page (same filters and sort); null on "
        "the last page. The way to walk a large result."
    )


class NoteCreate(RequestBody):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"text": "Sent the price list."}]}
    )

    text: NoteText


class CallCreate(RequestBody):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"note": "Left a voicemail."}]}
    )

    note: NoteText | None = None


class BulkStatusUpdate(RequestBody):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"lead_ids": [101, 102], "status": "CONTACTED", "note": "Campaign"}]
        },
    )

    lead_ids: LeadIds
    status: LeadStatus
    note: NoteText | None = None


class BulkAssign(RequestBody):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"lead_ids": [101, 102], "agent_user_id": 7}]},
    )

    lead_ids: LeadIds
    agent_user_id: DbId


class BulkResult(BaseModel):
    updated_count: int
    lead_ids: list[int]


class LeadStatistics(BaseModel):
    total_leads: int
    leads_by_status: dict[LeadStatus, int]
    leads_by_source: dict[LeadSource, int]
    average_lead_score: float
    hot_leads_count: int
    conversion_rate: float = Field(description="WON leads as a percentage of all leads.")
