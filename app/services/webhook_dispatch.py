"""Committed lead events into webhook deliveries (issue 15).

`lead_events` is the outbox: every write path adds its event in the transaction of its change,
so an event exists exactly when its change was committed. `dispatched_at` is null until this
module has turned the event into one delivery per matching active subscription, in one
transaction with the mark, so an event is dispatched once, and a crash in between leaves it
undispatched, to be picked up again. Events are taken oldest first by one worker at a time
(on PostgreSQL a transaction-level advisory lock: a worker that does not get it leaves the
dispatching to the one that has it), so deliveries are made in event order, which is the
order a subscription's queue is sent in. An event committed late (its transaction began
early) is simply found later: nothing is skipped, as a cursor over ids could skip it.

With the mark goes `dispatch_order`, above every order given before: the order in which events
became visible, which the live stream follows (app/services/event_stream.py). On PostgreSQL a
dispatch that took events also NOTIFYs `EVENTS_CHANNEL`, which reaches every app process's
streams once it commits.

The body of each delivery is rendered here, once, so that every retry sends the same bytes:
the lead as it is read now, moments after the change was committed (see app/services/README.md
on what that means for a lead changed again within that moment).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Row, exists, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Lead, LeadEvent
from app.models.types import utcnow
from app.models.webhook import DeliveryStatus, Webhook, WebhookDelivery
from app.schemas.filters import LeadFilters
from app.schemas.lead import lead_fields
from app.schemas.webhook import ALL_EVENTS
from app.services.base import transactional
from app.services.lead_events import JSON_OPTIONS, json_default
from app.services.lead_filters import LEADS, lead_conditions

BATCH = 500
DISPATCH_LOCK = 4_711_2027  # any constant; names the dispatcher's advisory lock
# PostgreSQL: NOTIFYed by each dispatch that took events, once it commits; every app process
# LISTENs, to wake its live streams (app/workers/event_hub.py).
EVENTS_CHANNEL = "crm_lead_events"
# What `body` reads of an event.
EVENT_BODY_COLUMNS = (
    LeadEvent.id,
    LeadEvent.lead_id,
    LeadEvent.type,
    LeadEvent.actor_id,
    LeadEvent.occurred_at,
    LeadEvent.changes,
)


async def has_undispatched(db: AsyncSession) -> bool:
    """Whether any event waits for the dispatcher: a read, so an idle worker's poll takes no
    write lock (SQLite)."""
    return bool(await db.scalar(select(exists().where(LeadEvent.dispatched_at.is_(None)))))


@transactional
async def dispatch_events(db: AsyncSession, *, limit: int = BATCH) -> int:
    """Turn up to `limit` undispatched events into deliveries; how many events were taken
    (0 too when another worker is dispatching)."""
    if db.get_bind().dialect.name == "postgresql" and not await _dispatch_turn(db):
        return 0
    events = (
        await db.execute(
            select(*EVENT_BODY_COLUMNS)
            .where(LeadEvent.dispatched_at.is_(None))
            .order_by(LeadEvent.id)
            .limit(limit)
        )
    ).all()
    if not events:
        return 0
    now = utcnow()
    hooks = list(
        await db.scalars(select(Webhook).where(Webhook.is_active.is_(True)).order_by(Webhook.id))
    )
    if hooks:
        rows = await _deliveries(db, events, hooks, now)
        if rows:
            await db.execute(insert(WebhookDelivery), rows)
    # Each event's order: above every order given so far, by id within the batch (the stream
    # reads in this order; app/services/event_stream.py). Dispatches take turns, so the last
    # order is that of a committed dispatch.
    last = await db.scalar(select(func.max(LeadEvent.dispatch_order))) or 0
    shift = last + 1 - events[0].id
    await db.execute(
        update(LeadEvent)
        .where(LeadEvent.id.in_([event.id for event in events]))
        .values(dispatched_at=now, dispatch_order=LeadEvent.id + shift)
        .execution_options(synchronize_session=False)
    )
    if db.get_bind().dialect.name == "postgresql":
        await db.execute(select(func.pg_notify(EVENTS_CHANNEL, "")))
    return len(events)


async def _dispatch_turn(db: AsyncSession) -> bool:
    return bool(await db.scalar(select(func.pg_try_advisory_xact_lock(DISPATCH_LOCK))))


async def _deliveries(
    db: AsyncSession, events: Sequence[Row[Any]], hooks: list[Webhook], now: datetime
) -> list[dict[str, Any]]:
    lead_ids = sorted({event.lead_id for event in events})
    leads = {lead.id: lead for lead in await db.scalars(select(Lead).where(Lead.id.in_(lead_ids)))}
    # One statement per filtered subscription: which of these leads match its filter now.
    matching = {
        hook.id: await _matching(db, hook.filter, lead_ids) for hook in hooks if hook.filter
    }
    rows = []
    for event in events:
        payload = None
        for hook in hooks:
            if not _subscribed(hook, event.type):
                continue
            if hook.filter and event.lead_id not in matching[hook.id]:
                continue
            if payload is None:
                payload = body(event, leads.get(event.lead_id), now)
            rows.append(
                {
                    "webhook_id": hook.id,
                    "event_id": event.id,
                    "message_id": str(event.id),
                    "event_type": event.type,
                    "payload": payload,
                    "status": DeliveryStatus.PENDING.value,
                    "attempts": 0,
                    "next_attempt_at": now,
                    "created_at": now,
                }
            )
    return rows


def _subscribed(hook: Webhook, event_type: str) -> bool:
    return ALL_EVENTS in hook.event_types or event_type in hook.event_types


async def _matching(db: AsyncSession, stored: dict[str, Any], lead_ids: list[int]) -> set[int]:
    conditions = lead_conditions(LeadFilters.model_validate(stored))
    found = await db.scalars(select(LEADS.id).where(LEADS.id.in_(lead_ids), *conditions))
    return set(found)


def body(event: Row[Any], lead: Lead | None, now: datetime) -> str:
    """The JSON every delivery of the event sends (the webhook body of issue 15; the live
    stream sends the same)."""
    document = {
        "id": str(event.id),
        "type": event.type,
        "timestamp": event.occurred_at,
        "data": {
            "lead_id": event.lead_id,
            "lead": None if lead is None else lead_fields(lead, now),
            "changes": event.changes,
            "actor_id": event.actor_id,
        },
    }
    return orjson.dumps(document, default=json_default, option=JSON_OPTIONS).decode()
