"""A lead's likely duplicates (`GET /leads/{id}/duplicates`, issue 16).

A candidate is a live lead the caller may see (an agent: their own) that shares the lead's
email (case aside) or phone, or whose name key (first name, last name and company, without
case or accents) is alike the lead's: a pg_trgm similarity s of ALIKE_THRESHOLD or more
(app/models/name_likeness.py). Its `score` (0-1) takes the three as independent evidence:

    score = 1 - (1 - 0.9 [same email]) (1 - 0.8 [same phone]) (1 - 0.7 s)

So a shared email alone scores 0.9, email and phone 0.98, and a name alone at most 0.7: any
lead sharing an email or a phone outranks every lead that only has a like name. Ties go to
an identical name key first, then to the lowest id.

One statement finds, scores and ranks them. On PostgreSQL it gathers the leads sharing the
email or phone (their two B-tree indexes), and the leads of every alike name key: the trigram
search runs over `lead_name_keys`, each distinct key once (many leads share a name, and over
the leads themselves a common name's trigrams match tens of thousands of rows), the leads of
each key come from a B-tree index on the key, the first 20 by id (an agent's: by assignee and
id), and only the best 20 of those, ranked by their key's likeness, are scored with the rest.
That is exact: within one key every lead has the same likeness, so no lead beyond a key's
first 20 can rank above them, and a lead with only an alike name ranks below every lead
sharing the email or phone. SQLite, for the small databases it serves, compares the
lead with every live lead, in the same statement shape otherwise.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    Float,
    Select,
    and_,
    bindparam,
    case,
    cast,
    func,
    lateral,
    or_,
    select,
    true,
)
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Lead
from app.models.name_likeness import (
    ALIKE_THRESHOLD,
    LEAD_NAME_KEYS,
    alike,
    name_key_of,
)
from app.services.base import get_acting_user, transactional
from app.services.lead_duplicates import MAX_SHOWN, SAME_EMAIL, SAME_PHONE
from app.services.lead_service import visible_lead

EMAIL_WEIGHT = 0.9
PHONE_WEIGHT = 0.8
NAME_WEIGHT = 0.7

_leads = Lead.__table__
_TARGET_ID = bindparam("lead_id")
_OWNER = bindparam("owner_id")
_lead_key = name_key_of(_leads)
# The lead's own email (lowercased), phone and name key, read first: as values bound to the
# search (not a subquery of it) they let the planner see how common the name is.
TARGET = select(func.lower(_leads.c.email), _leads.c.phone, _lead_key).where(
    _leads.c.id == _TARGET_ID
)
_NAME_KEY = bindparam("name_key")
_BY_EMAIL, _BY_PHONE = SAME_EMAIL, SAME_PHONE


def _absent(test: Any, weight: Any) -> Any:
    """1 - weight when the evidence is there, else 1."""
    return 1 - case((test, weight), else_=0.0)


def _others(scoped: bool) -> list[Any]:
    """The leads a candidate may be: live, not the lead itself, the agent's own (`scoped`)."""
    where = [_leads.c.archived_at.is_(None), _leads.c.id != _TARGET_ID]
    if scoped:
        where.append(_leads.c.assigned_to == _OWNER)
    return where


def _alike_leads(scoped: bool) -> Any:
    """PostgreSQL: the best MAX_SHOWN leads that only have an alike name. The alike keys are
    ranked once each (likeness, the identical one first, then the key); each key's leads come
    by id from the B-tree index on the key, so the rows arrive in the final order and the
    LIMIT stops the walk as soon as it has its leads (an incremental sort), however many
    leads the remaining keys have."""
    keys = LEAD_NAME_KEYS
    likeness = func.similarity(keys.c.key, _NAME_KEY).label("likeness")
    other_key = case((keys.c.key == _NAME_KEY, 0), else_=1).label("other_key")
    alike_keys = (
        select(keys.c.key, likeness, other_key)
        .where(alike(keys.c.key, _NAME_KEY))
        .order_by(likeness.desc(), other_key, keys.c.key)
        .subquery("alike_keys")
    )
    per_key = lateral(
        select(_leads.c.id)
        .where(*_others(scoped), _lead_key == alike_keys.c.key)
        .order_by(_leads.c.id)
        .limit(MAX_SHOWN),
        name="per_key",
    )
    return (
        select(per_key.c.id)
        .select_from(alike_keys.join(per_key, true()))
        .order_by(
            alike_keys.c.likeness.desc(), alike_keys.c.other_key, alike_keys.c.key, per_key.c.id
        )
        .limit(MAX_SHOWN)
    )


def _candidates(dialect: str, scoped: bool) -> Select[Any]:
    likeness = cast(func.similarity(_lead_key, _NAME_KEY), Float)
    if dialect == "postgresql":
        contact = select(_leads.c.id).where(*_others(scoped), or_(_BY_EMAIL, _BY_PHONE))
        named = _alike_leads(scoped).subquery("named")
        found = _leads.c.id.in_(contact.union(select(named.c.id)))
    else:
        alike_name = likeness >= ALIKE_THRESHOLD
        found = and_(*_others(scoped), or_(_BY_EMAIL, _BY_PHONE, alike_name))
    doubt = (
        _absent(_BY_EMAIL, EMAIL_WEIGHT)
        * _absent(_BY_PHONE, PHONE_WEIGHT)
        * (1 - NAME_WEIGHT * likeness)
    )
    score = (1 - doubt).label("score")
    return (
        select(
            Lead,
            score,
            case((_BY_EMAIL, True), else_=False).label("by_email"),
            case((_BY_PHONE, True), else_=False).label("by_phone"),
            likeness.label("likeness"),
        )
        .where(found)
        .order_by(score.desc(), case((_lead_key == _NAME_KEY, 0), else_=1), _lead_key, _leads.c.id)
        .limit(MAX_SHOWN)
    )


CANDIDATES = {
    (dialect, scoped): _candidates(dialect, scoped)
    for dialect in ("postgresql", "sqlite")
    for scoped in (False, True)
}


def _matched_on(by_email: bool, by_phone: bool, likeness: float) -> list[str]:
    tests = (
        ("email", by_email),
        ("phone", by_phone),
        ("name+company", likeness >= ALIKE_THRESHOLD),
    )
    return [name for name, hit in tests if hit]


class DuplicateCandidates:
    @staticmethod
    @transactional
    async def of_lead(db: AsyncSession, lead_id: int, user_id: int) -> list[dict[str, Any]]:
        """The lead's likeliest duplicates among the live leads `user_id` may see, best first
        (at most MAX_SHOWN): `{"lead", "score", "matched_on"}` each. LeadNotFoundException
        for a lead the user may not see."""
        user = await get_acting_user(db, user_id)
        await visible_lead(db, lead_id, user)
        email, phone, key = (await db.execute(TARGET, {"lead_id": lead_id})).one()
        params = {"lead_id": lead_id, "owner_id": user.id, "dup_email": email, "dup_phone": phone}
        params["name_key"] = key
        dialect = db.get_bind().dialect.name
        rows = await db.execute(CANDIDATES[dialect, not user.is_superuser], params)
        return [
            {
                "lead": lead,
                "score": round(min(max(score, 0.0), 1.0), 3),
                "matched_on": _matched_on(by_email, by_phone, likeness or 0.0),
            }
            for lead, score, by_email, by_phone, likeness in rows
        ]
