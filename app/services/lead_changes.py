"""A partial update of one lead: the rules, shared by both roads that store it.

`LeadService.update_lead` applies them to an ORM lead in a session's transaction (scripts,
imports). The API's `PATCH /leads/{id}` uses `LeadChanges.update`: in one transaction on a raw
connection (app/services/reader.py), the lead is read and locked in the same statement as the
caller's account check, changed in Python by `apply_update` (the very function the service
uses), and written back with one UPDATE, its event after it: five round trips (BEGIN,
SELECT ... FOR UPDATE, UPDATE, the event's INSERT, COMMIT), none of them through SQLAlchemy's
session, whose machinery was two thirds of a PATCH's CPU (issue 12). A request the account
may not make is answered as the service answers it, in the same order: 401, 404, 409 for an
archived lead, then the fields.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Select, Update, and_, bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from app.models import FieldValidationError, Lead, LeadEventType, LeadSource, LeadStatus
from app.models.types import utcnow
from app.models.validation import NO_CONTACT, is_whole_number, tag_list
from app.schemas.lead import LEAD_STORED_FIELDS
from app.services.base import as_data, in_transaction, reject_unknown_fields
from app.services.exceptions import (
    ConflictException,
    CRMException,
    LeadNotFoundException,
    PermissionDeniedException,
    ValidationException,
)
from app.services.lead_creation import (
    TRACKED_FIELDS,
    auto_score,
    check_assignee,
    note_text,
)
from app.services.lead_events import (
    INSERT_EVENT,
    bound,
    changes_between,
    event_values,
    record,
)
from app.services.lead_queries import LEAD_COLUMNS, LeadRow
from app.services.lead_reads import (
    CALLER,
    CALLER_OK,
    CLAIMED_ROLE,
    account_params,
    account_role,
)
from app.services.preconditions import Precondition, ensure_precondition
from app.services.reader import Reader, Writer
from app.services.scoring import SCORING_FIELDS
from app.services.security import AccessClaims

UPDATE_FIELDS = frozenset(TRACKED_FIELDS) | {"notes"}


def ensure_not_archived(lead: Any) -> None:
    if lead.archived_at is not None:
        raise ConflictException(f"Lead {lead.id} is archived; restore it before changing it.")


def reassignment_target(superuser: bool, lead: Any, assigned_to: Any) -> int | None:
    """Whom a change of `assigned_to` gives the lead to, who must then be an active user (the
    caller checks); None when it stays where it is or becomes unassigned. Only a superuser
    may reassign."""
    if assigned_to == lead.assigned_to:
        return None
    if not superuser:
        raise PermissionDeniedException("Only a superuser may reassign a lead.", [lead.id])
    if assigned_to is not None and not is_whole_number(assigned_to):
        raise ValidationException.at("assigned_to", "must be a whole number")
    return assigned_to


def apply_update(
    lead: Lead, fields: dict[str, Any], note: str | None, author_id: int
) -> dict[str, Any] | None:
    """Change `lead` as `fields` say (validated field by field, every bad one named at once),
    re-score an auto-scored lead whose scoring fields changed, and note every change in one
    line, plus `note` as its own. The changes, as the `lead.updated` event records them; None
    when nothing changed and there is no note: then nothing is to be written."""
    fields = dict(fields)
    before = {name: _comparable(getattr(lead, name)) for name in TRACKED_FIELDS}
    if "lead_score" in fields:
        manual = fields["lead_score"] is not None
        fields.setdefault("score_is_manual", manual)
        if not manual:
            del fields["lead_score"]
    errors = []
    for name in TRACKED_FIELDS:
        if name not in fields:
            continue
        try:
            if name == "tags" and set(tag_list("tags", fields[name])) == set(lead.tags):
                continue  # same set in another order is no change
            setattr(lead, name, fields[name])
        except FieldValidationError as exc:
            errors.append(exc)
    if lead.email is None and lead.phone is None:
        errors.append(FieldValidationError("email", NO_CONTACT))
    if errors:
        raise ValidationException.of_fields(errors)

    changed = [n for n in TRACKED_FIELDS if _comparable(getattr(lead, n)) != before[n]]
    rescore = not lead.score_is_manual and any(
        n in changed for n in (*SCORING_FIELDS, "score_is_manual")
    )
    if rescore:
        lead.lead_score = auto_score(lead)
        if lead.lead_score != before["lead_score"] and "lead_score" not in changed:
            changed.append("lead_score")
            changed.sort(key=TRACKED_FIELDS.index)
    if "lead_score" in changed and "score_is_manual" in changed:
        # The score's new value says it all (the reference's "lead_score: 50 → 85");
        # the flag is listed only when it is the sole trace of a change.
        changed.remove("score_is_manual")
    if not changed and not note:
        return None

    now = utcnow()
    lead.updated_at = now
    if "status" in changed:
        lead.status_changed_at = now
    if changed:
        summary = "; ".join(
            f"{n}: {_show(before[n])} → {_show(_comparable(getattr(lead, n)))}" for n in changed
        )
        lead.add_note(f"Updated: {summary}", author_id=author_id, at=now)
    if note:
        lead.add_note(note, author_id=author_id, at=now)
    after = {n: _comparable(getattr(lead, n)) for n in changed}
    return changes_between(before, after, changed)


def record_update(
    db: AsyncSession,
    lead: Lead,
    actor_id: int,
    changes: dict[str, Any],
    note: str | None,
    *,
    import_id: int | None = None,
) -> None:
    """What a change `apply_update` made to a lead in the session adds: the lead's next version
    and its `lead.updated` event (naming the import that made it, if one did)."""
    record_change(
        db, lead, LeadEventType.UPDATED, actor_id, changes, note, lead.updated_at, import_id
    )


def record_change(
    db: AsyncSession,
    lead: Lead,
    type_: LeadEventType,
    actor_id: int | None,
    changes: dict[str, Any],
    note: str | None,
    at: datetime,
    import_id: int | None = None,
) -> None:
    """Count a change to a lead in the session in its version, and add its event."""
    lead.version += 1
    values = event_values(
        type_,
        lead.id,
        actor_id,
        lead.version,
        assigned_to=lead.assigned_to,
        changes=changes,
        note=note,
        at=at,
        import_id=import_id,
    )
    record(db, values)


def _comparable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _show(value: Any) -> str:
    """How a value reads in a change line."""
    if value is None or value == ():
        return "(none)"
    if isinstance(value, tuple):
        return ", ".join(value)
    if isinstance(value, LeadStatus | LeadSource):
        return value.value
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M UTC")
    return str(value)


# --- the API's update: one transaction on the writer ----------------------------------------

_leads = Lead.__table__
# What a PATCH may change: the stored fields the lead was read with (not the id, nor the
# archive bookkeeping, which a live lead does not use); its version counts up in SQL.
_WRITTEN = tuple(c for c in LEAD_COLUMNS if not c.primary_key and c.key != "version")
LEAD_ID = bindparam("lead_id")


def _locked_lead_for_caller(superuser: bool) -> Select[Any]:
    """The lead, locked, joined to the caller's account row: no row unless the account passes
    and the lead is there and the caller's (an agent's own; any for a superuser)."""
    condition = _leads.c.id == LEAD_ID
    if not superuser:
        condition = and_(condition, _leads.c.assigned_to == CALLER.c.id)
    return (
        select(*LEAD_COLUMNS)
        .select_from(CALLER.join(_leads, condition))
        .where(*CALLER_OK, CLAIMED_ROLE)
        .with_for_update(of=_leads)
    )


LOCKED_LEAD_FOR_CALLER = {role: _locked_lead_for_caller(role) for role in (False, True)}

# Every written column from parameters (`new_<column>`): one shape, compiled once. PostgreSQL
# compares old and new values itself, so unchanged indexed columns still allow a HOT update.
WRITE_LEAD: Update = (
    update(_leads)
    .where(_leads.c.id == LEAD_ID)
    .values(
        {
            **{c.key: bindparam(f"new_{c.key}", type_=c.type) for c in _WRITTEN},
            "version": _leads.c.version + 1,
        }
    )
    .returning(*LEAD_COLUMNS)
)


def lead_from_row(row: Sequence[Any]) -> Lead:
    """A transient `Lead` holding a stored row's values as unchanged (no validation, no
    history), for `apply_update` to change."""
    lead = Lead()
    for name, value in zip(LEAD_STORED_FIELDS, row, strict=True):
        set_committed_value(lead, name, value)
    return lead


def _row_of(lead: Lead) -> LeadRow:
    return LeadRow._make(getattr(lead, name) for name in LEAD_STORED_FIELDS)


class LeadChanges:
    @staticmethod
    async def update(
        writer: Writer,
        lead_id: int,
        lead_data: Mapping[str, Any] | Any,
        caller: AccessClaims,
        if_match: Precondition | None = None,
    ) -> LeadRow:
        """What `LeadService.update_lead` does for the caller, in one transaction of the
        writer's; the lead as it now is."""
        try:
            data = as_data(lead_data)
            reject_unknown_fields(data, UPDATE_FIELDS)
            if not is_whole_number(lead_id):
                raise ValidationException.at("lead_id", "must be a whole number")
        except CRMException:
            await account_role(writer, caller)  # 401 first
            raise
        superuser = caller.superuser
        if superuser is None:
            superuser = await account_role(writer, caller)
        for _ in range(3):  # the role can change under a request; not without end
            found, row = await in_transaction(
                writer,
                lambda tx, role=superuser: _update(tx, lead_id, data, caller, role, if_match),
            )
            if found:
                return row
            stored = await account_role(writer, caller)  # 401 if refused
            if stored == superuser:
                raise LeadNotFoundException(lead_id)
            superuser = stored
        raise LeadNotFoundException(lead_id)


async def _update(
    tx: Reader,
    lead_id: int,
    data: dict[str, Any],
    caller: AccessClaims,
    superuser: bool,
    if_match: Precondition | None,
) -> tuple[bool, LeadRow | None]:
    """(False, None) when no lead came back: the caller, the role or the lead is wrong."""
    params = {
        **account_params(caller),
        "caller_superuser": superuser,
        "lead_id": lead_id,
    }
    rows = await tx.rows(LOCKED_LEAD_FOR_CALLER[superuser], params)
    if not rows:
        return False, None
    lead = lead_from_row(rows[0])
    ensure_precondition(if_match, lead.id, lead.version)
    ensure_not_archived(lead)
    fields = dict(data)
    note = note_text(fields.pop("notes", None))
    target = reassignment_target(superuser, lead, fields.get("assigned_to", lead.assigned_to))
    if target is not None:
        await check_assignee(tx, target)
    changes = apply_update(lead, fields, note, caller.user_id)
    if changes is None:
        return True, _row_of(lead)
    values = {f"new_{c.key}": getattr(lead, c.key) for c in _WRITTEN}
    written = LeadRow._make((await tx.rows(WRITE_LEAD, {**values, "lead_id": lead_id}))[0])
    event = event_values(
        LeadEventType.UPDATED,
        lead_id,
        caller.user_id,
        written.version,
        assigned_to=written.assigned_to,
        changes=changes,
        note=note,
        at=lead.updated_at,
    )
    await tx.rows(INSERT_EVENT, bound(event))
    return True, written
