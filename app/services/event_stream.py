"""The live event stream's reads (issue 15): committed lead events after a point, in the order
they became visible, scoped as the lists are.

The stream follows `lead_events.dispatch_order`, not ids. An id is taken when an event is
written and its transaction may commit after later ids have been read, so a reader walking ids
would skip it. The dispatcher (app/services/webhook_dispatch.py) gives each committed event its
order, one transaction at a time, each order above all before it: a reader that has seen order
N has seen every event that will ever have an order up to N. Resuming after an event
(`Last-Event-ID`) is resuming after its order.

An agent sees the events of the leads that were theirs when the change was made
(`lead_events.assigned_to`), and the event that took a lead away from them. The lead in each
body is read now, and shown only to whom may read it now (a superuser, or its assignee): an
event of a lead since given to someone else carries `lead: null`, as after a hard delete.

Every page checks the caller's account again, so a stream ends within one wait of its account
being deactivated or its session ended.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Lead, LeadEvent
from app.models.types import utcnow
from app.services.base import SessionOpener, transactional
from app.services.exceptions import InvalidHeaderException
from app.services.lead_reads import caller_user
from app.services.pagination import MAX_ROW_ID
from app.services.security import AccessClaims
from app.services.webhook_dispatch import EVENT_BODY_COLUMNS, body

PAGE = 200
LAST_EVENT_ID = "Last-Event-ID"
NOT_SENT = "must be the id of an event this stream sent"

_STREAMED = (LeadEvent.dispatch_order, *EVENT_BODY_COLUMNS)


@dataclass(frozen=True, slots=True)
class StreamedEvent:
    order: int  # where the stream stands once it is sent
    id: int
    type: str
    body: str  # the JSON a webhook delivery of the event sends


class EventStream:
    @staticmethod
    @transactional
    async def start(db: AsyncSession, caller: AccessClaims, last_event_id: str | None) -> int:
        """Where a stream opened now begins: after the event `last_event_id` names, or (none
        named) after every event dispatched so far. InvalidHeaderException for an id that is
        no event the stream has sent."""
        await caller_user(db, caller)
        if last_event_id is None:
            latest = await db.scalar(select(func.max(LeadEvent.dispatch_order)))
            return latest or 0
        event_id = _event_id(last_event_id)
        order = await db.scalar(select(LeadEvent.dispatch_order).where(LeadEvent.id == event_id))
        if order is None:
            raise InvalidHeaderException(LAST_EVENT_ID, NOT_SENT)
        return int(order)

    @staticmethod
    @transactional
    async def after(
        db: AsyncSession, caller: AccessClaims, order: int, limit: int = PAGE
    ) -> list[StreamedEvent]:
        """The caller's next events after `order`, oldest first, at most `limit`."""
        user = await caller_user(db, caller)
        conditions = [LeadEvent.dispatch_order > order]
        if not user.is_superuser:
            taken_away = LeadEvent.changes["assigned_to"]["old"].as_integer() == user.id
            conditions.append(or_(LeadEvent.assigned_to == user.id, taken_away))
        statement = (
            select(*_STREAMED).where(*conditions).order_by(LeadEvent.dispatch_order).limit(limit)
        )
        events = (await db.execute(statement)).all()
        if not events:
            return []
        readable = [Lead.id.in_({event.lead_id for event in events})]
        if not user.is_superuser:
            readable.append(Lead.assigned_to == user.id)
        leads = {lead.id: lead for lead in await db.scalars(select(Lead).where(*readable))}
        now = utcnow()
        return [
            StreamedEvent(
                event.dispatch_order,
                event.id,
                event.type,
                body(event, leads.get(event.lead_id), now),
            )
            for event in events
        ]


def _event_id(header: str) -> int:
    text = header.strip()
    if not text.isascii() or not text.isdigit() or not 0 < int(text) <= MAX_ROW_ID:
        raise InvalidHeaderException(LAST_EVENT_ID, NOT_SENT)
    return int(text)


Wait = Callable[[float, asyncio.Event], Awaitable[None]]


async def follow(
    sessions: SessionOpener,
    caller: AccessClaims,
    order: int,
    *,
    changed: Callable[[], Wait],
    idle_seconds: float,
    keep_open: bool = True,
    stop: asyncio.Event,
) -> AsyncIterator[StreamedEvent]:
    """The caller's events after `order`, as they come: each page is read in a transaction of
    its own (a stream holds no connection while it waits). `changed()` is taken before each
    read and awaited after a short one: it returns once new events may have been dispatched
    (or after at most its argument in seconds), so a notice that arrives during the read is
    not lost. Without `keep_open`, the events there are now, then the end; with it, the end
    comes when `stop` is set."""
    while not stop.is_set():
        wait = changed()
        async with sessions() as db:
            page = await EventStream.after(db, caller, order)
        for event in page:
            yield event
            order = event.order
        if len(page) == PAGE:
            continue
        if not keep_open:
            return
        await wait(idle_seconds, stop)
