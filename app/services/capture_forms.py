"""`CaptureFormService`: the web forms that post leads without a login (superusers manage
them). Submissions themselves are app/services/lead_capture.py.

A form's public key is `cf_` + 32 random bytes (base64url). It is in the page for anyone to
read, so it grants nothing but posting to that form; only its SHA-256 is stored (as API keys
are), and a rotation makes the old key fail at once.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import AssignmentRule, CaptureForm
from app.models.capture_form import KEY_HINT_LENGTH
from app.models.types import utcnow
from app.models.validation import normalize_tag
from app.services.base import load_by_id, require_superuser, transactional
from app.services.exceptions import (
    AssignmentRuleNotFoundException,
    CaptureFormNotFoundException,
)
from app.services.security import secret_digest

WHAT = "capture forms"
KEY_PREFIX = "cf_"
KEY_BYTES = 32
UPDATABLE = frozenset({"name", "allowed_origins", "source", "tags", "assignment_rule_id"})


@dataclass(frozen=True, slots=True)
class NewKey:
    """A form with the key just made for it: the only time the key is known."""

    form: CaptureForm
    public_key: str


@dataclass(frozen=True, slots=True)
class CaptureTarget:
    """What a submission needs to know of its form before it is stored."""

    form_id: int
    allowed_origins: tuple[str, ...]


def _new_key(form: CaptureForm) -> str:
    key = KEY_PREFIX + secrets.token_urlsafe(KEY_BYTES)
    form.key_digest = secret_digest(key)
    form.key_hint = key[:KEY_HINT_LENGTH]
    return key


class CaptureFormService:
    @staticmethod
    @transactional
    async def create(db: AsyncSession, data: Mapping[str, Any], *, acting_user_id: int) -> NewKey:
        user = await require_superuser(db, acting_user_id, WHAT)
        now = utcnow()
        form = CaptureForm(created_by=user.id, created_at=now, updated_at=now)
        await _apply(db, form, {"tags": [], "allowed_origins": [], **data})
        key = _new_key(form)
        db.add(form)
        await db.flush()
        return NewKey(form, key)

    @staticmethod
    @transactional
    async def list_forms(
        db: AsyncSession, *, acting_user_id: int, skip: int = 0, limit: int = 100
    ) -> tuple[list[CaptureForm], int]:
        await require_superuser(db, acting_user_id, WHAT)
        total = await db.scalar(select(func.count()).select_from(CaptureForm))
        forms = await db.scalars(
            select(CaptureForm).order_by(CaptureForm.id).offset(skip).limit(limit)
        )
        return list(forms), int(total or 0)

    @staticmethod
    @transactional
    async def get(db: AsyncSession, form_id: int, *, acting_user_id: int) -> CaptureForm:
        await require_superuser(db, acting_user_id, WHAT)
        return await _load(db, form_id)

    @staticmethod
    @transactional
    async def update(
        db: AsyncSession, form_id: int, data: Mapping[str, Any], *, acting_user_id: int
    ) -> CaptureForm:
        await require_superuser(db, acting_user_id, WHAT)
        form = await _load(db, form_id, for_update=True)
        await _apply(db, form, data)
        form.updated_at = utcnow()
        await db.flush()
        return form

    @staticmethod
    @transactional
    async def delete(db: AsyncSession, form_id: int, *, acting_user_id: int) -> None:
        """The form and its rate counts go; its key stops working. Its leads stay."""
        await require_superuser(db, acting_user_id, WHAT)
        await db.delete(await _load(db, form_id, for_update=True))

    @staticmethod
    @transactional
    async def rotate_key(db: AsyncSession, form_id: int, *, acting_user_id: int) -> NewKey:
        """A new public key; the old one stops working at once."""
        await require_superuser(db, acting_user_id, WHAT)
        form = await _load(db, form_id, for_update=True)
        key = _new_key(form)
        form.updated_at = utcnow()
        await db.flush()
        return NewKey(form, key)

    @staticmethod
    @transactional
    async def target(db: AsyncSession, public_key: str) -> CaptureTarget:
        """The form a public key posts to (no login: the key is the only credential)."""
        row = (
            await db.execute(
                select(CaptureForm.id, CaptureForm.allowed_origins).where(
                    CaptureForm.key_digest == secret_digest(public_key)
                )
            )
        ).first()
        if row is None:
            raise CaptureFormNotFoundException()
        return CaptureTarget(row.id, tuple(row.allowed_origins))


async def _apply(db: AsyncSession, form: CaptureForm, data: Mapping[str, Any]) -> None:
    changes = {name: data[name] for name in UPDATABLE if name in data}
    if changes.get("assignment_rule_id") is not None:
        rule = await db.get(AssignmentRule, changes["assignment_rule_id"])
        if rule is None:
            raise AssignmentRuleNotFoundException(changes["assignment_rule_id"])
    if "tags" in changes:
        changes["tags"] = list(dict.fromkeys(normalize_tag("tags", t) for t in changes["tags"]))
    if "source" in changes:
        changes["source"] = str(changes["source"])
    for name, value in changes.items():
        setattr(form, name, value)


async def _load(db: AsyncSession, form_id: int, *, for_update: bool = False) -> CaptureForm:
    return await load_by_id(
        db, CaptureForm, form_id, CaptureFormNotFoundException, for_update=for_update
    )
