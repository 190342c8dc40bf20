"""A lead's history read back (issue 13): its events, newest first and cursor-paged, and the
periods it spent in each status.

Both read `lead_events` for one lead, which its index `(lead_id, id)` serves in id order. The
lead must be one the caller may see (a superuser: any; an agent: their own; otherwise 404, as
everywhere). An agent sees the names of whoever acted on their own leads here, though they may
not read other accounts: a timeline must say who did what.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

from sqlalchemy import func, literal, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from app.models import LeadEvent, LeadEventType, LeadStatus, User
from app.models.types import utcnow
from app.schemas.history import LeadHistoryQuery
from app.services.base import get_acting_user, transactional
from app.services.lead_service import visible_lead
from app.services.pagination import id_before, id_cursor

_users = User.__table__


def changed_field(dialect_name: str, field: str) -> ColumnElement[bool]:
    """The event changed `field` (a key of its `changes`). `field` is one of the lead's field
    names (`LeadHistoryQuery.field`), never free text."""
    if dialect_name == "postgresql":
        return LeadEvent.changes.op("?")(literal(field))
    return func.json_type(LeadEvent.changes, literal(f'$."{field}"')).is_not(None)


OTHER_FILTERS = "was made for other filters; ask with the same ones, or start again"


def _fingerprint(query: LeadHistoryQuery) -> str:
    """The filters a cursor was made for: followed under others it would skip events."""
    types = ",".join(sorted(t.value for t in query.type or ()))
    return hashlib.blake2b(f"{types}|{query.field or ''}".encode(), digest_size=6).hexdigest()


class LeadHistory:
    @staticmethod
    @transactional
    async def events(
        db: AsyncSession, lead_id: int, user_id: int, query: LeadHistoryQuery | None = None
    ) -> dict[str, Any]:
        """A page of the lead's events, newest first: `{"items", "next_cursor"}`, each item
        with its actor as `{id, full_name}` (null for the system or a deleted user)."""
        query = query or LeadHistoryQuery()
        user = await get_acting_user(db, user_id)
        await visible_lead(db, lead_id, user)
        conditions = [LeadEvent.lead_id == lead_id]
        before = id_before(query.cursor, _fingerprint(query), OTHER_FILTERS)
        if before is not None:
            conditions.append(LeadEvent.id < before)
        if query.type:
            conditions.append(LeadEvent.type.in_([t.value for t in query.type]))
        if query.field:
            conditions.append(changed_field(db.get_bind().dialect.name, query.field))
        statement = (
            select(
                LeadEvent.id,
                LeadEvent.type,
                _users.c.id,
                _users.c.full_name,
                LeadEvent.occurred_at,
                LeadEvent.changes,
                LeadEvent.note,
                LeadEvent.lead_version,
            )
            .outerjoin(_users, _users.c.id == LeadEvent.actor_id)
            .where(*conditions)
            .order_by(LeadEvent.id.desc())
            .limit(query.limit + 1)
        )
        rows = (await db.execute(statement)).all()
        page = rows[: query.limit]
        next_cursor = None
        if len(rows) > query.limit:
            next_cursor = id_cursor(page[-1][0], _fingerprint(query))
        items = [
            {
                "id": event_id,
                "type": kind,
                "actor": None if actor_id is None else {"id": actor_id, "full_name": name},
                "occurred_at": at,
                "changes": changes,
                "note": note,
                "lead_version": version,
            }
            for event_id, kind, actor_id, name, at, changes, note, version in page
        ]
        return {"items": items, "next_cursor": next_cursor}

    @staticmethod
    @transactional
    async def status_periods(db: AsyncSession, lead_id: int, user_id: int) -> list[dict[str, Any]]:
        """Each status the lead has been in, oldest first: `status`, `entered_at`, `left_at`
        (null for the current one) and `seconds`. Read from the events that changed its status,
        each period ending where the next begins (a window function). A lead from before
        events were kept starts with the status its first recorded change left, from its
        creation; one with no recorded change has had its status since `status_changed_at`."""
        user = await get_acting_user(db, user_id)
        lead = await visible_lead(db, lead_id, user)
        dialect = db.get_bind().dialect.name
        status = LeadEvent.changes["status"]
        statement = (
            select(
                LeadEvent.type,
                status["old"].as_string(),
                status["new"].as_string(),
                LeadEvent.occurred_at,
                func.lead(LeadEvent.occurred_at, type_=LeadEvent.occurred_at.type).over(
                    order_by=LeadEvent.id
                ),
            )
            .where(LeadEvent.lead_id == lead_id, changed_field(dialect, "status"))
            .order_by(LeadEvent.id)
        )
        rows = (await db.execute(statement)).all()
        periods: list[tuple[str, datetime, datetime | None]] = []
        if not rows:
            periods.append((lead.status.value, lead.status_changed_at, None))
        elif rows[0][0] != LeadEventType.CREATED and rows[0][1] is not None:
            periods.append((rows[0][1], lead.created_at, rows[0][3]))
        periods += [(new, entered, left) for _, _, new, entered, left in rows]
        now = utcnow()
        return [
            {
                "status": LeadStatus(name),
                "entered_at": entered,
                "left_at": left,
                "seconds": round(((left or now) - entered).total_seconds(), 3),
            }
            for name, entered, left in periods
        ]
