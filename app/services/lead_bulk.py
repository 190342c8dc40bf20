"""How `LeadService.bulk_update_status` and `assign_leads` change many leads: one UPDATE,
and one INSERT for their events.

The service builds the change (`UPDATE leads SET ...` with each lead's note line computed in
SQL); this module picks the rows and keeps the call all or nothing. The rules a lead must pass
(listed, not archived and, for an agent, assigned to them) go into the UPDATE's own WHERE, so a
call that passes costs one UPDATE whatever the number of ids:

    UPDATE leads SET ... WHERE id = ANY(ARRAY(
        SELECT id FROM leads
        WHERE id = ANY($ids) AND archived_at IS NULL [AND assigned_to = $user]
        ORDER BY id FOR UPDATE))
    RETURNING id

- The sub-select runs once, first, and locks the rows in id order before any is changed, so
  overlapping bulk calls queue behind each other instead of deadlocking (a plain UPDATE locks
  in whatever order its plan visits the rows). In READ COMMITTED a row another transaction
  changes meanwhile is re-checked against the rules once that transaction commits, and updated
  as it then is. On 10,000 of a table's leads this costs about 3% over the bare UPDATE.
- On PostgreSQL the ids travel as one array parameter (`= ANY($1::INTEGER[])`), not as one
  placeholder each, so the statement text, and with it the prepared statement and its plan,
  is the same for 5 ids or 10,000. SQLite has no row locks (one writer at a time, and the app's
  transactions start with `BEGIN IMMEDIATE`), so there the WHERE is simply the ids (`IN`, one
  placeholder per id: 10,000 is well within SQLite's 32,766) and the rules.
- Each lead's event (`BulkEvent`) is written just before, by one `INSERT INTO lead_events
  SELECT ... FROM leads WHERE <the same rules> ORDER BY id FOR UPDATE`: it takes the locks, in
  id order, and reads the old values from the locked rows, so the UPDATE after it finds every
  row already held and no value can change between the two. Two statements in all; on 10,000
  of a million leads the API's call costs 1.03x the bare UPDATE (bench/README.md).
- If fewer rows changed than ids were given, some id failed a rule. Only then are the ids left
  over read, locked in id order, to name them in the same exception the call always raised
  (missing or not the caller's first, then archived); the exception rolls the whole call
  back. If they all pass by then (another transaction restored or reassigned one between the
  two statements), they are locked now and the same UPDATE changes them too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ARRAY,
    Insert,
    Integer,
    Update,
    any_,
    bindparam,
    func,
    insert,
    literal,
    select,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload
from sqlalchemy.sql.elements import ColumnElement

from app.config import get_settings
from app.models import Lead, LeadEvent, LeadEventType, User
from app.models.validation import is_whole_number
from app.schemas.filters import LeadFilters
from app.services.exceptions import (
    ConflictException,
    LeadNotFoundException,
    MatchCountChangedException,
    ValidationException,
    id_list,
)
from app.services.lead_events import EVENT_COLUMNS, event_values, field_change
from app.services.lead_filters import lead_conditions


@dataclass(frozen=True)
class BulkEvent:
    """The event each lead of a bulk call gets: `field` set to `new` (a Python value, or an
    SQL expression over the lead's row, such as its score under the current rules) by
    `actor_id` at `at`, with the call's `note`."""

    type: LeadEventType
    field: str
    new: Any
    actor_id: int
    at: datetime
    note: str | None = None

    def insert(self, dialect_name: str, rules: Sequence[ColumnElement[bool]]) -> Insert:
        """`INSERT INTO lead_events SELECT ... FROM leads WHERE <rules> ORDER BY id FOR UPDATE`:
        one event per lead that passes, built from the row before the UPDATE changes it. The
        lock is taken by this statement's own scan, so each old value is the row's latest
        committed one (READ COMMITTED re-reads a row it waited for), in id order like the
        UPDATE's."""
        column = getattr(Lead, self.field)
        new = self.new if isinstance(self.new, ColumnElement) else literal(self.new, column.type)
        values = event_values(
            self.type,
            Lead.id,
            literal(self.actor_id, Integer),
            Lead.version + 1,
            # Whose the lead is after the change: the new assignee when that is the change.
            assigned_to=new if self.field == "assigned_to" else Lead.assigned_to,
            changes=field_change(dialect_name, self.field, column, new),
            note=self.note,
            at=self.at,
        )
        columns = [c for c in EVENT_COLUMNS if c.key in values]
        typed = [_as_sql(values[c.key], c) for c in columns]
        rows = select(*typed).where(*rules).order_by(Lead.id).with_for_update(of=Lead)
        return insert(LeadEvent).from_select([c.key for c in columns], rows)


def _as_sql(value: Any, column: Any) -> ColumnElement[Any]:
    """SQL expressions as they are (a column, `version + 1`), Python values as typed literals."""
    if isinstance(value, ColumnElement) or hasattr(value, "__clause_element__"):
        return value
    return literal(value, column.type)


async def update_all_or_nothing(
    db: AsyncSession, change: Update, ids: Sequence[int], user: User, event: BulkEvent
) -> None:
    """Run `change` (an `update(Lead).values(...)` without WHERE) on every lead in `ids` (sorted,
    distinct), or raise without changing any: `LeadNotFoundException` if some are missing,
    or, when `user` is an agent, are not theirs (the same answer: agents cannot probe ids),
    `ConflictException` if some are archived. (The caller's transaction rolls back on the
    exception; rows changed before it was raised are rolled back with it.)"""
    postgres = _is_postgres(db)
    leftover = await _update(db, change, ids, user, event, postgres=postgres)
    if not leftover:
        return
    await _refuse(db, leftover, user)
    # Every leftover lead passes now and is locked by this transaction (only possible on
    # PostgreSQL, after a concurrent change between the two statements): change them too.
    if not postgres or await _update(db, change, leftover, user, event, postgres=True):
        raise ConflictException(
            "Some of the leads changed while they were being updated; nothing was changed, "
            "please try again."
        )


async def reload_leads(db: AsyncSession, ids: Sequence[int]) -> list[Lead]:
    """The leads `ids` as they are now, in id order, with their assignees."""
    leads = await db.scalars(
        select(Lead)
        .where(ids_condition(db, ids))
        .order_by(Lead.id)
        .options(selectinload(Lead.assignee))
        .execution_options(populate_existing=True)
    )
    return list(leads)


def ids_condition(db: AsyncSession, ids: Sequence[int]) -> ColumnElement[bool]:
    """`lead.id` is one of `ids`: one array parameter on PostgreSQL, `IN (?, ?, ...)` on SQLite."""
    if _is_postgres(db):
        return Lead.id == any_(bindparam("lead_ids", list(ids), type_=ARRAY(Integer)))
    return Lead.id.in_(ids)


async def _update(
    db: AsyncSession,
    change: Update,
    ids: Sequence[int],
    user: User,
    event: BulkEvent,
    *,
    postgres: bool,
) -> list[int]:
    """Record the event of, then apply `change` to, those of `ids` that pass the rules; the ids
    it did not change (all of them when the database cannot say which, i.e. without RETURNING
    on SQLite). Two statements whatever the number of ids."""
    rules = [ids_condition(db, ids), Lead.archived_at.is_(None)]
    if not user.is_superuser:
        rules.append(Lead.assigned_to == user.id)
    await db.execute(event.insert(db.get_bind().dialect.name, rules))
    if postgres:
        # ARRAY(sub-select) is run once, before the UPDATE reads a row: it locks the rows in id
        # order, and its result is one array to find them by. (`id IN (sub-select)` would also
        # lock them in order, but join back row by row: about 15% slower on 10,000 ids.)
        locked = select(Lead.id).where(*rules).order_by(Lead.id).with_for_update()
        in_locked = any_(func.array(locked.scalar_subquery(), type_=ARRAY(Integer)))
        statement = change.where(Lead.id == in_locked).returning(Lead.id)
    else:
        statement = change.where(*rules)
    result = await db.execute(statement.execution_options(synchronize_session=False))
    if postgres:
        changed = set(result.scalars())
        return [i for i in ids if i not in changed]
    return [] if result.rowcount == len(ids) else list(ids)


async def _refuse(db: AsyncSession, ids: Sequence[int], user: User) -> None:
    """Lock the leads `ids` in id order and raise if any is missing, not the user's or archived."""
    rows = (
        await db.execute(
            select(Lead.id, Lead.assigned_to, Lead.archived_at)
            .where(ids_condition(db, ids))
            .order_by(Lead.id)
            .with_for_update()
        )
    ).all()
    # An agent's call cannot tell someone else's lead from a missing one (see
    # `lead_service.ensure_may_touch`): both are "not found", in one list.
    visible = [row for row in rows if user.is_superuser or row.assigned_to == user.id]
    missing = set(ids) - {row.id for row in visible}
    if missing:
        raise LeadNotFoundException(missing)
    archived = [row.id for row in visible if row.archived_at is not None]
    if archived:
        raise ConflictException(f"Leads archived, restore them first: {id_list(archived)}.")


# ------------------------------------------------------------------------ by filter (issue 17)


def checked_filters(filters: Any) -> LeadFilters:
    """The filter of a bulk change: a `LeadFilters` that leaves archived leads out (they
    cannot be changed in bulk, so `include_archived` is refused rather than ignored)."""
    if not isinstance(filters, LeadFilters):
        raise ValidationException.at("filter", "must be a LeadFilters")
    if filters.include_archived:
        raise ValidationException.at_path(
            ["filter", "include_archived"],
            "must be false: archived leads cannot be changed in bulk (restore them first)",
        )
    return filters


def filter_rules(filters: LeadFilters, user: User) -> list[ColumnElement[bool]]:
    """The leads `filters` selects that `user` may change: live ones, an agent's own."""
    scope = None if user.is_superuser else user.id
    return lead_conditions(checked_filters(filters), scope_user_id=scope)


async def count_matching(db: AsyncSession, filters: LeadFilters, user: User) -> int:
    """How many leads a bulk change by `filters` would change now (one count)."""
    rules = filter_rules(filters, user)
    return int(await db.scalar(select(func.count()).select_from(Lead).where(*rules)) or 0)


async def matching_ids(
    db: AsyncSession, filters: LeadFilters, user: User, expected_count: Any
) -> list[int]:
    """The ids `filters` selects for `user`, ascending, locked in id order (PostgreSQL), once
    they are no more than BULK_MAX_IDS and exactly `expected_count`: one SELECT of at most
    BULK_MAX_IDS + 1 ids. More: ValidationException naming `filter` (narrow it); another
    count: MatchCountChangedException with the count now (a filter that grew since its
    preview changes nothing). The by-ids path then changes exactly these rows: locked, they
    still pass the rules."""
    if not is_whole_number(expected_count) or expected_count < 0:
        raise ValidationException.at("expected_count", "must be a whole number, 0 or more")
    limit = get_settings().bulk_max_ids
    rules = filter_rules(filters, user)
    ids = list(
        await db.scalars(
            select(Lead.id).where(*rules).order_by(Lead.id).limit(limit + 1).with_for_update()
        )
    )
    if len(ids) > limit:
        raise ValidationException.at(
            "filter",
            f"matches more than BULK_MAX_IDS ({limit}) leads: narrow it (a dry_run counts them)",
        )
    if len(ids) != expected_count:
        raise MatchCountChangedException(expected_count, len(ids))
    return ids


def _is_postgres(db: AsyncSession) -> bool:
    return db.get_bind().dialect.name == "postgresql"
