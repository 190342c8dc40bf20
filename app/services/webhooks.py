"""`WebhookService`: subscriptions to lead events (superusers only), and what can be done with
their deliveries (issue 15). Delivery itself is app/services/webhook_dispatch.py (events into
deliveries) and app/services/webhook_sending.py (deliveries out), run by app/workers/.

A URL is checked (app/services/webhook_urls.py) before the transaction that stores it, since
the check asks DNS and no call leaves the process while a transaction is open; the caller's
role is checked in a transaction of its own first, so nobody else can make the server resolve
names.
"""

from __future__ import annotations

import base64
import secrets
import uuid
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import orjson
from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import get_settings
from app.models import User
from app.models.types import utcnow
from app.models.webhook import DeliveryStatus, Webhook, WebhookDelivery
from app.schemas.filters import LeadFilters
from app.schemas.webhook import TEST_EVENT, DeliveryQuery
from app.services.base import load_by_id, require_superuser, transactional
from app.services.exceptions import (
    DeliveryNotFoundException,
    ValidationException,
    WebhookNotFoundException,
)
from app.services.lead_events import JSON_OPTIONS
from app.services.pagination import id_before, id_cursor
from app.services.webhook_urls import Resolver, UnsafeUrl, check_url, system_resolver

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
PREVIOUS_SECRET_LIFETIME = timedelta(hours=24)
OTHER_STATUS = "was made for another status; ask with the same one, or start again"
UPDATABLE = frozenset({"url", "event_types", "description", "filter", "is_active"})


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def stored_filter(filters: LeadFilters | Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A filter as kept in `webhooks.filter`: only what was given, as JSON."""
    if filters is None:
        return None
    if not isinstance(filters, LeadFilters):
        filters = LeadFilters.model_validate(filters)
    return filters.model_dump(mode="json", exclude_defaults=True)


async def _checked_url(url: str, resolve: Resolver) -> None:
    try:
        await check_url(url, get_settings(), resolve=resolve)
    except UnsafeUrl as exc:
        raise ValidationException.at("url", str(exc)) from None


class WebhookService:
    @staticmethod
    async def create(
        db: AsyncSession,
        data: Mapping[str, Any],
        *,
        acting_user_id: int,
        resolve: Resolver = system_resolver,
    ) -> Webhook:
        """A new subscription, active, with a new secret (`Webhook.secret`)."""
        await _superuser(db, acting_user_id)
        await _checked_url(data["url"], resolve)
        return await _create(db, data, acting_user_id)

    @staticmethod
    @transactional
    async def list_webhooks(
        db: AsyncSession, *, acting_user_id: int, skip: int = 0, limit: int = 100
    ) -> tuple[list[Webhook], int]:
        await _require_superuser(db, acting_user_id)
        total = await db.scalar(select(func.count()).select_from(Webhook))
        rows = await db.scalars(select(Webhook).order_by(Webhook.id).offset(skip).limit(limit))
        return list(rows), int(total or 0)

    @staticmethod
    @transactional
    async def get(db: AsyncSession, webhook_id: int, *, acting_user_id: int) -> Webhook:
        await _require_superuser(db, acting_user_id)
        return await _load(db, webhook_id)

    @staticmethod
    async def update(
        db: AsyncSession,
        webhook_id: int,
        data: Mapping[str, Any],
        *,
        acting_user_id: int,
        resolve: Resolver = system_resolver,
    ) -> Webhook:
        """Change what was sent; a new URL is checked as at creation."""
        await _superuser(db, acting_user_id)
        if data.get("url") is not None:
            await _checked_url(data["url"], resolve)
        return await _update(db, webhook_id, data, acting_user_id)

    @staticmethod
    @transactional
    async def delete(db: AsyncSession, webhook_id: int, *, acting_user_id: int) -> None:
        """Remove the subscription and its deliveries: nothing more is sent to it."""
        await _require_superuser(db, acting_user_id)
        deleted = await db.execute(
            delete(Webhook)
            .where(Webhook.id == webhook_id)
            .execution_options(synchronize_session=False)
        )
        if not deleted.rowcount:  # type: ignore[attr-defined]
            raise WebhookNotFoundException(webhook_id)

    @staticmethod
    @transactional
    async def rotate_secret(db: AsyncSession, webhook_id: int, *, acting_user_id: int) -> Webhook:
        """A new secret; the one it replaces signs beside it for 24 hours, so a receiver can
        switch without losing a delivery."""
        await _require_superuser(db, acting_user_id)
        row = await _load(db, webhook_id, for_update=True)
        now = utcnow()
        row.previous_secret, row.secret = row.secret, new_secret()
        row.previous_secret_expires_at = now + PREVIOUS_SECRET_LIFETIME
        row.updated_at = now
        await db.flush()
        return row

    @staticmethod
    @transactional
    async def queue_test(
        db: AsyncSession, webhook_id: int, *, acting_user_id: int
    ) -> WebhookDelivery:
        """A `webhook.test` message to this subscription alone, sent like any event."""
        await _require_superuser(db, acting_user_id)
        row = await _load(db, webhook_id)
        now = utcnow()
        message_id = f"test_{uuid.uuid4().hex}"
        body = {
            "id": message_id,
            "type": TEST_EVENT,
            "timestamp": now,
            "data": {"webhook_id": row.id},
        }
        delivery = WebhookDelivery(
            webhook_id=row.id,
            event_id=None,
            message_id=message_id,
            event_type=TEST_EVENT,
            payload=orjson.dumps(body, option=JSON_OPTIONS).decode(),
            status=DeliveryStatus.PENDING.value,
            attempts=0,
            next_attempt_at=now,
            created_at=now,
        )
        db.add(delivery)
        await db.flush()
        return delivery

    @staticmethod
    @transactional
    async def list_deliveries(
        db: AsyncSession, webhook_id: int, query: DeliveryQuery, *, acting_user_id: int
    ) -> tuple[list[WebhookDelivery], str | None]:
        """The subscription's deliveries, newest first, a page at a time."""
        await _require_superuser(db, acting_user_id)
        await _load(db, webhook_id)
        conditions = [WebhookDelivery.webhook_id == webhook_id]
        if query.status is not None:
            conditions.append(WebhookDelivery.status == query.status.value)
        before = id_before(query.cursor, _status_key(query), OTHER_STATUS)
        if before is not None:
            conditions.append(WebhookDelivery.id < before)
        rows = list(
            await db.scalars(
                select(WebhookDelivery)
                .where(*conditions)
                .order_by(WebhookDelivery.id.desc())
                .limit(query.limit + 1)
            )
        )
        next_cursor = None
        if len(rows) > query.limit:
            rows = rows[: query.limit]
            next_cursor = id_cursor(rows[-1].id, _status_key(query))
        return rows, next_cursor

    @staticmethod
    @transactional
    async def retry_delivery(
        db: AsyncSession, webhook_id: int, delivery_id: int, *, acting_user_id: int
    ) -> WebhookDelivery:
        """Send it again at once, whatever became of it (a receiver that lost a delivered one
        may ask for it again): pending, due now, its attempts kept."""
        await _require_superuser(db, acting_user_id)
        await _load(db, webhook_id)
        row = await db.scalar(
            select(WebhookDelivery)
            .where(WebhookDelivery.id == delivery_id, WebhookDelivery.webhook_id == webhook_id)
            .with_for_update()
        )
        if row is None:
            raise DeliveryNotFoundException(delivery_id)
        row.status = DeliveryStatus.PENDING.value
        row.next_attempt_at = utcnow()
        row.lease_until = None
        row.delivered_at = None
        await db.flush()
        return row


def _status_key(query: DeliveryQuery) -> str:
    return query.status.value if query.status is not None else ""


@transactional
async def _superuser(db: AsyncSession, acting_user_id: int) -> User:
    return await _require_superuser(db, acting_user_id)


async def _require_superuser(db: AsyncSession, acting_user_id: int) -> User:
    return await require_superuser(db, acting_user_id, "webhooks")


async def _load(db: AsyncSession, webhook_id: int, *, for_update: bool = False) -> Webhook:
    return await load_by_id(
        db, Webhook, webhook_id, WebhookNotFoundException, for_update=for_update
    )


@transactional
async def _create(db: AsyncSession, data: Mapping[str, Any], acting_user_id: int) -> Webhook:
    await _require_superuser(db, acting_user_id)
    now = utcnow()
    row = Webhook(
        url=data["url"],
        event_types=list(data["event_types"]),
        description=data.get("description"),
        filter=stored_filter(data.get("filter")),
        secret=new_secret(),
        is_active=True,
        created_by=acting_user_id,
        created_at=now,
        updated_at=now,
    )
    db.add(row)
    await db.flush()
    return row


@transactional
async def _update(
    db: AsyncSession, webhook_id: int, data: Mapping[str, Any], acting_user_id: int
) -> Webhook:
    await _require_superuser(db, acting_user_id)
    row = await _load(db, webhook_id, for_update=True)
    unknown = set(data) - UPDATABLE
    if unknown:
        raise ValidationException.at(sorted(unknown)[0], "cannot be changed")
    for name, value in data.items():
        if name == "url" and value is None:
            raise ValidationException.at("url", "cannot be null")
        if name == "event_types":
            if value is None:
                raise ValidationException.at("event_types", "cannot be null")
            value = list(value)
        if name == "filter":
            value = stored_filter(value)
        if name == "is_active":
            if value is None:
                raise ValidationException.at("is_active", "cannot be null")
            if value:  # back on: the worker's deactivation is over
                row.disabled_reason = None
                row.failing_since = None
        setattr(row, name, value)
    row.updated_at = utcnow()
    await db.flush()
    return row


async def deactivate_for_failures(db: AsyncSession, webhook_ids: list[int], hours: float) -> None:
    """Turn off subscriptions whose every attempt has failed for `hours` (the worker's call)."""
    if not webhook_ids:
        return
    await db.execute(
        update(Webhook)
        .where(Webhook.id.in_(webhook_ids), Webhook.is_active.is_(True))
        .values(
            is_active=False,
            disabled_reason=f"every delivery failed for {hours:g} hours",
            updated_at=utcnow(),
        )
        .execution_options(synchronize_session=False)
    )
