"""UserService: accounts, logins and who may manage them.

Like LeadService, each public method is one transaction. Managing other accounts is for
superusers; anyone may read and edit their own name and password.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import FieldValidationError, User
from app.models.types import utcnow
from app.models.validation import email_address
from app.services.base import as_data, get_acting_user, reject_unknown_fields, transactional
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
    hash_password,
    verify_password,
)

LOGIN_FAILED = "Incorrect email or password."
CREATE_FIELDS = frozenset({"email", "full_name", "password", "is_superuser", "is_active"})
ADMIN_UPDATE_FIELDS = frozenset({"full_name", "is_active", "is_superuser", "password"})
SELF_UPDATE_FIELDS = frozenset({"full_name", "password", "current_password"})


class UserService:
    @staticmethod
    @transactional
    async def authenticate(db: AsyncSession, email: str, password: str) -> User:
        """The active user with these credentials. Every failure, unknown email, wrong password
        or inactive account alike, raises the same AuthenticationException."""
        try:
            address = email_address("username", email, lowercase=True)
        except FieldValidationError:
            address = None
        user = None
        if address is not None:
            user = await db.scalar(select(User).where(User.email == address))
        valid = verify_password(password, user.hashed_password if user else None)
        if user is None or not valid or not user.is_active:
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
        missing = [f for f in ("email", "full_name", "password") if data.get(f) is None]
        if missing:
            raise ValidationException(
                f"Missing required field(s): {', '.join(missing)}.",
                errors=[{"loc": [f], "msg": "is required"} for f in missing],
            )
        user = User(
            email=data["email"],
            full_name=data["full_name"],
            hashed_password=_new_hash(data["password"]),
            is_superuser=bool(data.get("is_superuser", False)),
            is_active=bool(data.get("is_active", True)),
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
        _apply(user, data)
        return user

    @staticmethod
    @transactional
    async def update_me(db: AsyncSession, user_id: int, user_data: Mapping[str, Any] | Any) -> User:
        """A user's change to their own name or password; a new password needs the current one."""
        data = as_data(user_data)
        reject_unknown_fields(data, SELF_UPDATE_FIELDS)
        user = await get_acting_user(db, user_id)
        current = data.pop("current_password", None)
        if data.get("password") is not None and not (
            isinstance(current, str) and verify_password(current, user.hashed_password)
        ):
            raise ValidationException(
                "current_password is missing or wrong.", field="current_password"
            )
        _apply(user, data)
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


async def _load_user(db: AsyncSession, user_id: int) -> User:
    user = await db.get(User, user_id, populate_existing=True)
    if user is None:
        raise UserNotFoundException(user_id)
    return user


async def _require_superuser(db: AsyncSession, user_id: int) -> User:
    user = await get_acting_user(db, user_id)
    if not user.is_superuser:
        raise PermissionDeniedException("Only a superuser may manage user accounts.")
    return user


def _new_hash(password: Any) -> str:
    if not isinstance(password, str) or not (
        MIN_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_LENGTH
    ):
        raise ValidationException(
            f"password must be {MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} characters.",
            field="password",
        )
    return hash_password(password)


def _apply(user: User, data: dict[str, Any]) -> None:
    for name, value in data.items():
        if name == "password":
            user.hashed_password = _new_hash(value)
        elif name in ("is_active", "is_superuser"):
            if not isinstance(value, bool):
                raise ValidationException(f"{name} must be true or false.", field=name)
            setattr(user, name, value)
        else:
            setattr(user, name, value)
    user.updated_at = utcnow()


def _email_taken(email: str) -> DuplicateException:
    return DuplicateException(f"A user with the email {email} already exists.")
