"""A new lead: the rules that make one, shared by both roads that store it.

`LeadService.create_lead` stores the lead through the ORM in a session's transaction (scripts,
imports, the reference examples). The API's `POST /leads` stores it with `LeadCreation.create`:
one `INSERT ... SELECT` that checks, in the same round trip as the insert, the caller's account
(active, token version, the role the token claims), for a superuser naming an assignee that the
assignee is active, and unless duplicates are allowed that no live lead the caller may see has
its email or phone (app/services/lead_duplicates.py); it commits by being one statement. On
PostgreSQL that statement runs on a raw asyncpg connection (app/services/reader.py): a
session's own begin, user look-up, unit of work and commit were most of a create's CPU (issue
12). Only when the insert stores nothing do further statements run, to tell why (the same
answers, in the same order, as `LeadService.create_lead` gives).

Both build the lead with `prepare_new_lead`, `assignee_of_new_lead` and `build_new_lead`, so
the two cannot differ in what they accept, how they score it or what its notes say.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Insert, Select, bindparam, insert, select

from app.models import FieldValidationError, Lead, LeadEvent, LeadEventType, User
from app.models.types import utcnow
from app.models.validation import NO_CONTACT, is_whole_number, no_nul
from app.services import idempotency
from app.services.base import as_data, in_transaction, reject_unknown_fields
from app.services.exceptions import (
    AuthenticationException,
    CRMException,
    InactiveUserException,
    PermissionDeniedException,
    UserNotFoundException,
    ValidationException,
)
from app.services.lead_duplicates import (
    SHAPES,
    OnDuplicate,
    Shape,
    contact_check,
    no_duplicate,
    refuse_duplicates,
)
from app.services.lead_events import (
    INSERT_EVENT,
    bound,
    changes_between,
    event_parameters,
    event_values,
)
from app.services.lead_queries import LEAD_COLUMNS, LeadRow
from app.services.lead_reads import (
    CALLER,
    CALLER_OK,
    CLAIMED_ROLE,
    INVALID_TOKEN,
    account_params,
    account_role,
)
from app.services.reader import Reader, Writer
from app.services.scoring import calculate_lead_score
from app.services.security import AccessClaims

# Fields a caller may set, in the order changes are reported in the "Updated:" note line.
TRACKED_FIELDS = (
    "first_name",
    "last_name",
    "email",
    "phone",
    "company",
    "job_title",
    "source",
    "status",
    "assigned_to",
    "lead_score",
    "score_is_manual",
    "probability",
    "estimated_value",
    "tags",
    "call_attempts",
    "last_contact_date",
    "next_follow_up_date",
)
CREATE_FIELDS = frozenset(TRACKED_FIELDS) - {"score_is_manual"} | {"notes"}
REQUIRED_FIELDS = ("first_name", "last_name")
NEW_LEAD_ROLE = "Agent"  # how errors name the user a new lead is assigned to


def note_text(text: Any, field: str = "notes") -> str | None:
    """A note as given, or None for a blank one; not text, or holding NUL: a 422."""
    if text is None:
        return None
    if not isinstance(text, str):
        raise ValidationException.at(field, "must be text")
    no_nul(field, text)
    return text if text.strip() else None


def auto_score(lead: Lead) -> int:
    return calculate_lead_score(
        source=lead.source, company=lead.company, email=lead.email, tags=lead.tags
    )


@dataclass(frozen=True, slots=True)
class NewLeadData:
    """A create request, split into the lead's own fields, its first note and its assignee."""

    fields: dict[str, Any]
    note: str | None
    assigned_to: Any


def prepare_new_lead(lead_data: Mapping[str, Any] | Any) -> NewLeadData:
    data = as_data(lead_data)
    reject_unknown_fields(data, CREATE_FIELDS)
    note = note_text(data.pop("notes", None))
    return NewLeadData(data, note, data.pop("assigned_to", None))


def assignee_of_new_lead(user_id: int, superuser: bool, assigned_to: Any) -> int | None:
    """Who the lead goes to. An agent's lead is the agent's; a superuser's goes to whom they
    name (who must then be an active user: the caller checks), or to nobody."""
    if not superuser:
        if assigned_to is not None and assigned_to != user_id:
            raise PermissionDeniedException("Only a superuser may assign a lead to someone else.")
        return user_id
    if assigned_to is not None and not is_whole_number(assigned_to):
        raise ValidationException.at("assigned_to", "must be a whole number")
    return assigned_to


def build_new_lead(new: NewLeadData, author_id: int | None, assignee_id: int | None) -> Lead:
    """The lead, validated field by field (every bad field named at once), scored unless a
    score is given, with its "Created" note line: not yet added to any session. No author:
    the system made it (a capture form's submission)."""
    lead = Lead()
    errors = [
        FieldValidationError(name, "is required")
        for name in REQUIRED_FIELDS
        if name not in new.fields
    ]
    for name, value in new.fields.items():
        if name == "lead_score" and value is None:
            continue
        try:
            setattr(lead, name, value)
        except FieldValidationError as exc:
            errors.append(exc)
    if not errors and lead.email is None and lead.phone is None:
        errors.append(FieldValidationError("email", NO_CONTACT))
    if errors:
        raise ValidationException.of_fields(errors)

    lead.score_is_manual = new.fields.get("lead_score") is not None
    if not lead.score_is_manual:
        lead.lead_score = auto_score(lead)
    lead.assigned_to = assignee_id
    lead.created_by = author_id
    now = utcnow()
    lead.created_at = lead.updated_at = lead.status_changed_at = now
    lead.add_note(f"Created (score {lead.lead_score})", author_id=author_id, at=now)
    if new.note:
        lead.add_note(new.note, author_id=author_id, at=now)
    return lead


def created_event(lead: Lead, note: str | None) -> dict[str, Any]:
    """The `lead.created` event of a new lead: every field it was created with (old: null),
    its first note as the event's note. A lead not stored yet has no id: the statement that
    stores it gives the event its `lead_id`."""
    fields = [n for n in TRACKED_FIELDS if getattr(lead, n) not in (None, [])]
    changes = changes_between({}, {n: getattr(lead, n) for n in fields}, fields)
    return event_values(
        LeadEventType.CREATED,
        lead.id,
        lead.created_by,
        1,
        assigned_to=lead.assigned_to,
        changes=changes,
        note=note,
        at=lead.created_at,
    )


# --- the API's create: one statement ---------------------------------------------------------

_leads = Lead.__table__
_events = LeadEvent.__table__
_assignee = User.__table__.alias("assignee")
_INSERTED = tuple(column for column in _leads.c if not column.primary_key)
ASSIGNEE_ID = bindparam("assignee_id")


def _insert_for_caller(superuser: bool, named_assignee: bool, unique: Shape | None) -> Insert:
    """The new lead's row, from typed parameters, selected from the caller's account row (and
    the assignee's): nothing is inserted unless the account passes, the assignee is active and
    (`unique`: compared by email, phone or both) no live lead the caller may see repeats it."""
    source: Any = CALLER
    conditions = [*CALLER_OK, CLAIMED_ROLE]
    if named_assignee:
        source = CALLER.join(_assignee, _assignee.c.id == ASSIGNEE_ID)
        conditions.append(_assignee.c.is_active.is_(True))
    if unique is not None:
        conditions.append(no_duplicate(unique, scoped=not superuser))
    row = select(*(bindparam(c.key, type_=c.type) for c in _INSERTED))
    row = row.select_from(source).where(*conditions)
    return insert(_leads).from_select([c.key for c in _INSERTED], row).returning(*LEAD_COLUMNS)


def _with_event(insert_lead: Insert) -> Select[Any]:
    """PostgreSQL: the insert and its `lead.created` event in one statement (a data-modifying
    CTE each; SQLite has none, and runs the two in one transaction instead)."""
    new = insert_lead.cte("new_lead")
    event = event_parameters()
    event["lead_id"] = new.c.id
    event_row = select(*event.values())
    insert_event = insert(_events).from_select(list(event), event_row).cte("new_event")
    return select(*new.c).add_cte(insert_event)


# (superuser, named assignee, compared by): the shapes hold no values of their own, so they
# are built once (and so compiled once).
InsertShape = tuple[bool, bool, Shape | None]
INSERT_FOR_CALLER: dict[InsertShape, Insert] = {
    (superuser, named, unique): _insert_for_caller(superuser, named, unique)
    for superuser in (False, True)
    for named in (False, True)
    for unique in (None, *SHAPES)
    if superuser or not named
}
INSERT_WITH_EVENT = {
    shape: _with_event(statement) for shape, statement in INSERT_FOR_CALLER.items()
}
ASSIGNEE = select(_assignee.c.is_active).where(_assignee.c.id == ASSIGNEE_ID)


def row_values(lead: Lead) -> dict[str, Any]:
    """Every stored column of a transient lead, unset ones at their column default (what the
    ORM's flush would have filled in)."""
    values = {}
    for column in _INSERTED:
        value = lead.__dict__.get(column.key)
        default = column.default
        if value is None and default is not None:
            value = default.arg(None) if default.is_callable else default.arg  # type: ignore[attr-defined]
        values[column.key] = value
    return values


class LeadCreation:
    @staticmethod
    async def create(
        writer: Writer,
        lead_data: Mapping[str, Any] | Any,
        caller: AccessClaims,
        *,
        on_duplicate: OnDuplicate = OnDuplicate.ALLOW,
    ) -> LeadRow:
        """What `LeadService.create_lead` does for the caller, in one statement when it
        succeeds. A request refused before the statement still hears 401 first if the
        account may not act; a token whose role hint went stale is served as the role stored.
        `on_duplicate=REJECT`: DuplicateLeadException for a lead whose email or phone a live
        lead the caller may see has (app/services/lead_duplicates.py)."""
        superuser = caller.superuser
        if superuser is None:
            superuser = await account_role(writer, caller)
        for _ in range(3):  # the role can change under a request; not without end
            try:
                new = prepare_new_lead(lead_data)
                assignee_id = assignee_of_new_lead(caller.user_id, superuser, new.assigned_to)
            except CRMException:
                stored = await account_role(writer, caller)
                if stored != superuser:
                    superuser = stored
                    continue
                raise
            named = superuser and assignee_id is not None
            try:
                lead = build_new_lead(new, caller.user_id, assignee_id)
            except CRMException:
                stored = await account_role(writer, caller)
                if stored != superuser:
                    superuser = stored
                    continue
                if named:  # as in LeadService: the assignee is checked before the fields
                    await check_assignee(writer, assignee_id)
                raise
            check = None
            if on_duplicate is OnDuplicate.REJECT:
                check = contact_check(lead, None if superuser else caller.user_id)
            params = {
                **row_values(lead),
                **account_params(caller),
                "caller_superuser": superuser,
                "assignee_id": assignee_id,
                **(check.params if check else {}),
            }
            event = bound(created_event(lead, new.note))
            shape = (superuser, named, check.shape if check else None)
            rows = await _store(writer, shape, params, event)
            if rows:
                return LeadRow._make(rows[0])
            stored = await account_role(writer, caller)
            if stored != superuser:
                superuser = stored
                continue
            if named:
                await check_assignee(writer, assignee_id)
            await refuse_duplicates(writer.rows, check)
            # All pass now: one of them changed between the statements. Try again.
        raise AuthenticationException(INVALID_TOKEN)


async def _store(
    writer: Writer, shape: InsertShape, params: dict[str, Any], event: dict[str, Any]
) -> list[tuple]:
    """The new lead's row (none if the checks failed), its event written with it. Sent with
    an Idempotency-Key, the same statements run in a transaction that claims the key first and
    stores the answer last (app/services/idempotency.py)."""
    call = idempotency.current.get()
    if call is not None:
        return await _store_once(writer, call, shape, params, event)
    if writer.dialect_name == "postgresql":  # one statement: atomic on its own
        return await _insert(writer, "postgresql", shape, params, event)
    async with writer.transaction() as tx:
        return await _insert(tx, writer.dialect_name, shape, params, event)


async def _insert(
    on: Reader,
    dialect: str,
    shape: InsertShape,
    params: dict[str, Any],
    event: dict[str, Any],
) -> list[tuple]:
    """The lead and its event: on PostgreSQL one statement (two data-modifying CTEs), on
    SQLite, which has no INSERT in a WITH, two (the caller makes them one transaction)."""
    if dialect == "postgresql":
        return await on.rows(INSERT_WITH_EVENT[shape], {**params, **event})
    rows = await on.rows(INSERT_FOR_CALLER[shape], params)
    if rows:
        await on.rows(INSERT_EVENT, {**event, "event_lead_id": rows[0][0]})
    return rows


async def _store_once(
    writer: Writer,
    call: idempotency.IdempotentCall,
    shape: InsertShape,
    params: dict[str, Any],
    event: dict[str, Any],
) -> list[tuple]:
    dialect = writer.dialect_name

    async def work(tx: Reader) -> list[tuple]:
        await idempotency.claim(tx, dialect, call)
        rows = await _insert(tx, dialect, shape, params, event)
        if rows:
            await idempotency.store(tx, dialect, call, LeadRow._make(rows[0]))
        return rows

    return await in_transaction(writer, work)


async def check_assignee(writer: Writer, assignee_id: Any) -> None:
    rows = await writer.rows(ASSIGNEE, {"assignee_id": assignee_id})
    if not rows:
        raise UserNotFoundException(assignee_id, role=NEW_LEAD_ROLE)
    if not rows[0][0]:
        raise InactiveUserException(assignee_id, role=NEW_LEAD_ROLE)
