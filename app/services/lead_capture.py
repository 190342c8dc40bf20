"""`LeadCapture.submit`: a capture form's submission becomes a lead, or a note on the lead the
person already has (issue 17). No login: the form's public key found the form
(`CaptureFormService.target`); the caller's address is the only thing known of the sender.

One transaction, in this order:

1. the submission is validated (422 naming the field; nothing counted or stored);
2. the address's count for this form and minute goes up by one upsert, in the database, so
   every app process counts the same submissions; past CAPTURE_RATE_PER_MINUTE: 429 (the
   increment rolls back with it, the count is already at the limit);
3. a filled-in honeypot (`website`) stops here: the count is kept, nothing else;
4. a live lead with the same email (in any case) or phone gets a note, "Re-submitted via form
   <name>" and the message, and a `lead.note_added` event;
5. otherwise a lead is made with the form's source and tags, scored, assigned by the form's
   rule (which holds the rule's row until commit: app/services/assignment_rules.py), with its
   `lead.created` event.

The answer is the same 202 in cases 3 to 5, so a sender learns nothing about the leads on file.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import pydantic
from sqlalchemy import bindparam, delete
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import get_settings
from app.models import CaptureForm, CaptureRateCount, Lead, LeadEventType
from app.models.types import utcnow
from app.schemas.capture import HONEYPOT_FIELD, CaptureSubmission
from app.schemas.common import given
from app.services.assignment_rules import assign_by_rule
from app.services.base import load_by_id, transactional
from app.services.exceptions import (
    CaptureFormNotFoundException,
    LeadNotFoundException,
    TooManySubmissionsException,
    ValidationException,
)
from app.services.lead_changes import record_change
from app.services.lead_creation import NewLeadData, build_new_lead, created_event, note_text
from app.services.lead_duplicates import contact_check, first_duplicate
from app.services.lead_events import record
from app.services.login_throttle import UNKNOWN_CLIENT

WINDOW = timedelta(minutes=1)
_counts = CaptureRateCount.__table__
_KEY = ("form_id", "client_address", "window_start")
# One more submission in its (form, address, minute) row, built once per dialect (their
# upserts differ only in the module that builds them); the count after it comes back.
COUNT_ONE = {
    name: dialect.insert(_counts)
    .values({**{c: bindparam(c, type_=_counts.c[c].type) for c in _KEY}, "count": 1})
    .on_conflict_do_update(index_elements=list(_KEY), set_={"count": _counts.c.count + 1})
    .returning(_counts.c.count)
    for name, dialect in (("postgresql", postgresql), ("sqlite", sqlite))
}


class Outcome(StrEnum):
    CREATED = "created"
    RESUBMITTED = "resubmitted"
    IGNORED = "ignored"  # the honeypot was filled in


def parse_submission(fields: Mapping[str, Any]) -> CaptureSubmission:
    try:
        return CaptureSubmission.model_validate(fields)
    except pydantic.ValidationError as exc:
        raise ValidationException.of_pydantic(exc.errors()) from None


class LeadCapture:
    @staticmethod
    @transactional
    async def submit(
        db: AsyncSession,
        form_id: int,
        fields: Mapping[str, Any],
        *,
        client_address: str | None,
    ) -> tuple[Outcome, int | None]:
        """What became of the submission, and the lead it went to (None if ignored)."""
        submission = parse_submission(fields)
        form = await db.get(CaptureForm, form_id, populate_existing=True)
        if form is None:  # deleted since its key was looked up
            raise CaptureFormNotFoundException()
        await _count(db, form.id, client_address or UNKNOWN_CLIENT)
        if (given(getattr(submission, HONEYPOT_FIELD)) or "").strip():
            return Outcome.IGNORED, None
        now = utcnow()
        message = note_text(given(submission.message), "message")
        new = NewLeadData(
            {**submission.lead_fields(), "source": form.source, "tags": list(form.tags)},
            message,
            None,
        )
        lead = build_new_lead(new, None, None)  # validated field by field: 422
        existing = await first_duplicate(db, contact_check(lead, None))
        if existing is not None:
            await _resubmitted(db, existing, form.name, message, now)
            return Outcome.RESUBMITTED, existing
        return Outcome.CREATED, await _create(db, form, lead, message, now)


async def _count(db: AsyncSession, form_id: int, address: str) -> None:
    """One more submission from `address` this minute, or TooManySubmissionsException."""
    now = utcnow()
    window = now.replace(second=0, microsecond=0)
    key = {"form_id": form_id, "client_address": address, "window_start": window}
    count = (await db.execute(COUNT_ONE[db.get_bind().dialect.name], key)).scalar_one()
    await db.execute(
        delete(CaptureRateCount).where(
            CaptureRateCount.form_id == form_id,
            CaptureRateCount.client_address == address,
            CaptureRateCount.window_start < window,
        )
    )
    if count > get_settings().capture_rate_per_minute:
        raise TooManySubmissionsException(_seconds_left(window, now))


def _seconds_left(window: datetime, now: datetime) -> int:
    return max(1, int((window + WINDOW - now).total_seconds() + 0.999))


async def _resubmitted(
    db: AsyncSession, lead_id: int, form_name: str, message: str | None, now: datetime
) -> None:
    lead = await load_by_id(db, Lead, lead_id, LeadNotFoundException, for_update=True)
    text = f"Re-submitted via form {form_name}" + (f": {message}" if message else "")
    lead.add_note(text, at=now)
    lead.updated_at = now
    record_change(db, lead, LeadEventType.NOTE_ADDED, None, {}, text, now)


async def _create(
    db: AsyncSession, form: CaptureForm, lead: Lead, message: str | None, now: datetime
) -> int:
    lead.add_note(f"Captured via form {form.name}", at=now)
    if form.assignment_rule_id is not None:
        await assign_by_rule(db, lead, form.assignment_rule_id)
    db.add(lead)
    await db.flush()
    record(db, created_event(lead, message))
    return lead.id
