"""`Webhook` and `WebhookDelivery`: subscriptions to lead events, and each event's delivery to
each matching subscription (issue 15).

A delivery is made from a committed `lead_events` row by the dispatcher
(app/workers/dispatcher.py), never by the transaction that wrote the event, so a rolled-back
change delivers nothing and a write path pays nothing for webhooks. Its body is rendered once,
when it is made, so every retry sends the same bytes under the same `webhook-id`.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base
from app.models.types import UTCDateTime

URL_MAX_LENGTH = 2048
DESCRIPTION_MAX_LENGTH = 500
SECRET_MAX_LENGTH = 64  # whsec_ + base64 of 32 bytes is 50
MESSAGE_ID_MAX_LENGTH = 64
ERROR_MAX_LENGTH = 1000  # the first 1,000 characters of the answer or of the network error


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


class Webhook(Base):
    __tablename__ = "webhooks"
    __table_args__ = ({"sqlite_autoincrement": True},)

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True
    )
    url: Mapped[str] = mapped_column(String(URL_MAX_LENGTH))
    # Event types (`lead.created`, ...) or ["*"].
    event_types: Mapped[list[str]] = mapped_column(JSON)
    description: Mapped[str | None] = mapped_column(String(DESCRIPTION_MAX_LENGTH))
    # A `LeadFilters` as JSON: only events whose lead matches it are delivered.
    filter: Mapped[dict[str, Any] | None] = mapped_column(
        JSON().with_variant(postgresql.JSONB(), "postgresql")
    )
    # Signing needs the secret itself, not a digest of it.
    secret: Mapped[str] = mapped_column(String(SECRET_MAX_LENGTH))
    # After a rotation the old secret signs beside the new one until then.
    previous_secret: Mapped[str | None] = mapped_column(String(SECRET_MAX_LENGTH))
    previous_secret_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    is_active: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    # Why it was deactivated by the worker (every delivery failing for too long), if it was.
    disabled_reason: Mapped[str | None] = mapped_column(String(200))
    # Since when every attempt has failed (null after a success): the deactivation clock.
    failing_since: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())

    def __repr__(self) -> str:
        return f"<Webhook {self.id} {self.url!r}{'' if self.is_active else ' (inactive)'}>"


class WebhookDelivery(Base):
    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        # A subscription's deliveries newest first: the listing.
        Index(None, "webhook_id", "id"),
        # Its queue: the pending ones in event order (the head is the first). Delivered ones
        # pile up; this stays the size of what is left to send.
        Index(
            "ix_webhook_deliveries_pending",
            "webhook_id",
            "id",
            postgresql_where=text("status = 'pending'"),
            sqlite_where=text("status = 'pending'"),
        ),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True
    )
    webhook_id: Mapped[int] = mapped_column(ForeignKey("webhooks.id", ondelete="CASCADE"))
    # The lead event delivered; null for a `webhook.test` message.
    event_id: Mapped[int | None] = mapped_column(BigInteger().with_variant(Integer(), "sqlite"))
    # `webhook-id`: the receiver's idempotency key, the same on every retry.
    message_id: Mapped[str] = mapped_column(String(MESSAGE_ID_MAX_LENGTH))
    event_type: Mapped[str] = mapped_column(String(32))
    payload: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(9))
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # A worker sending it holds it until then; a worker that died lets it go by itself.
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(String(ERROR_MAX_LENGTH))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    def __repr__(self) -> str:
        return f"<WebhookDelivery {self.id} {self.message_id} to {self.webhook_id}: {self.status}>"
