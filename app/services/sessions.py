"""Sessions: one login on one device, kept alive by rotating refresh tokens (issue 14).

A login starts a session and hands out its first refresh token. `POST /auth/refresh` trades
the session's current refresh token for a new access token and a new refresh token; the one
presented is replaced. The replaced tokens stay in the chain (as digests), because one coming
back is news:

- within `REFRESH_REUSE_GRACE_SECONDS` of its replacement, it is the same client asking twice
  (two tabs, a retry after a lost answer): it gets the very pair the first request got. Each
  refresh token is derived from the one it replaces with the session's own key (HMAC), so the
  pair can be given again although only digests are stored;
- later, somebody else has a copy: the whole session is revoked, and so every access token
  issued for it stops working at once (the account check on every path checks the session).

State is rows, never process memory: every app process behind one database sees the same
sessions. Each public method is one transaction; `refresh` commits a revocation, and the
refused attempt (see `login_throttle`: a client address that keeps sending refused tokens gets
429 like one that keeps guessing passwords), before it raises, like
`UserService.authenticate` does with a failed login.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import get_settings
from app.models import AuthSession, RefreshToken, User
from app.models.auth_session import CLIENT_ADDRESS_MAX_LENGTH, USER_AGENT_MAX_LENGTH
from app.models.types import utcnow
from app.services import login_throttle
from app.services.base import get_acting_user, transactional
from app.services.exceptions import (
    AuthenticationException,
    PermissionDeniedException,
    SessionNotFoundException,
    UserNotFoundException,
)
from app.services.security import secret_digest

logger = logging.getLogger(__name__)

REFRESH_TOKEN_BYTES = 32
INVALID_REFRESH_TOKEN = "The refresh token is invalid, expired or revoked; log in again."


class RevokeReason(StrEnum):
    LOGOUT = "logout"
    REVOKED = "revoked"
    PASSWORD_CHANGE = "password_change"
    ACCOUNT_CHANGE = "account_change"
    REFRESH_REUSE = "refresh_reuse"


@dataclass(frozen=True)
class IssuedSession:
    """What a login or a refresh hands out, besides the access token made from it."""

    user: User
    session_id: int
    refresh_token: str
    issued_at: datetime  # the access token's issue time: the same again for a repeated refresh


def _successor(chain_key: bytes, token: str) -> str:
    """The refresh token that replaces `token`: a function of the session's key and the token
    alone, so a repeat within the grace period gets the same one."""
    mac = hmac.new(chain_key, token.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def _lifetime() -> timedelta:
    return timedelta(days=get_settings().refresh_token_expire_days)


class SessionService:
    @staticmethod
    @transactional
    async def start(
        db: AsyncSession,
        user: User,
        *,
        user_agent: str | None = None,
        client_address: str | None = None,
    ) -> IssuedSession:
        """A new session for a user who has just proved who they are, with its first refresh
        token. The user's sessions that ended long ago are cleared out on the way."""
        now = utcnow()
        await db.execute(
            delete(AuthSession)
            .where(
                AuthSession.user_id == user.id,
                or_(AuthSession.expires_at <= now, AuthSession.revoked_at <= now - _lifetime()),
            )
            .execution_options(synchronize_session=False)
        )
        session = AuthSession(
            user_id=user.id,
            created_at=now,
            last_used_at=now,
            expires_at=now + _lifetime(),
            user_agent=_clipped(user_agent, USER_AGENT_MAX_LENGTH),
            client_address=_clipped(client_address, CLIENT_ADDRESS_MAX_LENGTH),
            chain_key=secrets.token_bytes(32),
        )
        db.add(session)
        await db.flush()
        token = secrets.token_urlsafe(REFRESH_TOKEN_BYTES)
        db.add(RefreshToken(digest=secret_digest(token), session_id=session.id, issued_at=now))
        await db.flush()
        return IssuedSession(user, session.id, token, now)

    @staticmethod
    async def refresh(
        db: AsyncSession, refresh_token: str, *, client_address: str | None = None
    ) -> IssuedSession:
        """The session's next pair for its current refresh token (see the module's docstring
        for a replaced one). AuthenticationException for anything else, after the session of a
        reused token has been revoked for good and the refusal counted against the client
        address. TooManyAttemptsException, whatever the token, while the address is locked
        out."""
        outcome = await _rotate(db, refresh_token, client_address)
        if isinstance(outcome, IssuedSession):
            return outcome
        raise AuthenticationException(INVALID_REFRESH_TOKEN)

    @staticmethod
    @transactional
    async def list_sessions(
        db: AsyncSession, user_id: int, *, acting_user_id: int, skip: int = 0, limit: int = 100
    ) -> tuple[list[AuthSession], int]:
        """The user's live sessions, newest first, and how many there are."""
        await _may_manage(db, user_id, acting_user_id)
        live = (AuthSession.user_id == user_id, *_live(utcnow()))
        total = await db.scalar(select(func.count()).select_from(AuthSession).where(*live))
        rows = await db.scalars(
            select(AuthSession)
            .where(*live)
            .order_by(AuthSession.created_at.desc(), AuthSession.id.desc())
            .offset(skip)
            .limit(limit)
        )
        return list(rows), int(total or 0)

    @staticmethod
    @transactional
    async def revoke(
        db: AsyncSession,
        session_id: int,
        *,
        user_id: int,
        acting_user_id: int,
        reason: RevokeReason = RevokeReason.REVOKED,
    ) -> None:
        """End one of the user's sessions now. 404 for a session that is not the user's, or
        has already ended."""
        await _may_manage(db, user_id, acting_user_id)
        ended = await db.execute(
            update(AuthSession)
            .where(AuthSession.id == session_id, AuthSession.user_id == user_id, *_live(utcnow()))
            .values(revoked_at=utcnow(), revoke_reason=reason.value)
            .execution_options(synchronize_session=False)
        )
        if not ended.rowcount:  # type: ignore[attr-defined]
            raise SessionNotFoundException(session_id)


async def revoke_sessions(
    db: AsyncSession, user_id: int, reason: RevokeReason, *, keep: int | None = None
) -> None:
    """End all of a user's sessions, but `keep`, inside the caller's transaction (a password
    change, a deactivation)."""
    query = update(AuthSession).where(
        AuthSession.user_id == user_id, AuthSession.revoked_at.is_(None)
    )
    if keep is not None:
        query = query.where(AuthSession.id != keep)
    await db.execute(
        query.values(revoked_at=utcnow(), revoke_reason=reason.value).execution_options(
            synchronize_session=False
        )
    )


def _live(now: datetime) -> tuple:
    return (AuthSession.revoked_at.is_(None), AuthSession.expires_at > now)


async def _may_manage(db: AsyncSession, user_id: int, acting_user_id: int) -> None:
    actor = await get_acting_user(db, acting_user_id)
    if actor.id == user_id:
        return
    if not actor.is_superuser:
        raise PermissionDeniedException("Only a superuser may manage other users' sessions.")
    if await db.get(User, user_id) is None:
        raise UserNotFoundException(user_id)


class _Refused(StrEnum):
    INVALID = "invalid"
    REUSED = "reused"


@transactional
async def _rotate(
    db: AsyncSession, token: str, client_address: str | None
) -> IssuedSession | _Refused:
    """`refresh`'s transaction: the address's lockout checked, the rotation, and a refusal
    recorded."""
    now = utcnow()
    rules = login_throttle.ThrottleRules.from_settings(get_settings())
    attempt = login_throttle.LoginPair.of(login_throttle.REFRESH_ATTEMPTS, "", client_address)
    await login_throttle.check_address_not_locked(db, attempt.client_address, rules, now)
    outcome = await _rotation(db, token, now)
    if not isinstance(outcome, IssuedSession):
        await login_throttle.record_failure(db, attempt, now)
    return outcome


async def _rotation(db: AsyncSession, token: str, now: datetime) -> IssuedSession | _Refused:
    """The token's row and its session are locked, so concurrent refreshes with one token
    run one after the other: the first rotates, the others find it replaced a moment ago
    (within the grace period) and get the same pair."""
    found = (
        await db.execute(
            select(RefreshToken, AuthSession, User)
            .join(AuthSession, RefreshToken.session_id == AuthSession.id)
            .join(User, AuthSession.user_id == User.id)
            .where(RefreshToken.digest == secret_digest(token))
            .with_for_update(of=[RefreshToken.__table__, AuthSession.__table__])
            .execution_options(populate_existing=True)
        )
    ).one_or_none()
    if found is None:
        return _Refused.INVALID
    row, session, user = found
    lifetime = _lifetime()
    if (
        session.revoked_at is not None
        or session.expires_at <= now
        or row.issued_at + lifetime <= now
        or not user.is_active
    ):
        return _Refused.INVALID
    successor = _successor(session.chain_key, token)
    if row.replaced_at is None:
        row.replaced_at = now
        session.last_used_at = now
        session.expires_at = now + lifetime
        db.add(RefreshToken(digest=secret_digest(successor), session_id=session.id, issued_at=now))
        # The chain's tokens that expired are evidence of nothing any more.
        await db.execute(
            delete(RefreshToken)
            .where(RefreshToken.session_id == session.id, RefreshToken.issued_at <= now - lifetime)
            .execution_options(synchronize_session=False)
        )
        await db.flush()
        return IssuedSession(user, session.id, successor, now)
    grace = timedelta(seconds=get_settings().refresh_reuse_grace_seconds)
    if now - row.replaced_at <= grace:
        given = await db.get(RefreshToken, secret_digest(successor))
        if given is None or given.replaced_at is not None:  # the chain has moved on since
            return _Refused.INVALID
        return IssuedSession(user, session.id, successor, given.issued_at)
    session.revoked_at = now
    session.revoke_reason = RevokeReason.REFRESH_REUSE.value
    await db.flush()
    logger.warning(
        "a replaced refresh token was presented again: session %s of user %s revoked",
        session.id,
        user.id,
        extra={"session_id": session.id, "user_id": user.id},
    )
    return _Refused.REUSED


def _clipped(text: str | None, length: int) -> str | None:
    if not text:
        return None
    return text.replace("\x00", "")[:length] or None
