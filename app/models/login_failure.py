"""`LoginFailure`: one failed login, kept just long enough to throttle the next ones.

The throttle's state lives in the database, not in a process, so every app process behind one
database sees the same count. Rows are short-lived: the login service deletes a pair's rows once
they are too old to matter, and all of them on a successful login.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base
from app.models.types import UTCDateTime
from app.models.validation import EMAIL_MAX_LENGTH

CLIENT_ADDRESS_MAX_LENGTH = 64


class LoginFailure(Base):
    __tablename__ = "login_failures"
    # Every query names one (email, client address) pair and a time range,
    # and one address (the per-address limit, and clearing an address's old failures).
    __table_args__ = (
        Index(None, "email", "client_address", "failed_at"),
        Index(None, "client_address", "failed_at"),
    )

    # BIGINT, since failures can pile up fast under attack; SQLite only auto-numbers INTEGER keys.
    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True
    )
    # The lowercased address tried, or a digest of a username that is not an address at all
    # (people type passwords into the username field).
    email: Mapped[str] = mapped_column(String(EMAIL_MAX_LENGTH))
    client_address: Mapped[str] = mapped_column(String(CLIENT_ADDRESS_MAX_LENGTH))
    failed_at: Mapped[datetime] = mapped_column(UTCDateTime())

    def __repr__(self) -> str:
        return f"<LoginFailure {self.email!r} from {self.client_address!r} at {self.failed_at}>"
