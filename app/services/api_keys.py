"""API keys for scripts and integrations (issue 14).

A key, `crm_<prefix>_<secret>`, authenticates as its user with that user's scoping rules (an
agent's key sees the agent's leads). A `read` key may only read. Keys cannot manage keys,
sessions or passwords (the routes say so: app/api/deps.py `PersonCaller`).

Only a SHA-256 of the key is stored: a key is 32 random bytes, so a fast digest is as good as a
slow hash here, and it keeps the per-request check cheap. Which user and key a key string stands
for never changes, so that much is remembered per process (`_known`); whether the key still
works (not revoked, not expired, its account active) is checked by the statement of every
request, in the same round trip as the data (app/services/lead_reads.py `CALLER_OK`), so a
revocation takes effect at once everywhere.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from app.models import ApiKey, ApiKeyScope, User
from app.models.api_key import KEY_PREFIX_LENGTH
from app.models.types import utcnow
from app.services.base import get_acting_user, transactional
from app.services.exceptions import (
    ApiKeyNotFoundException,
    AuthenticationException,
    InactiveUserException,
    PermissionDeniedException,
    UserNotFoundException,
    ValidationException,
)
from app.services.reader import Reader, Writer
from app.services.security import AccessClaims, secret_digest

KEY_PREFIX = "crm_"
SECRET_BYTES = 32
KEY_SHAPE = re.compile(rf"^{KEY_PREFIX}([0-9a-f]{{{KEY_PREFIX_LENGTH}}})_[A-Za-z0-9_-]{{43}}$")
INVALID_KEY = "The API key is invalid, expired or revoked."
TOUCH_INTERVAL = timedelta(minutes=1)


def looks_like_key(token: str) -> bool:
    return token.startswith(KEY_PREFIX)


def _new_key() -> tuple[str, str]:
    prefix = secrets.token_hex(KEY_PREFIX_LENGTH // 2)
    return prefix, f"{KEY_PREFIX}{prefix}_{secrets.token_urlsafe(SECRET_BYTES)}"


class ApiKeyService:
    @staticmethod
    @transactional
    async def create(
        db: AsyncSession, data: Mapping[str, Any], *, acting_user_id: int
    ) -> tuple[ApiKey, str]:
        """A new key for the caller, or (superusers) for `user_id`, e.g. a service account;
        the key itself, which is never shown again, comes with it."""
        actor = await get_acting_user(db, acting_user_id)
        user_id = data.get("user_id") or actor.id
        if user_id != actor.id:
            if not actor.is_superuser:
                raise PermissionDeniedException("Only a superuser may make keys for other users.")
            owner = await db.get(User, user_id)
            if owner is None:
                raise UserNotFoundException(user_id)
            if not owner.is_active:
                raise InactiveUserException(user_id)
        expires_at: datetime | None = data.get("expires_at")
        if expires_at is not None and expires_at <= utcnow():
            raise ValidationException.at("expires_at", "must be in the future")
        for _ in range(3):  # a prefix is 32 random bits: a clash is rare, but possible
            prefix, key = _new_key()
            if await db.scalar(select(ApiKey.id).where(ApiKey.prefix == prefix)) is None:
                break
        row = ApiKey(
            user_id=user_id,
            name=data["name"],
            prefix=prefix,
            digest=secret_digest(key),
            scope=ApiKeyScope(data["scope"]).value,
            created_at=utcnow(),
            expires_at=expires_at,
        )
        db.add(row)
        await db.flush()
        return row, key

    @staticmethod
    @transactional
    async def list_keys(
        db: AsyncSession,
        *,
        acting_user_id: int,
        user_id: int | None = None,
        skip: int = 0,
        limit: int = 100,
    ) -> tuple[list[ApiKey], int]:
        """The keys not revoked of the caller, or (superusers) of `user_id`, newest first."""
        actor = await get_acting_user(db, acting_user_id)
        owner = user_id or actor.id
        if owner != actor.id and not actor.is_superuser:
            raise PermissionDeniedException("Only a superuser may list other users' keys.")
        where = (ApiKey.user_id == owner, ApiKey.revoked_at.is_(None))
        total = await db.scalar(select(func.count()).select_from(ApiKey).where(*where))
        rows = await db.scalars(
            select(ApiKey)
            .where(*where)
            .order_by(ApiKey.created_at.desc(), ApiKey.id.desc())
            .offset(skip)
            .limit(limit)
        )
        return list(rows), int(total or 0)

    @staticmethod
    @transactional
    async def get(db: AsyncSession, key_id: int, *, acting_user_id: int) -> ApiKey:
        """One of the caller's keys (a superuser: anyone's) that is not revoked; 404 else."""
        actor = await get_acting_user(db, acting_user_id)
        row = await db.scalar(select(ApiKey).where(*_manageable(key_id, actor)))
        if row is None:
            raise ApiKeyNotFoundException(key_id)
        return row

    @staticmethod
    @transactional
    async def revoke(db: AsyncSession, key_id: int, *, acting_user_id: int) -> None:
        """Revoke one of the caller's keys (a superuser: anyone's), at once. 404 for a key
        that is not theirs or already revoked."""
        actor = await get_acting_user(db, acting_user_id)
        revoked = await db.execute(
            update(ApiKey)
            .where(*_manageable(key_id, actor))
            .values(revoked_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        if not revoked.rowcount:  # type: ignore[attr-defined]
            raise ApiKeyNotFoundException(key_id)


def _manageable(key_id: int, actor: User) -> list[ColumnElement[bool]]:
    """The key, if the actor may read or revoke it: not revoked, and theirs (a superuser:
    anyone's)."""
    conditions = [ApiKey.id == key_id, ApiKey.revoked_at.is_(None)]
    if not actor.is_superuser:
        conditions.append(ApiKey.user_id == actor.id)
    return conditions


# --- on every request made with a key ---------------------------------------------------------

_KEY_OF = select(ApiKey.id, ApiKey.user_id, ApiKey.scope, User.is_superuser).join(
    User, ApiKey.user_id == User.id
)
# The key's identity by its digest (kept small: a flood of made-up keys is never remembered).
_known: dict[str, AccessClaims] = {}
KNOWN_KEPT = 4096
_touched: dict[str, float] = {}  # key digest -> when this process last wrote its last_used_at


async def key_claims(reader: Reader, key: str) -> AccessClaims:
    """Who the key stands for: AuthenticationException when no key has this value. Whether it
    still works is for the request's own statement to check (`CALLER_OK`)."""
    shape = KEY_SHAPE.match(key)
    if shape is None:
        raise AuthenticationException(INVALID_KEY)
    digest = secret_digest(key)
    claims = _known.get(digest)
    if claims is None:
        rows = await reader.rows(
            _KEY_OF.where(ApiKey.prefix == shape.group(1), ApiKey.digest == digest)
        )
        if not rows:
            raise AuthenticationException(INVALID_KEY)
        key_id, user_id, scope, superuser = rows[0]
        # The role is a hint, as in a token: the statements compare it with the stored flag.
        claims = AccessClaims(user_id, None, bool(superuser), key_id=key_id, scope=scope)
        if len(_known) >= KNOWN_KEPT:
            _known.clear()
        _known[digest] = claims
    return claims


_TOUCH = (
    update(ApiKey)
    .where(
        ApiKey.id == bindparam("key_id"),
        or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at < bindparam("stale_before")),
    )
    .values(last_used_at=bindparam("used_at"))
    .execution_options(synchronize_session=False)
)


async def touch(writer: Writer, key: str, key_id: int) -> None:
    """Note that the key was used: at most once a minute per process, and the statement
    writes only if the stored time is older than a minute, so however many processes serve
    the key, its row is written at most once a minute."""
    now, digest = time.monotonic(), secret_digest(key)
    if now - _touched.get(digest, float("-inf")) < TOUCH_INTERVAL.total_seconds():
        return
    if len(_touched) >= KNOWN_KEPT:
        _touched.clear()
    _touched[digest] = now
    used_at = utcnow()
    params = {"key_id": key_id, "used_at": used_at, "stale_before": used_at - TOUCH_INTERVAL}
    await writer.rows(_TOUCH, params)
