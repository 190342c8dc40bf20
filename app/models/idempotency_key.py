"""`IdempotencyKey`: the answer a write gave under an `Idempotency-Key`, kept so a retry gets it
again instead of repeating the write (issue 13).

The row is written in the same transaction as the write it answers (app/services/idempotency.py),
so a write that committed always has its answer stored and one rolled back has none. Keys belong
to the user who sent them; a row lives `IDEMPOTENCY_TTL_SECONDS` and is then purged.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    UniqueConstraint,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base
from app.models.types import UTCDateTime

IDEMPOTENCY_KEY_MAX_LENGTH = 255


class IdempotencyKey(Base):
    __tablename__ = "idempotency_keys"
    __table_args__ = (
        UniqueConstraint("user_id", "key"),
        # The purge takes the oldest expired rows first, a bounded batch at a time.
        Index(None, "expires_at"),
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True
    )
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(IDEMPOTENCY_KEY_MAX_LENGTH))
    # A digest of the method, path and body the key was first used with.
    fingerprint: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int] = mapped_column(Integer)
    # The answer's headers that a replay repeats (Content-Type, Location, ETag).
    headers: Mapped[dict[str, Any]] = mapped_column(
        JSON().with_variant(postgresql.JSONB(), "postgresql")
    )
    body: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())

    def __repr__(self) -> str:
        return f"<IdempotencyKey {self.key!r} of user {self.user_id} → {self.status_code}>"
