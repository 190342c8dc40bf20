"""Duplicate leads (issue 16): the same person entered twice.

One normalisation everywhere: an email is compared lowercased (`lower(email)`, which the
migration indexes: the model trims an email and lowercases its domain, and keeps the local
part as given), a phone in its stored form (`+` and digits, app/models/validation.py).

`POST /leads` refuses a lead whose email or phone a live lead the caller may see already has
(409 `duplicate`, naming those leads and what matched), unless sent `?on_duplicate=allow`. An
agent's candidates are their own leads only: a lead of someone else's with the same email is
not revealed, and the agent's create goes ahead. `LeadService.create_lead` allows duplicates
unless told otherwise, as the reference design's does.

The API's create inserts only if no such lead exists (a `NOT EXISTS` in its one statement,
app/services/lead_creation.py) and reads the duplicates to name them only when it stored
nothing. It is a test, not a constraint (duplicates stay possible on request): two creates of
one email at the same moment can both pass it. What it prevents is the common case, a lead
typed in again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import ColumnElement, Select, bindparam, exists, func, or_, select

from app.models import Lead
from app.services.exceptions import DuplicateLeadException

MAX_SHOWN = 20  # duplicates named in one refusal

Rows = Callable[[Select[Any], dict[str, Any]], Awaitable[list[Any]]]


class OnDuplicate(StrEnum):
    ALLOW = "allow"  # create it anyway
    REJECT = "reject"  # 409 naming the leads it repeats


_leads = Lead.__table__
# The one definition of "the same contact" (the candidates' search uses them too), against
# values bound as `dup_email` (lowercased) and `dup_phone` (as stored).
SAME_EMAIL = func.lower(_leads.c.email) == bindparam("dup_email")
SAME_PHONE = _leads.c.phone == bindparam("dup_phone")

# What a lead is compared by: (has an email, has a phone).
Shape = tuple[bool, bool]


@dataclass(frozen=True, slots=True)
class ContactCheck:
    """A new lead's duplicate test: which of email and phone it has, whose leads it is
    compared with (`owner_id`; None: everyone's) and the values bound."""

    shape: Shape
    scoped: bool
    params: dict[str, Any]


def contact_check(lead: Lead, owner_id: int | None) -> ContactCheck | None:
    """How to look for `lead`'s duplicates among the live leads of `owner_id` (everyone's
    when None); None for a lead with neither email nor phone."""
    email = lead.email.lower() if lead.email else None
    shape = (email is not None, lead.phone is not None)
    if not any(shape):
        return None
    params = {"dup_email": email, "dup_phone": lead.phone, "dup_owner": owner_id}
    params = {key: value for key, value in params.items() if value is not None}
    return ContactCheck(shape, owner_id is not None, params)


def _tests(shape: Shape) -> list[ColumnElement[bool]]:
    return [test for test, used in zip((SAME_EMAIL, SAME_PHONE), shape, strict=True) if used]


def _candidates(shape: Shape, scoped: bool) -> list[ColumnElement[bool]]:
    where = [_leads.c.archived_at.is_(None), or_(*_tests(shape))]
    if scoped:
        where.append(_leads.c.assigned_to == bindparam("dup_owner"))
    return where


def no_duplicate(shape: Shape, scoped: bool) -> ColumnElement[bool]:
    """True unless a live lead (the owner's, `scoped`) has the email or phone: the hot create
    inserts only when this holds, so refusing costs no statement of its own."""
    return ~exists().where(*_candidates(shape, scoped))


def _same_contact(shape: Shape, scoped: bool) -> Select[Any]:
    """The duplicates and which of email and phone each shares."""
    labels = (test.label(f"m{i}") for i, test in enumerate(_tests(shape)))
    statement = select(_leads.c.id, *labels).where(*_candidates(shape, scoped))
    return statement.order_by(_leads.c.id).limit(MAX_SHOWN)


SHAPES: tuple[Shape, ...] = ((True, False), (False, True), (True, True))
# Built once per shape, so compiled once.
SAME_CONTACT = {
    (shape, scoped): _same_contact(shape, scoped) for shape in SHAPES for scoped in (False, True)
}


async def refuse_duplicates(rows: Rows, check: ContactCheck | None) -> None:
    """DuplicateLeadException naming the live leads `check` finds; nothing if none."""
    if check is None:
        return
    found = await rows(SAME_CONTACT[check.shape, check.scoped], check.params)
    names = [name for name, used in zip(("email", "phone"), check.shape, strict=True) if used]
    duplicates = [
        {"id": row[0], "matched_on": [n for n, hit in zip(names, row[1:], strict=True) if hit]}
        for row in found
    ]
    if duplicates:
        raise DuplicateLeadException(duplicates)


async def first_duplicate(db: Any, check: ContactCheck | None) -> int | None:
    """The first (lowest id) live lead `check` finds, or None: the lead a capture form's
    re-submission goes to."""
    if check is None:
        return None
    found = await db.execute(SAME_CONTACT[check.shape, check.scoped], check.params)
    row = found.first()
    return None if row is None else int(row[0])
