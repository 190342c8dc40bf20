"""`CaptureForm`: a web form on the team's site that posts leads without a login, and
`CaptureRateCount`, its per-address submission counts (issue 17).

A form is found by its public key, which sits in the page's HTML for anyone to read: it is
stored only as a SHA-256 digest, like API keys, so the table does not give the keys away, and
a rotation makes the old one worthless at once.

The rate limit's counts are rows, not process memory, so every app process behind one
database counts the same submissions: one row per (form, client address, minute), bumped by a
single upsert.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, ForeignKey, Index, Integer, String
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base
from app.models.login_failure import CLIENT_ADDRESS_MAX_LENGTH
from app.models.types import TagList, UTCDateTime

FORM_NAME_MAX_LENGTH = 100
ORIGIN_MAX_LENGTH = 255
FORM_MAX_ORIGINS = 20
KEY_HINT_LENGTH = 8


class CaptureForm(Base):
    __tablename__ = "capture_forms"
    __table_args__ = ({"sqlite_autoincrement": True},)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(FORM_NAME_MAX_LENGTH))
    # SHA-256 (hex) of the public key; the key itself is shown once, when made or rotated.
    key_digest: Mapped[str] = mapped_column(String(64), unique=True)
    # The key's first characters, to tell keys apart in a listing.
    key_hint: Mapped[str] = mapped_column(String(KEY_HINT_LENGTH))
    # Browser origins whose pages may post (`https://www.example.com`), compared exactly.
    allowed_origins: Mapped[list[str]] = mapped_column(
        JSON().with_variant(postgresql.JSONB(), "postgresql")
    )
    source: Mapped[str] = mapped_column(String(20))  # a LeadSource value
    tags: Mapped[list[str]] = mapped_column(TagList(), default=list)
    assignment_rule_id: Mapped[int | None] = mapped_column(
        ForeignKey("assignment_rules.id", ondelete="RESTRICT")
    )
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())

    def __repr__(self) -> str:
        return f"<CaptureForm {self.id} {self.name!r}>"


class CaptureRateCount(Base):
    __tablename__ = "capture_rate_counts"
    # Old windows are deleted by form and address (on each of its submissions).
    __table_args__ = (Index(None, "form_id", "client_address", "window_start", unique=True),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    form_id: Mapped[int] = mapped_column(ForeignKey("capture_forms.id", ondelete="CASCADE"))
    client_address: Mapped[str] = mapped_column(String(CLIENT_ADDRESS_MAX_LENGTH))
    window_start: Mapped[datetime] = mapped_column(UTCDateTime())
    count: Mapped[int] = mapped_column(Integer)
