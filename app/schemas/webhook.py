"""Webhook bodies (issue 15): a subscription as made, changed and shown (its secret shown only
when made or rotated), and its deliveries."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import MISSING, BaseModel, ConfigDict, Field, StrictBool, field_validator

from app.models.lead_event import LeadEventType
from app.models.validation import NO_NUL_PATTERN, NOT_BLANK_PATTERN
from app.models.webhook import DESCRIPTION_MAX_LENGTH, URL_MAX_LENGTH, DeliveryStatus
from app.schemas.common import RequestBody
from app.schemas.filters import LeadFilters, json_filter

ALL_EVENTS = "*"
TEST_EVENT = "webhook.test"
EventTypeName = Literal[tuple(t.value for t in LeadEventType)]  # type: ignore[valid-type]
Subscribed = EventTypeName | Literal["*"]  # type: ignore[valid-type]

Url = Annotated[str, Field(min_length=1, max_length=URL_MAX_LENGTH, pattern=NOT_BLANK_PATTERN)]
Description = Annotated[str, Field(max_length=DESCRIPTION_MAX_LENGTH, pattern=NO_NUL_PATTERN)]
EventTypes = Annotated[list[Subscribed], Field(min_length=1, max_length=len(LeadEventType) + 1)]

URL_RULE = (
    "Where to POST each event: https:// (http:// too outside production, or with "
    "WEBHOOK_ALLOW_HTTP); refused when its host is, or resolves to, an address of this machine "
    "or of a private network (unless WEBHOOK_ALLOW_PRIVATE_NETWORKS)."
)


def _distinct(value: list[str]) -> list[str]:
    return list(dict.fromkeys(value))


class WebhookCreate(RequestBody):
    """A new subscription. Its `secret` is in the answer, and never shown again."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "url": "https://hooks.example.com/crm",
                    "event_types": ["lead.created", "lead.status_changed"],
                    "description": "won deals to billing",
                    "filter": {"status": ["WON"]},
                }
            ]
        },
    )

    url: Url = Field(description=URL_RULE)
    event_types: EventTypes = Field(
        description='The event types to deliver, or `["*"]` for all of them.'
    )
    description: Description | None = Field(None, description="What it is for.")
    filter: LeadFilters | None = Field(
        None,
        description="Deliver only events whose lead matches these list filters after the "
        "change (archived leads only with `include_archived`); a deleted lead matches none.",
    )

    _distinct_types = field_validator("event_types")(_distinct)
    _strict_filter = field_validator("filter", mode="before")(json_filter)


class WebhookUpdate(RequestBody):
    """The fields to change; `filter: null` removes the filter. Turning `is_active` back on
    clears a deactivation by the worker."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"event_types": ["*"], "filter": None}]}
    )

    url: Url | MISSING = Field(MISSING, description=URL_RULE)
    event_types: EventTypes | MISSING = Field(MISSING, description='The event types, or `["*"]`.')
    description: Description | MISSING | None = Field(MISSING, description="What it is for.")
    filter: LeadFilters | MISSING | None = Field(MISSING, description="The lead filter, or null.")
    is_active: StrictBool | MISSING = Field(
        MISSING, description="Whether events are delivered to it."
    )

    _distinct_types = field_validator("event_types")(_distinct)
    _strict_filter = field_validator("filter", mode="before")(json_filter)


class WebhookRead(BaseModel):
    """A subscription, without its secret."""

    model_config = ConfigDict(from_attributes=True)

    id: int = Field(description="The subscription's id.")
    url: str = Field(description="Where events are POSTed.")
    event_types: list[str] = Field(description='Event types delivered, or `["*"]`.')
    description: str | None = Field(description="What it is for.")
    filter: dict[str, Any] | None = Field(description="The lead filter, if any.")
    is_active: bool = Field(description="Whether events are delivered to it.")
    disabled_reason: str | None = Field(
        description="Why the worker deactivated it (every delivery failing for "
        "WEBHOOK_DISABLE_AFTER_HOURS), if it did."
    )
    failing_since: datetime | None = Field(
        description="Since when every delivery attempt has failed; null while healthy."
    )
    previous_secret_expires_at: datetime | None = Field(
        description="After a rotation: until when the previous secret still signs too."
    )
    created_at: datetime = Field(description="When it was made.")
    updated_at: datetime = Field(description="When it last changed.")


class WebhookCreated(WebhookRead):
    """The subscription with its signing secret, shown this once."""

    secret: str = Field(
        description="`whsec_` + base64 of 32 random bytes: verify `webhook-signature` with it "
        "(Standard Webhooks)."
    )


class WebhookPage(BaseModel):
    items: list[WebhookRead] = Field(description="The subscriptions of this page, by id.")
    total: int = Field(description="How many there are.")
    skip: int = Field(description="The `skip` asked for.")
    limit: int = Field(description="The `limit` asked for.")


class DeliveryRead(BaseModel):
    """One event's delivery to one subscription."""

    model_config = ConfigDict(from_attributes=True)

    id: int = Field(description="The delivery's id.")
    webhook_id: int = Field(description="The subscription.")
    event_id: int | None = Field(description="The lead event delivered; null for a test.")
    message_id: str = Field(description="Its `webhook-id`, the same on every attempt.")
    event_type: str = Field(description="The event's type.")
    status: DeliveryStatus = Field(
        description="`pending` (to be sent, or retried), `delivered` or `failed` (for good)."
    )
    attempts: int = Field(description="Attempts made so far.")
    next_attempt_at: datetime | None = Field(
        description="When it is tried next, if pending (else when it last was due)."
    )
    last_attempt_at: datetime | None = Field(description="When it was last tried.")
    last_status_code: int | None = Field(description="The last answer's HTTP status.")
    last_error: str | None = Field(
        description="The last failed answer's body (its first 1,000 characters) or the error."
    )
    created_at: datetime = Field(description="When the event was queued for it.")
    delivered_at: datetime | None = Field(description="When a 2xx came back.")


class DeliveryPage(BaseModel):
    items: list[DeliveryRead] = Field(description="Deliveries, newest first.")
    next_cursor: str | None = Field(description="For the next page (`cursor=`), if there is one.")


class DeliveryQuery(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    status: DeliveryStatus | None = Field(None, description="Only deliveries in this state.")
    cursor: Annotated[str, Field(max_length=200)] | None = Field(
        None, description="`next_cursor` of the previous page (with the same `status`)."
    )
    limit: int = Field(50, ge=1, le=1000, description="Deliveries per page.")
