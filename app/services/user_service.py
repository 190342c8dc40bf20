"""UserService: accounts, logins and who may manage them.

Like LeadService, each public method is one transaction. Managing other accounts is for
superusers; anyone may read and edit their own name and password. A superuser's password reset
or deactivation raises the account's `token_version`, which voids every token issued before, and
ends all its sessions; a user's own new password ends their other sessions.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import get_settings
from app.models import FieldValidationError, User
from app.models.types import utcnow
from app.models.validation import email_address, flag
from app.services import login_throttle
from app.services.base import (
    as_data,
    get_acting_user,
    reject_unknown_fields,
    require_superuser,
    transactional,
)
from app.services.exceptions import (
    AuthenticationException,
    ConflictException,
    DuplicateException,
    PermissionDeniedException,
    UserNotFoundException,
    ValidationException,
)
from app.services.security import (
    MAX_PASSWORD_LENGTH,
    MIN_PASSWORD_LENGTH,
    check_password,
    hash_password,
)
from app.services.sessions import RevokeReason, revoke_sessions

LOGIN_FAILED = "Incorrect email or password."
CREATE_FIELDS = frozenset(
    {"email", "full_name", "password", "is_superuser", "is_active", "is_service_account"}
)
ADMIN_UPDATE_FIELDS = frozenset({"full_name", "is_active", "is_superuser", "password"})
SELF_UPDATE_FIELDS = frozenset({"full_name", "password", "current_password"})


class UserService:
    @staticmethod
    async def authenticate(
        db: AsyncSession,
        email: str,
        password: str,
        *,
        client_address: str | None = None,
    ) -> User:
        """The active user with these credentials. Every failure, unknown email, wrong password
        or inactive account alike, raises the same AuthenticationException. Too many failures
        for this email from this client address (see `login_throttle`) raise
        TooManyAttemptsException instead, right password or not, until the lockout ends.

        Not `@transactional` itself, because a failed attempt must be recorded although the call
        fails, and a transaction that raises is rolled back: the attempt is one transaction
        (`_attempt_login`) that commits whatever the outcome, and the failure is raised after."""
        rules = login_throttle.ThrottleRules.from_settings(get_settings())
        user = await _attempt_login(db, email, password, client_address, rules)
        if user is None:
            raise AuthenticationException(LOGIN_FAILED)
        return user

    @staticmethod
    @transactional
    async def get_user(db: AsyncSession, user_id: int, *, acting_user_id: int) -> User:
        actor = await get_acting_user(db, acting_user_id)
        if actor.id != user_id and not actor.is_superuser:
            raise PermissionDeniedException("Only a superuser may read other accounts.")
        return await _load_user(db, user_id)

    @staticmethod
    @transactional
    async def list_users(
        db: AsyncSession, *, acting_user_id: int, skip: int = 0, limit: int = 100
    ) -> tuple[list[User], int]:
        await _require_superuser(db, acting_user_id)
        total = await db.scalar(select(func.count()).select_from(User))
        users = await db.scalars(select(User).order_by(User.id).offset(skip).limit(limit))
        return list(users), int(total or 0)

    @staticmethod
    @transactional
    async def create_user(
        db: AsyncSession, user_data: Mapping[str, Any] | Any, *, acting_user_id: int | None
    ) -> User:
        """A new account. `acting_user_id=None` is a trusted call (the command line)."""
        data = as_data(user_data)
        reject_unknown_fields(data, CREATE_FIELDS)
        if acting_user_id is not None:
            await _require_superuser(db, acting_user_id)
        service = flag("is_service_account", data.get("is_service_account", False))
        required = ("email", "full_name") if service else ("email", "full_name", "password")
        missing = [f for f in required if data.get(f) is None]
        if missing:
            raise ValidationException.of_fields(
                FieldValidationError(name, "is required") for name in missing
            )
        if service and data.get("password") is not None:
            raise ValidationException.at("password", "is not for a service account (keys only)")
        # A service account's hash is of a secret nobody was told: no password opens it.
        password = secrets.token_urlsafe(32) if service else data["password"]
        user = User(
            email=data["email"],
            full_name=data["full_name"],
            hashed_password=_new_hash(password),
            is_superuser=flag("is_superuser", data.get("is_superuser", False)),
            is_active=flag("is_active", data.get("is_active", True)),
            is_service_account=service,
        )
        taken = await db.scalar(select(User.id).where(User.email == user.email))
        if taken is not None:
            raise _email_taken(user.email)
        db.add(user)
        try:
            await db.flush()
        except IntegrityError as exc:  # another request took the email in the meantime
            raise _email_taken(user.email) from exc
        return user

    @staticmethod
    @transactional
    async def update_user(
        db: AsyncSession, user_id: int, user_data: Mapping[str, Any] | Any, *, acting_user_id: int
    ) -> User:
        """A superuser's change to any account (name, active, superuser, password)."""
        data = as_data(user_data)
        reject_unknown_fields(data, ADMIN_UPDATE_FIELDS)
        actor = await _require_superuser(db, acting_user_id)
        user = await _load_user(db, user_id)
        if user.id == actor.id and (
            data.get("is_active") is False or data.get("is_superuser") is False
        ):
            raise ConflictException(
                "A superuser cannot deactivate or demote their own account; ask another superuser."
            )
        if _apply(user, data):
            await _void_tokens(db, user)
            await revoke_sessions(db, user.id, RevokeReason.ACCOUNT_CHANGE)
        return user

    @staticmethod
    @transactional
    async def update_me(
        db: AsyncSession,
        user_id: int,
        user_data: Mapping[str, Any] | Any,
        *,
        current_session_id: int | None = None,
    ) -> User:
        """A user's change to their own name or password; a new password needs the current one,
        and ends every session of the account but `current_session_id` (the caller's own): a
        password is changed because another device may know it."""
        data = as_data(user_data)
        reject_unknown_fields(data, SELF_UPDATE_FIELDS)
        user = await get_acting_user(db, user_id)
        current = data.pop("current_password", None)
        if data.get("password") is not None and not (
            isinstance(current, str) and await check_password(current, user.hashed_password)
        ):
            raise ValidationException.at(
                "current_password", "is missing or wrong: a new password needs the current one"
            )
        if _apply(user, data):
            await revoke_sessions(
                db, user.id, RevokeReason.PASSWORD_CHANGE, keep=current_session_id
            )
        return user

    @staticmethod
    @transactional
    async def ensure_superuser(db: AsyncSession, email: str, password: str) -> User | None:
        """Create a first superuser when the database has none; None when one exists."""
        exists = await db.scalar(select(User.id).where(User.is_superuser).limit(1))
        if exists is not None:
            return None
        user = User(
            email=email,
            full_name="Administrator",
            hashed_password=_new_hash(password),
            is_superuser=True,
        )
        db.add(user)
        try:
            await db.flush()
        except IntegrityError as exc:  # another process created it a moment ago
            raise _email_taken(user.email) from exc
        return user


@transactional
async def _attempt_login(
    db: AsyncSession,
    username: str,
    password: str,
    client_address: str | None,
    rules: login_throttle.ThrottleRules,
) -> User | None:
    """`authenticate`'s transaction: the user, or None for a failed attempt (recorded)."""
    try:
        address = email_address("username", username, lowercase=True)
    except FieldValidationError:
        address = None
    pair = login_throttle.LoginPair.of(address, username, client_address)
    await login_throttle.check_not_locked(db, pair, rules, utcnow())
    user = None
    if address is not None:
        # Fresh from the row: the token issued must carry the version stored now.
        query = select(User).where(User.email == address)
        user = await db.scalar(query.execution_options(populate_existing=True))
    valid = await check_password(password, user.hashed_password if user else None)
    if user is None or not valid or not user.is_active or user.is_service_account:
        await login_throttle.record_failure(db, pair, utcnow())
        return None
    await login_throttle.clear_failures(db, pair)
    return user


async def _load_user(db: AsyncSession, user_id: int) -> User:
    user = await db.get(User, user_id, populate_existing=True)
    if user is None:
        raise UserNotFoundException(user_id)
    return user


async def _require_superuser(db: AsyncSession, user_id: int) -> User:
    return await require_superuser(db, user_id, "user accounts")


def _new_hash(password: Any) -> str:
    if not isinstance(password, str) or not (
        MIN_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_LENGTH
    ):
        raise ValidationException.at(
            "password", f"must be {MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} characters long"
        )
    return hash_password(password)


def _apply(user: User, data: dict[str, Any]) -> bool:
    """Set the fields. True when the change must void the account's tokens: a new password or
    a deactivation, since either may be the answer to a stolen one."""
    void_tokens = False
    for name, value in data.items():
        if name == "password":
            user.hashed_password = _new_hash(value)
            void_tokens = True
        elif name in ("is_active", "is_superuser"):
            flag(name, value)
            if name == "is_active" and value is False:
                void_tokens = True
            setattr(user, name, value)
        else:
            setattr(user, name, value)
    user.updated_at = utcnow()
    return void_tokens


async def _void_tokens(db: AsyncSession, user: User) -> None:
    """Raise the token version in SQL rather than from the value read: two changes at once
    (a reset and a deactivation) must not both write the same new version."""
    user.token_version = User.token_version + 1
    await db.flush()
    await db.refresh(user, ["token_version"])


def _email_taken(email: str) -> DuplicateException:
    return DuplicateException(f"A user with the email {email} already exists.")
