"""Merging duplicate leads into one, and undoing it (issue 16).

`merge` keeps one lead (the survivor) and folds the others into it, in one transaction:

- each mergeable field comes from the lead `fields` names for it; otherwise the survivor
  keeps its own value, or takes the first non-empty one of the merged leads, in the order
  given;
- tags are the union (the survivor's first), `call_attempts` the sum, `last_contact_date`
  the latest; the notes of all of them are interleaved in time order (each note line starts
  with its time), followed by a line saying what was merged;
- an automatic score is computed again from the merged fields (a manual one stays);
- the merged leads are archived with `merged_into_id` set and a note line; their status stays.

Every one of them gets a `lead.merged` event whose `changes` hold every column the merge
changed, old and new, as the API renders them, and the survivor's also `merged_ids`. Those
events are all `unmerge` needs: it sets each changed column back to its old value, on the
survivor and on each merged lead, provided none of them has changed since (its version is
still the one its merge event gave it); otherwise 409 names the change. An unmerge is a
change too: it adds a `lead.unmerged` event to each lead and counts in its version, and
`updated_at` says when it happened; every other field is exactly as before the merge.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from pydantic import TypeAdapter
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Lead, LeadEvent, LeadEventType, User
from app.models.types import utcnow
from app.schemas.lead import LeadRead
from app.services import messages
from app.services.base import get_acting_user, transactional
from app.services.exceptions import ConflictException, LeadNotFoundException, ValidationException
from app.services.lead_changes import ensure_not_archived, record_change
from app.services.lead_creation import TRACKED_FIELDS, auto_score
from app.services.lead_events import changes_between
from app.services.lead_service import ensure_may_touch, visible_lead

MAX_MERGED = 20  # leads folded into one in one call
# The fields `fields` may name, and that are otherwise taken from the first lead that has one:
# what a caller may set, but the assignee (the survivor keeps its own), the score (computed
# again, or manual) and what is combined from all of them.
COMBINED_FIELDS = ("tags", "call_attempts", "last_contact_date")
MERGEABLE_FIELDS = tuple(
    name
    for name in TRACKED_FIELDS
    if name not in {"assigned_to", "lead_score", "score_is_manual", *COMBINED_FIELDS}
)
# What a merge may change on the survivor, and on a merged lead.
SURVIVOR_FIELDS = (
    *MERGEABLE_FIELDS,
    *COMBINED_FIELDS,
    "notes",
    "lead_score",
    "status_changed_at",
)
MERGED_FIELDS = ("archived_at", "status_before_archive", "merged_into_id", "notes")
MERGED_IDS = "merged_ids"  # the survivor's event: which leads went into it
# "[2026-11-25 17:52 UTC] ..." starts a note line; lines without it continue the one before.
_NOTE_START = re.compile(r"^\[\d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC\]")
# How to read a rendered value back (the event holds values as the API renders them).
_READ_BACK = {
    name: TypeAdapter(LeadRead.model_fields[name].annotation)
    for name in {*SURVIVOR_FIELDS, *MERGED_FIELDS}
}


class LeadMerges:
    @staticmethod
    @transactional
    async def merge(
        db: AsyncSession,
        lead_id: int,
        merge_ids: Sequence[int],
        user_id: int,
        *,
        fields: Mapping[str, int] | None = None,
    ) -> tuple[Lead, list[Lead]]:
        """Fold `merge_ids` into lead `lead_id` (see the module): the survivor and the merged
        leads, as they are now. The user must be a superuser or the assignee of every one."""
        user = await get_acting_user(db, user_id)
        ids = _checked_merge(lead_id, merge_ids, fields or {})
        leads = await _locked(db, [lead_id, *ids], user)
        for lead in leads.values():
            ensure_not_archived(lead)
        survivor, merged = leads[lead_id], [leads[i] for i in ids]
        now = utcnow()
        before = _values(survivor, SURVIVOR_FIELDS)
        _take_fields(survivor, merged, leads, fields or {})
        if survivor.status != before["status"]:
            survivor.status_changed_at = now
        survivor.tags = _union(lead.tags for lead in (survivor, *merged))
        survivor.call_attempts = sum(lead.call_attempts for lead in (survivor, *merged))
        survivor.last_contact_date = _latest(lead.last_contact_date for lead in leads.values())
        survivor.notes = _interleaved(lead.notes for lead in (survivor, *merged))
        line = f"Merged lead{'s' if len(ids) > 1 else ''} {', '.join(map(str, ids))} into this one"
        survivor.add_note(line, author_id=user.id, at=now)
        if not survivor.score_is_manual:
            survivor.lead_score = auto_score(survivor)
        survivor.updated_at = now
        changes = _changes(before, survivor, SURVIVOR_FIELDS)
        changes[MERGED_IDS] = {"old": None, "new": ids}
        record_change(db, survivor, LeadEventType.MERGED, user.id, changes, line, now)
        for lead in merged:
            gone = _values(lead, MERGED_FIELDS)
            lead.status_before_archive = lead.status
            lead.archived_at = lead.updated_at = now
            lead.merged_into_id = survivor.id
            note = f"Merged into lead {survivor.id}"
            lead.add_note(note, author_id=user.id, at=now)
            changes = _changes(gone, lead, MERGED_FIELDS)
            record_change(db, lead, LeadEventType.MERGED, user.id, changes, note, now)
        await db.flush()
        return survivor, merged

    @staticmethod
    @transactional
    async def unmerge(db: AsyncSession, lead_id: int, user_id: int) -> tuple[Lead, list[Lead]]:
        """Undo the last merge into lead `lead_id`: the survivor and the leads brought back."""
        user = await get_acting_user(db, user_id)
        survivor = await visible_lead(db, lead_id, user)
        merge = await _last_merge(db, survivor.id)
        ids = list(merge.changes[MERGED_IDS]["new"])
        leads = await _locked(db, [survivor.id, *ids], user)
        events = await _merge_events(db, ids, survivor.id)
        for lead in leads.values():
            await _ensure_unchanged_since(db, lead, events.get(lead.id, merge))
        now = utcnow()
        restored: list[Lead] = []
        for lead_id_ in (survivor.id, *ids):
            lead, event = leads[lead_id_], events.get(lead_id_, merge)
            undone = _undo(lead, event.changes)
            lead.updated_at = now
            note = (
                f"Unmerged lead{'s' if len(ids) > 1 else ''} {', '.join(map(str, ids))}"
                if lead is survivor
                else f"Unmerged from lead {survivor.id}"
            )
            record_change(db, lead, LeadEventType.UNMERGED, user.id, undone, note, now)
            if lead is not survivor:
                restored.append(lead)
        await db.flush()
        return survivor, restored


def _checked_merge(lead_id: int, merge_ids: Sequence[int], fields: Mapping[str, int]) -> list[int]:
    """The merged leads' ids, once every id and field is known to make sense (else 422)."""
    ids = list(merge_ids)
    if not ids:
        raise ValidationException.at("merge_ids", "must name at least one lead")
    if len(ids) > MAX_MERGED:
        raise ValidationException.at("merge_ids", f"may name at most {MAX_MERGED} leads")
    if len(set(ids)) != len(ids):
        raise ValidationException.at("merge_ids", "must not name a lead twice")
    if lead_id in ids:
        raise ValidationException.at("merge_ids", "must not name the lead merged into")
    for name, source in fields.items():
        if name not in MERGEABLE_FIELDS:
            raise _invalid(["fields", name], "is not a field a merge may take")
        if source != lead_id and source not in ids:
            raise _invalid(["fields", name], "must be the lead's id or one of merge_ids")
    return ids


def _invalid(loc: list[str], predicate: str) -> ValidationException:
    return ValidationException([(loc, messages.sentence(loc, predicate))])


async def _locked(db: AsyncSession, ids: list[int], user: User) -> dict[int, Lead]:
    """The leads, locked in id order by one statement (so two merges cannot deadlock), each
    one the user may change (else 404, as for a lead that does not exist)."""
    rows = await db.scalars(
        select(Lead)
        .where(Lead.id.in_(ids))
        .order_by(Lead.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    leads = {lead.id: lead for lead in rows}
    for lead_id in sorted(ids):  # the lowest missing or invisible id is named, as before
        if lead_id not in leads:
            raise LeadNotFoundException(lead_id)
        ensure_may_touch(user, leads[lead_id])
    return leads


def _values(lead: Lead, names: Sequence[str]) -> dict[str, Any]:
    return {name: getattr(lead, name) for name in names}


def _changes(before: Mapping[str, Any], lead: Lead, names: Sequence[str]) -> dict[str, Any]:
    after = _values(lead, names)
    return changes_between(before, after, [n for n in names if after[n] != before[n]])


def _empty(value: Any) -> bool:
    return value is None or value == "" or value == []


def _take_fields(
    survivor: Lead, merged: list[Lead], leads: Mapping[int, Lead], fields: Mapping[str, int]
) -> None:
    """Each mergeable field's value from where `fields` says, else the survivor's own, else
    the first merged lead's that has one. The values are other leads' own, so valid; what
    can go wrong is the whole: a lead left with neither email nor phone."""
    for name in MERGEABLE_FIELDS:
        if name in fields:
            value = getattr(leads[fields[name]], name)
        else:
            value = getattr(survivor, name)
            if _empty(value):
                given = (getattr(lead, name) for lead in merged)
                value = next((v for v in given if not _empty(v)), value)
        if value != getattr(survivor, name):
            setattr(survivor, name, value)
    if survivor.email is None and survivor.phone is None:
        raise _invalid(["fields"], "must leave the lead an email or a phone number")


def _union(tag_lists: Any) -> list[str]:
    tags: list[str] = []
    for some in tag_lists:
        tags.extend(tag for tag in some if tag not in tags)
    return tags


def _latest(dates: Any) -> datetime | None:
    known = [d for d in dates if d is not None]
    return max(known) if known else None


def _interleaved(all_notes: Any) -> str | None:
    """Every note line of every lead, in time order (a stable sort: at the same minute, the
    survivor's first, then each merged lead's in the order given)."""
    entries: list[str] = []
    for notes in all_notes:
        for line in (notes or "").splitlines():
            if _NOTE_START.match(line) or not entries:
                entries.append(line)
            else:
                entries[-1] += "\n" + line
    entries.sort(key=lambda entry: entry[: len("[2026-11-25 17:52 UTC]")])
    return "\n".join(entries) or None


async def _last_merge(db: AsyncSession, survivor_id: int) -> LeadEvent:
    """The survivor's latest merge or unmerge event: a merge, or there is nothing to undo."""
    event = await db.scalar(
        select(LeadEvent)
        .where(
            LeadEvent.lead_id == survivor_id,
            LeadEvent.type.in_([LeadEventType.MERGED, LeadEventType.UNMERGED]),
        )
        .order_by(LeadEvent.id.desc())
        .limit(1)
    )
    if event is None or event.type != LeadEventType.MERGED or MERGED_IDS not in event.changes:
        raise ConflictException(f"Nothing was merged into lead {survivor_id}, so nothing to undo.")
    return event


async def _merge_events(db: AsyncSession, ids: list[int], survivor_id: int) -> dict[int, LeadEvent]:
    """Each merged lead's latest merge event (into this survivor)."""
    rows = await db.scalars(
        select(LeadEvent)
        .where(LeadEvent.lead_id.in_(ids), LeadEvent.type == LeadEventType.MERGED)
        .order_by(LeadEvent.id)
    )
    return {event.lead_id: event for event in rows}


async def _ensure_unchanged_since(db: AsyncSession, lead: Lead, event: LeadEvent) -> None:
    if lead.version == event.lead_version:
        return
    later = await db.scalar(
        select(LeadEvent)
        .where(LeadEvent.lead_id == lead.id, LeadEvent.id > event.id)
        .order_by(LeadEvent.id)
        .limit(1)
    )
    what = (
        f"{later.type} by user {later.actor_id} at {later.occurred_at.isoformat()}"
        if later is not None
        else f"version {lead.version}"
    )
    raise ConflictException(
        f"Lead {lead.id} changed after the merge ({what}); an unmerge would undo that change "
        "too, so it is refused."
    )


def _undo(lead: Lead, changes: Mapping[str, Any]) -> dict[str, Any]:
    """Set every column a merge changed back to its old value; the changes this makes."""
    names = [name for name in changes if name in _READ_BACK]
    before = _values(lead, names)
    for name in names:
        value = _READ_BACK[name].validate_python(changes[name]["old"])
        setattr(lead, name, value)
    return _changes(before, lead, names)
