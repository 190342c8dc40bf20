"""`LeadEvent`: one change to a lead, as data (issue 13).

The notes say what changed for people; an event says it for software (a timeline, time in
status, and later webhooks and the live stream). A write path adds its event in the same
transaction as the change, so a rolled-back change leaves none and a retried one leaves one.
Events are append-only (but for `dispatched_at`, the webhook dispatcher's mark) and outlive
their lead: `lead_id` has no foreign key.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base
from app.models.types import UTCDateTime

REQUEST_ID_MAX_LENGTH = 128


class LeadEventType(StrEnum):
    CREATED = "lead.created"
    UPDATED = "lead.updated"
    NOTE_ADDED = "lead.note_added"
    CALL_RECORDED = "lead.call_recorded"
    ARCHIVED = "lead.archived"
    RESTORED = "lead.restored"
    DELETED = "lead.deleted"
    ASSIGNED = "lead.assigned"
    STATUS_CHANGED = "lead.status_changed"
    MERGED = "lead.merged"
    UNMERGED = "lead.unmerged"


class LeadEvent(Base):
    __tablename__ = "lead_events"
    __table_args__ = (
        # A lead's history, newest first, paged by id.
        Index(None, "lead_id", "id"),
        # The events the webhook dispatcher has not handled yet: a handful, however many
        # events there are.
        Index(
            "ix_lead_events_undispatched",
            "id",
            postgresql_where=text("dispatched_at IS NULL"),
            sqlite_where=text("dispatched_at IS NULL"),
        ),
        # The live stream reads events in the order they were dispatched (app/services/
        # event_stream.py); the undispatched have none, and any number of nulls is allowed.
        Index(None, "dispatch_order", unique=True),
    )

    # Monotonic: BIGINT, since every change adds one; SQLite only auto-numbers INTEGER keys.
    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True
    )
    lead_id: Mapped[int] = mapped_column(Integer)
    type: Mapped[str] = mapped_column(String(32))
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # {"field": {"old": ..., "new": ...}} for every changed field, values as the API renders them.
    changes: Mapped[dict[str, Any]] = mapped_column(
        JSON().with_variant(postgresql.JSONB(), "postgresql")
    )
    note: Mapped[str | None] = mapped_column(Text)
    request_id: Mapped[str | None] = mapped_column(String(REQUEST_ID_MAX_LENGTH))
    lead_version: Mapped[int] = mapped_column(Integer)
    # Whose the lead was once the change was made: the live stream shows an agent the events of
    # their leads as they were then, not as they are when the stream is read. No foreign key:
    # events outlive accounts as they outlive leads.
    assigned_to: Mapped[int | None] = mapped_column(Integer)
    # The CSV import that made the change (app/models/lead_import.py), if one did.
    import_id: Mapped[int | None] = mapped_column(BigInteger().with_variant(Integer(), "sqlite"))
    # When the webhook dispatcher turned it into deliveries (app/services/webhook_dispatch.py). Null
    # until then: an event is dispatched once it is committed, however late its commit.
    dispatched_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Set with `dispatched_at`, greater than every order dispatched before. Dispatching is one
    # transaction at a time, so this is the order in which events became visible, which ids are
    # not: an event whose transaction commits late has a lower id than events already seen.
    dispatch_order: Mapped[int | None] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite")
    )

    def __repr__(self) -> str:
        return f"<LeadEvent {self.id} {self.type} lead={self.lead_id} v{self.lead_version}>"
