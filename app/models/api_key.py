"""`ApiKey`: a long-lived credential for a script or an integration, acting as its user with
the same scoping rules, limited to reads or not (issue 14).

A key is `crm_<prefix>_<secret>`: the prefix names it in listings (and finds its row), the
secret proves it. Only a digest of the whole key is stored; the key is shown once, when made.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base
from app.models.types import UTCDateTime

KEY_NAME_MAX_LENGTH = 100
KEY_PREFIX_LENGTH = 8
KEY_DIGEST_LENGTH = 64  # hex SHA-256


class ApiKeyScope(StrEnum):
    READ = "read"  # GET and HEAD only: every write gets 403
    WRITE = "write"


class ApiKey(Base):
    __tablename__ = "api_keys"
    # A user's keys are listed by user.
    __table_args__ = (Index(None, "user_id", "created_at"), {"sqlite_autoincrement": True})

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True
    )
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(KEY_NAME_MAX_LENGTH))
    prefix: Mapped[str] = mapped_column(String(KEY_PREFIX_LENGTH), unique=True)
    digest: Mapped[str] = mapped_column(String(KEY_DIGEST_LENGTH))
    scope: Mapped[str] = mapped_column(String(5))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # Written at most once a minute, not on every request (app/services/api_keys.py).
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    def __repr__(self) -> str:
        return f"<ApiKey {self.prefix} ({self.scope}) of user {self.user_id}>"
