"""The `User` model: a sales agent or a superuser (manager/admin)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import Boolean, Integer, String, false
from sqlalchemy.orm import Mapped, mapped_column, relationship, validates

from app.models import validation as v
from app.models.base import Base
from app.models.types import UTCDateTime, utcnow

if TYPE_CHECKING:
    from app.models.lead import Lead

FULL_NAME_MAX_LENGTH = 200


class User(Base):
    __tablename__ = "users"
    # Never reuse a deleted user's id on SQLite.
    __table_args__ = ({"sqlite_autoincrement": True},)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # Stored lowercased, so the unique constraint compares addresses case-insensitively.
    email: Mapped[str] = mapped_column(String(v.EMAIL_MAX_LENGTH), unique=True)
    full_name: Mapped[str] = mapped_column(String(FULL_NAME_MAX_LENGTH))
    hashed_password: Mapped[str] = mapped_column(String(255))
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    is_superuser: Mapped[bool] = mapped_column(Boolean, default=False)
    # An integration's account: it cannot log in with a password, only use its API keys.
    is_service_account: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # Copied into every access token; raising it (password change, deactivation) makes every
    # token issued before worthless at once, though none of them has expired.
    token_version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)

    leads: Mapped[list[Lead]] = relationship(
        back_populates="assignee", foreign_keys="Lead.assigned_to", lazy="raise"
    )

    @validates("email")
    def _validate_email(self, key: str, value: object) -> str:
        address = v.email_address(key, value, lowercase=True)
        if address is None:
            raise v.FieldValidationError(key, "is required")
        return address

    @validates("full_name")
    def _validate_full_name(self, key: str, value: object) -> str:
        return v.required_text(key, value, FULL_NAME_MAX_LENGTH)

    @validates("hashed_password")
    def _validate_hash(self, key: str, value: object) -> str:
        return v.required_text(key, value, 255)

    def __repr__(self) -> str:
        return f"<User id={self.id} {self.email!r}{' superuser' if self.is_superuser else ''}>"
