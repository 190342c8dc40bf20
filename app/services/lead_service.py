"""LeadService: every way a lead is read or changed.

Rules every method keeps:
- One call is one transaction (`@transactional`): it commits on success, rolls back on any error.
- The acting user (`user_id`) is loaded and must exist and be active. Agents touch only leads
  assigned to them; superusers touch all. `user_id=None` on reads is a trusted internal call.
- History is append-only: every change adds a `[YYYY-MM-DD HH:MM UTC] user N: ...` line to notes.
- A row that will be changed is read with `SELECT ... FOR UPDATE` (in id order for many rows),
  so concurrent writers on PostgreSQL queue instead of overwriting each other's notes.
- Bulk calls are one UPDATE whose WHERE holds the rules (`lead_bulk.py`); if fewer rows changed
  than ids were given, the leftovers are named in the exception and nothing is kept.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime
from typing import Any

import pydantic
from sqlalchemy import String, case, cast, func, literal, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import joinedload, selectinload
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.sql.elements import ColumnElement

from app.config import get_settings
from app.models import (
    ARCHIVED_TAG,
    Lead,
    LeadEventType,
    LeadSource,
    LeadStatus,
    User,
    format_note_line,
)
from app.models.lead import note_timestamp
from app.models.types import UTCDateTime, utcnow
from app.models.validation import (
    MAX_INT32,
    enum_member,
    is_whole_number,
)
from app.schemas.filters import LeadFilters, LeadPaging
from app.services import lead_bulk
from app.services.assignment_rules import assign_by_rule
from app.services.base import (
    as_data,
    get_acting_user,
    reject_unknown_fields,
    transactional,
)
from app.services.exceptions import (
    ConflictException,
    InactiveUserException,
    LeadNotFoundException,
    PermissionDeniedException,
    UserNotFoundException,
    ValidationException,
    id_list,
)
from app.services.lead_changes import (
    UPDATE_FIELDS,
    apply_update,
    ensure_not_archived,
    reassignment_target,
    record_change,
    record_update,
)
from app.services.lead_creation import (
    CREATE_FIELDS,
    NEW_LEAD_ROLE,
    NewLeadData,
    assignee_of_new_lead,
    build_new_lead,
    created_event,
    note_text,
    prepare_new_lead,
)
from app.services.lead_duplicates import OnDuplicate, contact_check, refuse_duplicates
from app.services.lead_events import changes_between, erase_event_values, event_values, record
from app.services.lead_queries import (
    LeadPageResult,
    LeadRow,
    counted,
    match_count,
    median_days_to_won,
    page_conditions,
    page_result,
    page_rows,
    statistics_groups,
    statistics_of,
)
from app.services.preconditions import Precondition, ensure_precondition


class LeadService:
    # ---------------------------------------------------------------------------------- reads

    @staticmethod
    @transactional
    async def get_leads(
        db: AsyncSession,
        status: LeadStatus | str | Iterable[LeadStatus | str] | None = None,
        source: LeadSource | str | Iterable[LeadSource | str] | None = None,
        assigned_to: int | None = None,
        date_range_start: datetime | date | None = None,
        date_range_end: datetime | date | None = None,
        lead_score_min: int | None = None,
        lead_score_max: int | None = None,
        search: str | None = None,
        is_hot_leads_only: bool = False,
        tags: Iterable[str] | str | None = None,
        skip: int = 0,
        limit: int = 100,
        sort_by: str = "created_at",
        sort_order: str = "desc",
        *,
        user_id: int | None = None,
        include_archived: bool = False,
        cursor: str | None = None,
        exact_total: bool = False,
    ) -> tuple[list[Lead], int]:
        """The reference design's call: one page of leads matching every filter given, and how
        many match in all. A thin wrapper over `list_leads`, whose `LeadFilters` documents each
        filter; here `status`/`source` take one value or several, in any case.

        `total` is counted up to TOTAL_COUNT_CAP (then it is the cap) unless `exact_total`;
        `list_leads` also says whether it is exact and gives the cursor of the next page.
        """
        arguments = {name: value for name, value in locals().items() if name not in NOT_FILTERS}
        filters, paging = filters_and_paging(None, None, arguments)
        page = await _list_page(db, filters, paging, user_id=user_id, as_rows=False)
        return page.items, page.total

    @staticmethod
    @transactional
    async def list_leads(
        db: AsyncSession,
        filters: LeadFilters | None = None,
        paging: LeadPaging | None = None,
        *,
        user_id: int | None = None,
        **arguments: Any,
    ) -> LeadPageResult:
        """A page of the leads matching `filters`, ordered and cut by `paging`, with everything
        a page needs: `total`, whether it is exact, and the cursor of the next page (None on
        the last one). Walk a large result with `cursor`, not `skip`: every page then costs the
        same, and inserts cannot shift the pages. Agents see only their own leads.

        The filters and paging may also be given as keywords (`status="NEW", limit=20`), read
        as `LeadFilters.from_python` reads them.

        The items are read-only rows (attribute access like a `Lead`: `row.id`, `row.status`),
        not ORM objects: a page is read often, and skipping the identity map and per-object
        bookkeeping makes it several times cheaper. Use `get_lead_by_id` for a lead to change.
        """
        filters, paging = filters_and_paging(filters, paging, arguments)
        return await _list_page(db, filters, paging, user_id=user_id, as_rows=True)

    @staticmethod
    @transactional
    async def get_lead_by_id(
        db: AsyncSession,
        lead_id: int,
        user_id: int | None = None,
        check_assignment: bool = False,
    ) -> Lead:
        """The lead, archived or not. With `check_assignment`, only its assignee or a superuser
        may read it; to anyone else it is not found."""
        user = await get_acting_user(db, user_id) if user_id is not None else None
        lead = await _load_lead(db, lead_id)
        if check_assignment and user is not None:
            ensure_may_touch(user, lead)
        return lead

    @staticmethod
    @transactional
    async def get_lead_statistics(
        db: AsyncSession, *, user_id: int | None = None
    ) -> dict[str, Any]:
        """Pipeline figures over the leads the user may see, archived ones left out.

        Nothing counts leads here: `lead_stats` holds the count, score sum and hot count of the
        live leads per (assignee, status, source), kept up to date by triggers on `leads`
        (app/models/lead_stats.py). An agent's figures are their at most 48 rows (a primary-key
        range); everyone's are all rows summed per (status, source). Python adds up the at most
        48 groups. `median_days_to_won` is read from the WON leads themselves (a median is no
        sum to keep up to date).
        """
        scope = await _scope_user_id(db, user_id)
        connection = await db.connection()
        groups = await connection.execute(statistics_groups(scope))
        median = await connection.scalar(select(median_days_to_won(scope)))
        return statistics_of([tuple(row) for row in groups], median)

    # --------------------------------------------------------------------------------- writes

    @staticmethod
    @transactional
    async def create_lead(
        db: AsyncSession,
        lead_data: Mapping[str, Any] | Any,
        user_id: int,
        *,
        on_duplicate: OnDuplicate = OnDuplicate.ALLOW,
        assignment_rule_id: int | None = None,
    ) -> Lead:
        """A new lead, scored automatically unless `lead_score` is given (then it is manual).

        An agent's lead is assigned to that agent; only a superuser may assign it elsewhere,
        naming the assignee or (`assignment_rule_id`) a rule that picks one.
        `on_duplicate=REJECT`: DuplicateLeadException when a live lead the user may see has
        its email or phone.
        """
        data = as_data(lead_data)
        reject_unknown_fields(data, CREATE_FIELDS)
        user = await get_acting_user(db, user_id)
        new = prepare_new_lead(data)
        if assignment_rule_id is not None:
            _check_rule_use(user, new)
        assignee_id = assignee_of_new_lead(user.id, user.is_superuser, new.assigned_to)
        assignee = user if assignee_id == user.id else None
        if assignee_id is not None and assignee is None:
            assignee = await _active_user(db, assignee_id, role=NEW_LEAD_ROLE)
        lead = build_new_lead(new, user.id, assignee_id)
        if on_duplicate is OnDuplicate.REJECT:
            owner = None if user.is_superuser else user.id
            await refuse_duplicates(_rows_of(db), contact_check(lead, owner))
        if assignment_rule_id is not None:
            await assign_by_rule(db, lead, assignment_rule_id)
            assignee = await db.get(User, lead.assigned_to) if lead.assigned_to else None
        db.add(lead)
        await db.flush()
        record(db, created_event(lead, new.note))
        # The assignee is known already: set as loaded, not as a change, so that the flush has
        # no relationship to work out (a tenth of a create's CPU went to that).
        set_committed_value(lead, "assignee", assignee)
        return lead

    @staticmethod
    @transactional
    async def update_lead(
        db: AsyncSession,
        lead_id: int,
        lead_data: Mapping[str, Any] | Any,
        user_id: int,
        *,
        if_match: Precondition | None = None,
    ) -> Lead:
        """Apply a partial update and record every changed field in one note line.

        `notes` is appended as its own line, never replacing history; `tags` replaces the tag
        set. A change to source, company, email or tags re-scores an auto-scored lead. An update
        that changes nothing writes nothing.

        With `if_match` (as every write to one lead takes it), the lead changes only if it
        still has one of the versions named; otherwise `PreconditionFailedException` (412).
        """
        data = as_data(lead_data)
        reject_unknown_fields(data, UPDATE_FIELDS)
        user = await get_acting_user(db, user_id)
        lead = await _lead_to_change(db, lead_id, user, if_match)
        ensure_not_archived(lead)
        note = note_text(data.pop("notes", None))
        if "assigned_to" in data:
            target = reassignment_target(user.is_superuser, lead, data["assigned_to"])
            if target is not None:
                await _active_user(db, target, role=NEW_LEAD_ROLE)

        changes = apply_update(lead, data, note, user.id)
        if changes is not None:
            record_update(db, lead, user.id, changes, note)
        await db.flush()
        return await _with_assignee(db, lead)

    @staticmethod
    @transactional
    async def delete_lead(
        db: AsyncSession,
        lead_id: int,
        user_id: int,
        hard_delete: bool = False,
        *,
        if_match: Precondition | None = None,
    ) -> Lead | None:
        """Archive the lead (status LOST, tag `archived`, `archived_at` set, history kept), or
        with `hard_delete` (superusers only) remove the row. Archiving twice changes nothing.
        Returns the archived lead, or None after a hard delete."""
        user = await get_acting_user(db, user_id)
        lead = await _lead_to_change(db, lead_id, user, if_match)
        if hard_delete:
            if not user.is_superuser:
                raise PermissionDeniedException(
                    "Only a superuser may permanently delete a lead.", [lead.id]
                )
            await db.delete(lead)
            await erase_event_values(db, lead.id)
            # Leads merged into it stay archived, as leads of their own (no foreign key).
            await db.execute(
                update(Lead).where(Lead.merged_into_id == lead.id).values(merged_into_id=None)
            )
            record(
                db,
                event_values(
                    LeadEventType.DELETED,
                    lead.id,
                    user.id,
                    lead.version + 1,
                    assigned_to=lead.assigned_to,
                ),
            )
            return None
        if lead.archived_at is None:
            now = utcnow()
            before = _archive_fields(lead)
            lead.status_before_archive = lead.status
            if lead.status != LeadStatus.LOST:
                lead.status_changed_at = now
            lead.status = LeadStatus.LOST
            lead.archive_added_tag = lead.add_tag(ARCHIVED_TAG)
            lead.archived_at = lead.updated_at = now
            lead.add_note(
                f"Archived (status was {lead.status_before_archive.value})",
                author_id=user.id,
                at=now,
            )
            _record_change(db, lead, LeadEventType.ARCHIVED, user.id, before, at=now)
        return await _with_assignee(db, lead)

    @staticmethod
    @transactional
    async def restore_lead(
        db: AsyncSession, lead_id: int, user_id: int, *, if_match: Precondition | None = None
    ) -> Lead:
        """Undo a soft delete: the status from before archiving comes back, and the tags are
        exactly those the lead had (the `archived` tag goes only if archiving added it).
        Restoring a lead that is not archived changes nothing."""
        user = await get_acting_user(db, user_id)
        lead = await _lead_to_change(db, lead_id, user, if_match)
        if lead.merged_into_id is not None:
            raise ConflictException(
                f"Lead {lead.id} was merged into lead {lead.merged_into_id}: "
                f"POST /leads/{lead.merged_into_id}/unmerge brings it back."
            )
        if lead.archived_at is not None:
            now = utcnow()
            before = _archive_fields(lead)
            restored = lead.status_before_archive or LeadStatus.NEW
            lead.add_note(
                f"Restored (status {lead.status.value} → {restored.value})",
                author_id=user.id,
                at=now,
            )
            if lead.status != restored:
                lead.status_changed_at = now
            lead.status = restored
            lead.status_before_archive = None
            lead.archived_at = None
            # None only for a row archived by something other than delete_lead (raw SQL, a
            # bulk load): do what restore did before the flag existed
            if lead.archive_added_tag is not False:
                lead.remove_tag(ARCHIVED_TAG)
            lead.archive_added_tag = None
            lead.updated_at = now
            _record_change(db, lead, LeadEventType.RESTORED, user.id, before, at=now)
        return await _with_assignee(db, lead)

    @staticmethod
    @transactional
    async def add_lead_note(
        db: AsyncSession,
        lead_id: int,
        text: str,
        user_id: int,
        *,
        if_match: Precondition | None = None,
    ) -> Lead:
        """Append one note line to the lead's history."""
        note = note_text(text, "text")
        if note is None:
            raise ValidationException.at("text", "must not be blank")
        user = await get_acting_user(db, user_id)
        lead = await _lead_to_change(db, lead_id, user, if_match)
        ensure_not_archived(lead)
        now = utcnow()
        lead.add_note(note, author_id=user.id, at=now)
        lead.updated_at = now
        _record_change(db, lead, LeadEventType.NOTE_ADDED, user.id, {}, note=note, at=now)
        return await _with_assignee(db, lead)

    @staticmethod
    @transactional
    async def record_call_attempt(
        db: AsyncSession,
        lead_id: int,
        user_id: int,
        note: str | None = None,
        *,
        if_match: Precondition | None = None,
    ) -> Lead:
        """Count one call attempt, stamp `last_contact_date`, and note it."""
        text = note_text(note, "note")
        user = await get_acting_user(db, user_id)
        lead = await _lead_to_change(db, lead_id, user, if_match)
        ensure_not_archived(lead)
        now = utcnow()
        if lead.call_attempts >= MAX_INT32:
            raise ConflictException(f"Lead {lead.id} cannot count any more call attempts.")
        before = {name: getattr(lead, name) for name in CALL_FIELDS}
        attempts = lead.increment_call_attempts(at=now)
        lead.updated_at = now
        lead.add_note(
            f"Call attempt {attempts}" + (f": {text}" if text else ""),
            author_id=user.id,
            at=now,
        )
        _record_change(db, lead, LeadEventType.CALL_RECORDED, user.id, before, note=text, at=now)
        return await _with_assignee(db, lead)

    @staticmethod
    @transactional
    async def bulk_update_status(
        db: AsyncSession,
        lead_ids: Sequence[int],
        new_status: LeadStatus | str,
        user_id: int,
        *,
        note: str | None = None,
        ids_only: bool = False,
    ) -> list[Lead] | list[int]:
        """Set one status on many leads, all or nothing; each lead gets a note line saying what
        its status was. Returns the updated leads in id order, or with `ids_only=True` just
        their ids in order (no lead is read back: what the API answers with)."""
        ids = _checked_ids(lead_ids)
        status, text = enum_member(LeadStatus, "status", new_status), note_text(note, "note")
        user = await get_acting_user(db, user_id)
        await _set_status(db, ids, status, text, user)
        return ids if ids_only else await lead_bulk.reload_leads(db, ids)

    @staticmethod
    @transactional
    async def bulk_update_status_by_filter(
        db: AsyncSession,
        filters: LeadFilters,
        new_status: LeadStatus | str,
        user_id: int,
        *,
        expected_count: int,
        note: str | None = None,
    ) -> list[int]:
        """`bulk_update_status` on the live leads `filters` selects (an agent's: their own),
        if they are exactly `expected_count` (else MatchCountChangedException with the count
        now) and at most BULK_MAX_IDS (else ValidationException naming `filter`). The filter
        is turned into ids, locked, in the same transaction; returns them in order."""
        status, text = enum_member(LeadStatus, "status", new_status), note_text(note, "note")
        user = await get_acting_user(db, user_id)
        ids = await lead_bulk.matching_ids(db, filters, user, expected_count)
        if ids:
            await _set_status(db, ids, status, text, user)
        return ids

    @staticmethod
    @transactional
    async def assign_leads(
        db: AsyncSession,
        lead_ids: Sequence[int],
        agent_user_id: int,
        assigned_by_user_id: int,
        *,
        ids_only: bool = False,
    ) -> list[Lead] | list[int]:
        """Assign many leads to one active agent, all or nothing (superusers only); each lead's
        note line records who assigned it and who had it before. Returns the leads in id order,
        or with `ids_only=True` just their ids in order."""
        ids = _checked_ids(lead_ids)
        user = await _assigning_user(db, assigned_by_user_id, ids)
        agent = await _active_user(db, agent_user_id, role="Agent", field="agent_user_id")
        await _assign(db, ids, agent, user)
        return ids if ids_only else await lead_bulk.reload_leads(db, ids)

    @staticmethod
    @transactional
    async def assign_leads_by_filter(
        db: AsyncSession,
        filters: LeadFilters,
        agent_user_id: int,
        assigned_by_user_id: int,
        *,
        expected_count: int,
    ) -> list[int]:
        """`assign_leads` on the live leads `filters` selects, if they are exactly
        `expected_count` and at most BULK_MAX_IDS (see `bulk_update_status_by_filter`);
        superusers only. Returns their ids in order."""
        user = await _assigning_user(db, assigned_by_user_id)
        agent = await _active_user(db, agent_user_id, role="Agent", field="agent_user_id")
        ids = await lead_bulk.matching_ids(db, filters, user, expected_count)
        if ids:
            await _assign(db, ids, agent, user)
        return ids

    @staticmethod
    @transactional
    async def count_bulk_matches(
        db: AsyncSession, filters: LeadFilters, user_id: int, *, assigning: bool = False
    ) -> int:
        """How many leads a bulk change by `filters` would change now: the preview (dry run)
        of `bulk_update_status_by_filter`, or with `assigning` of `assign_leads_by_filter`
        (superusers only). Changes nothing; counts past BULK_MAX_IDS too."""
        if assigning:
            user = await _assigning_user(db, user_id)
        else:
            user = await get_acting_user(db, user_id)
        return await lead_bulk.count_matching(db, filters, user)


# --------------------------------------------------------------------------------- helpers


NOT_FILTERS = frozenset({"db", "user_id"})


def filters_and_paging(
    filters: LeadFilters | None, paging: LeadPaging | None, arguments: dict[str, Any]
) -> tuple[LeadFilters, LeadPaging]:
    """The two models from a Python caller's keywords (or as given): each keyword goes to the
    model that declares it, and one neither declares is refused by `LeadFilters`."""
    paging_arguments = {
        name: arguments.pop(name) for name in list(arguments) if name in LeadPaging.model_fields
    }
    if (filters is not None and arguments) or (paging is not None and paging_arguments):
        raise TypeError("give the filters and the paging either as models or as keywords")
    try:
        return (
            LeadFilters.from_python(**arguments) if filters is None else filters,
            LeadPaging.from_python(**paging_arguments) if paging is None else paging,
        )
    except pydantic.ValidationError as exc:
        raise ValidationException.of_pydantic(exc.errors()) from exc


async def _list_page(
    db: AsyncSession,
    filters: LeadFilters,
    paging: LeadPaging,
    *,
    user_id: int | None,
    as_rows: bool,
) -> LeadPageResult:
    scope = await _scope_user_id(db, user_id)
    where, page_where = page_conditions(filters, paging, scope)
    cap = None if paging.exact_total else get_settings().total_count_cap
    conn = await db.connection()
    total, total_is_exact = counted(int(await conn.scalar(match_count(where, cap)) or 0), cap)
    if as_rows:  # plain Core on the session's connection: no ORM result processing at all
        rows = [LeadRow._make(row) for row in (await conn.execute(page_rows(page_where, paging)))]
    else:
        rows = list(
            await db.scalars(
                page_rows(page_where, paging, Lead).options(selectinload(Lead.assignee))
            )
        )
    return page_result(rows, filters, paging, total, total_is_exact)


async def _scope_user_id(db: AsyncSession, user_id: int | None) -> int | None:
    """The assignee a read is limited to: none for trusted calls and superusers."""
    if user_id is None:
        return None
    user = await get_acting_user(db, user_id)
    return None if user.is_superuser else user.id


async def _load_lead(db: AsyncSession, lead_id: int, *, for_update: bool = False) -> Lead:
    if not is_whole_number(lead_id):
        raise ValidationException.at("lead_id", "must be a whole number")
    query = select(Lead).where(Lead.id == lead_id).execution_options(populate_existing=True)
    if for_update:
        query = query.with_for_update()
    else:  # the assignee in the same statement: one round trip for a lead read
        query = query.options(joinedload(Lead.assignee))
    lead = await db.scalar(query)
    if lead is None:
        raise LeadNotFoundException(lead_id)
    return lead


ARCHIVE_FIELDS = ("status", "tags", "archived_at")
CALL_FIELDS = ("call_attempts", "last_contact_date")


def _archive_fields(lead: Lead) -> dict[str, Any]:
    return {name: getattr(lead, name) for name in ARCHIVE_FIELDS}


def _record_change(
    db: AsyncSession,
    lead: Lead,
    type_: LeadEventType,
    actor_id: int,
    before: dict[str, Any],
    *,
    note: str | None = None,
    at: datetime,
) -> None:
    """Count the change in the lead's version and record its event: `before` holds the
    fields it may have changed, as they were; those whose value differs now are its changes."""
    after = {name: getattr(lead, name) for name in before}
    changed = [name for name in before if after[name] != before[name]]
    changes = changes_between(before, after, changed)
    record_change(db, lead, type_, actor_id, changes, note, at)


def _rows_of(db: AsyncSession) -> Any:
    async def rows(statement: Any, params: dict[str, Any]) -> list[Any]:
        return list(await db.execute(statement, params))

    return rows


async def _with_assignee(db: AsyncSession, lead: Lead) -> Lead:
    """Load `lead.assignee` (the model's relationships never load implicitly)."""
    await db.flush()
    await db.refresh(lead, ["assignee"])
    return lead


async def visible_lead(
    db: AsyncSession, lead_id: int, user: User, *, for_update: bool = False
) -> Lead:
    """The lead (locked, `for_update`), if `user` may see it (a superuser: any; an agent:
    their own); otherwise LeadNotFoundException, the same answer as for a lead that does not
    exist."""
    lead = await _load_lead(db, lead_id, for_update=for_update)
    ensure_may_touch(user, lead)
    return lead


async def _lead_to_change(
    db: AsyncSession, lead_id: int, user: User, if_match: Precondition | None
) -> Lead:
    """The lead, locked, once the user may change it and it satisfies the write's If-Match."""
    lead = await _load_lead(db, lead_id, for_update=True)
    ensure_may_touch(user, lead)
    ensure_precondition(if_match, lead.id, lead.version)
    return lead


def ensure_may_touch(user: User, lead: Lead) -> None:
    """An agent's view of the leads is their own: a lead they may not see is answered exactly
    like one that does not exist, so no call tells an agent which other ids are taken."""
    if not user.is_superuser and lead.assigned_to != user.id:
        raise LeadNotFoundException(lead.id)


def _check_rule_use(user: User, new: NewLeadData) -> None:
    if not user.is_superuser:
        raise PermissionDeniedException("Only a superuser may assign a lead by a rule.")
    if new.assigned_to is not None:
        raise ValidationException.at(
            "assignment_rule_id", "must not be given with assigned_to: one decides the assignee"
        )


async def _active_user(
    db: AsyncSession, user_id: Any, *, role: str, field: str = "assigned_to"
) -> User:
    if not is_whole_number(user_id):
        raise ValidationException.at(field, "must be a whole number")
    user = await db.get(User, user_id)
    if user is None:
        raise UserNotFoundException(user_id, role=role)
    if not user.is_active:
        raise InactiveUserException(user_id, role=role)
    return user


async def _set_status(
    db: AsyncSession, ids: list[int], status: LeadStatus, text: str | None, user: User
) -> None:
    """The bulk status change of `ids` (sorted, distinct), all or nothing: one UPDATE with
    each lead's note line built in SQL, and one INSERT of their events."""
    now = utcnow()
    prefix = f"{note_timestamp(now)} user {user.id}: Status "
    line: ColumnElement[str] = (
        literal(prefix) + cast(Lead.status, String) + literal(f" → {status.value} (bulk)")
    )
    if text:
        line = line + literal("\n" + format_note_line(text, author_id=user.id, at=now))
    change = update(Lead).values(
        status=status,
        status_changed_at=case(
            (Lead.status == status, Lead.status_changed_at), else_=literal(now, UTCDateTime())
        ),
        updated_at=now,
        notes=appended_note(line),
        version=Lead.version + 1,
    )
    event = lead_bulk.BulkEvent(
        LeadEventType.STATUS_CHANGED, "status", status.value, user.id, now, note=text
    )
    await lead_bulk.update_all_or_nothing(db, change, ids, user, event)


async def _assigning_user(db: AsyncSession, user_id: int, ids: Sequence[int] = ()) -> User:
    user = await get_acting_user(db, user_id)
    if not user.is_superuser:
        raise PermissionDeniedException("Only a superuser may assign leads.", ids)
    return user


async def _assign(db: AsyncSession, ids: list[int], agent: User, user: User) -> None:
    """The bulk assignment of `ids` to `agent`, all or nothing, each lead's note line naming
    who had it before."""
    now = utcnow()
    previous = func.coalesce(
        literal("user ") + cast(Lead.assigned_to, String), literal("unassigned")
    )
    line = (
        literal(f"{note_timestamp(now)} user {user.id}: Assigned to user {agent.id} (was ")
        + previous
        + literal(")")
    )
    change = update(Lead).values(
        assigned_to=agent.id, updated_at=now, notes=appended_note(line), version=Lead.version + 1
    )
    event = lead_bulk.BulkEvent(LeadEventType.ASSIGNED, "assigned_to", agent.id, user.id, now)
    await lead_bulk.update_all_or_nothing(db, change, ids, user, event)


def _checked_ids(lead_ids: Any) -> list[int]:
    limit = get_settings().bulk_max_ids
    if isinstance(lead_ids, str | bytes) or not isinstance(lead_ids, Iterable):
        raise ValidationException.at("lead_ids", "must be a list of lead ids")
    ids = list(lead_ids)
    if not ids:
        raise ValidationException.at("lead_ids", "must not be empty")
    if len(ids) > limit:
        raise ValidationException.at("lead_ids", f"may hold at most {limit} ids, not {len(ids)}")
    if not all(is_whole_number(i) for i in ids):
        raise ValidationException.at("lead_ids", "must all be whole numbers")
    repeated = sorted(i for i, count in Counter(ids).items() if count > 1)
    if repeated:
        raise ValidationException.at(
            "lead_ids", f"lists some ids more than once: {id_list(repeated)}"
        )
    return sorted(ids)


def appended_note(line: ColumnElement[str]) -> ColumnElement[str]:
    """SQL for notes with `line` appended on a new line, history untouched."""
    return case(
        (or_(Lead.notes.is_(None), Lead.notes == ""), line),
        else_=Lead.notes + literal("\n") + line,
    )
