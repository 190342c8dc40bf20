"""Rescoring (issue 17): the automatic scores of the leads a filter selects computed again under
the rules in force (app/services/scoring.py, with FREE_EMAIL_DOMAINS and HIGH_VALUE_TAGS as
they are now), set-based.

The new score is `automatic_score_sql`, one SQL expression, so a call costs the same few
statements however many leads it changes:

    SELECT count(*), count(CASE WHEN <stale> THEN 1 END) FROM leads WHERE <filter>
    INSERT INTO lead_events SELECT ... FROM leads WHERE <filter> AND <stale>
        ORDER BY id FOR UPDATE
    UPDATE leads SET lead_score = <expr>, notes = notes || <line>, version = version + 1, ...
        WHERE <filter> AND <stale>

where <stale> is `NOT score_is_manual AND lead_score <> <expr>`: a manual score is never
touched, and a lead whose score is right already is not changed (no event, no note line). The
INSERT takes the rows' locks in id order (as the bulk calls do, app/services/lead_bulk.py), so
no row it recorded can change before the UPDATE; should the UPDATE find a row the INSERT did
not (a concurrent change made it stale in between, on PostgreSQL), the counts differ and the
call is refused and rolled back rather than leave a change without its event.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import String, and_, case, cast, func, literal, not_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import get_settings
from app.models import Lead, LeadEventType
from app.models.lead import note_timestamp
from app.models.types import utcnow
from app.schemas.filters import LeadFilters
from app.services import lead_bulk
from app.services.base import get_acting_user, transactional
from app.services.exceptions import (
    ConflictException,
    PermissionDeniedException,
    ValidationException,
)
from app.services.lead_filters import LEADS, lead_conditions
from app.services.lead_service import appended_note
from app.services.scoring import automatic_score_sql


@dataclass(frozen=True, slots=True)
class RescoreOutcome:
    """`matched`: the leads the filter selects; `changed`: those whose automatic score was
    (with `dry_run`, would be) changed by this call; `remaining`: those still to change, past
    this call's BULK_MAX_IDS."""

    matched: int
    changed: int
    remaining: int = 0


class LeadRescore:
    @staticmethod
    @transactional
    async def rescore(
        db: AsyncSession,
        user_id: int,
        filters: LeadFilters | None = None,
        *,
        dry_run: bool = False,
    ) -> RescoreOutcome:
        """Recompute the automatic score of every live lead `filters` selects (all of them by
        default), superusers only. Each changed lead gets a note line ("Score 60 → 75
        (rescore)"), a `lead.updated` event with the `lead_score` change, a new version and
        `updated_at`. Manual scores are left alone. One call changes at most BULK_MAX_IDS
        leads (the lowest ids of those to change), so that no statement outgrows
        DB_STATEMENT_TIMEOUT_MS on a large table: the rest are `remaining`, for the next
        call. With `dry_run` nothing changes and the counts say what a real call would do.
        Archived leads are not rescored: `include_archived` is refused (a ValidationException
        naming `filter.include_archived`)."""
        user = await get_acting_user(db, user_id)
        if not user.is_superuser:
            raise PermissionDeniedException("Only a superuser may rescore leads.")
        filters = filters or LeadFilters()
        if filters.include_archived:
            raise ValidationException.at_path(
                ["filter", "include_archived"],
                "must be false: archived leads are not rescored (restore them first)",
            )
        where = lead_conditions(filters)
        score = automatic_score_sql()
        stale = and_(not_(LEADS.score_is_manual), LEADS.lead_score != score)

        counts = select(func.count(), func.count(case((stale, 1)))).select_from(Lead)
        matched, stale_count = (await db.execute(counts.where(*where))).one()
        cap = get_settings().bulk_max_ids
        this_call = min(int(stale_count), cap)
        if dry_run or not this_call:
            return RescoreOutcome(int(matched), this_call, int(stale_count) - this_call)

        now = utcnow()
        rules = [*where, stale]
        if stale_count > cap:  # this call takes the first `cap` of them, by id
            last = select(Lead.id).where(*rules).order_by(Lead.id).offset(cap - 1).limit(1)
            rules.append(Lead.id <= last.scalar_subquery())
        event = lead_bulk.BulkEvent(LeadEventType.UPDATED, "lead_score", score, user.id, now)
        recorded = await db.execute(event.insert(db.get_bind().dialect.name, rules))
        line = (
            literal(f"{note_timestamp(now)} user {user.id}: Score ")
            + cast(LEADS.lead_score, String)
            + literal(" → ")
            + cast(score, String)
            + literal(" (rescore)")
        )
        change = (
            update(Lead)
            .where(*rules)
            .values(
                lead_score=score,
                notes=appended_note(line),
                updated_at=now,
                version=Lead.version + 1,
            )
            .execution_options(synchronize_session=False)
        )
        changed = (await db.execute(change)).rowcount
        if changed != recorded.rowcount:
            raise ConflictException(
                "Some of the leads changed while they were being rescored; nothing was "
                "changed, please try again."
            )
        return RescoreOutcome(int(matched), int(changed), int(stale_count) - int(changed))
