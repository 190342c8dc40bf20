"""A lead's history (issue 13): its events as the API shows them, and the time it spent in
each status. The query of `GET /leads/{id}/history` is `LeadHistoryQuery`, declared once."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.models import LeadEventType, LeadStatus
from app.schemas.common import SettingLimit, whole_number
from app.schemas.lead import LEAD_STORED_FIELDS

HISTORY_CURSOR_MAX_LENGTH = 200
LeadField = Literal[LEAD_STORED_FIELDS]  # type: ignore[valid-type]


class LeadHistoryQuery(BaseModel):
    """Which of the lead's events, newest first."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    limit: whole_number(Field(ge=1), SettingLimit("page_max_limit")) = Field(  # type: ignore[valid-type]
        50, description="Events per page."
    )
    cursor: Annotated[str, Field(max_length=HISTORY_CURSOR_MAX_LENGTH)] | None = Field(
        None, description="`next_cursor` of the previous page (with the same filters)."
    )
    type: list[LeadEventType] | None = Field(
        None, description="Only events of these types; repeat the parameter for several."
    )
    field: LeadField | None = Field(None, description="Only events that changed this field.")


class EventActor(BaseModel):
    id: int = Field(description="The user's id.")
    full_name: str = Field(description="The user's name, for a timeline to show.")


class FieldChange(BaseModel):
    old: Any = Field(description="The value before, as the lead shows it (null when erased).")
    new: Any = Field(description="The value after, as the lead shows it (null when erased).")


class LeadEventRead(BaseModel):
    id: int = Field(description="The event's id: later events have larger ones.")
    type: LeadEventType = Field(description="What happened.")
    actor: EventActor | None = Field(description="Who did it; null for the system.")
    occurred_at: datetime = Field(description="When.")
    changes: dict[str, FieldChange] = Field(description="Each field it changed: old and new.")
    note: str | None = Field(description="The text of a note, a call's or a bulk change's note.")
    lead_version: int = Field(description="The lead's version after this change.")


class LeadHistoryPage(BaseModel):
    items: list[LeadEventRead] = Field(description="Newest first.")
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null at the end."
    )


class StatusPeriod(BaseModel):
    status: LeadStatus = Field(description="The status.")
    entered_at: datetime = Field(description="When the lead got it.")
    left_at: datetime | None = Field(description="When it changed again; null for the current one.")
    seconds: float = Field(description="How long the lead had it (until now, for the current one).")


class LeadStatusHistory(BaseModel):
    items: list[StatusPeriod] = Field(description="Oldest first; the last is the current status.")
