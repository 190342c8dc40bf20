"""`AuthSession` and `RefreshToken`: one login on one device, and the chain of refresh tokens
it has been handed (issue 14).

Every access token names its session (`sid`), and every account check on every path also
checks that the session is not revoked, so logging out, revoking a device, a password change or
a deactivation ends a session's access at once, although its access tokens have not expired.

Refresh tokens are stored only as digests. Each refresh replaces the token presented by a new
one (rotation); the replaced ones stay in the chain, so one presented again after its grace
period is known for what it is (a copy in someone else's hands) and ends the whole session.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base
from app.models.types import UTCDateTime

USER_AGENT_MAX_LENGTH = 300
CLIENT_ADDRESS_MAX_LENGTH = 64
REVOKE_REASON_MAX_LENGTH = 30
TOKEN_DIGEST_LENGTH = 64  # hex SHA-256


class AuthSession(Base):
    __tablename__ = "auth_sessions"
    # A user's sessions are listed, and revoked all at once, by user.
    __table_args__ = (Index(None, "user_id", "created_at"), {"sqlite_autoincrement": True})

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True
    )
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # The last login or refresh: an access token is used without touching this row.
    last_used_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # Sliding: each refresh moves it to REFRESH_TOKEN_EXPIRE_DAYS from then.
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    user_agent: Mapped[str | None] = mapped_column(String(USER_AGENT_MAX_LENGTH))
    client_address: Mapped[str | None] = mapped_column(String(CLIENT_ADDRESS_MAX_LENGTH))
    # The key each refresh token of the chain is derived from, so that a retry within the
    # grace period can be handed the very token it was already given (app/services/sessions.py).
    chain_key: Mapped[bytes] = mapped_column(LargeBinary(32))
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # logout, revoked, password_change, account_change, refresh_reuse
    revoke_reason: Mapped[str | None] = mapped_column(String(REVOKE_REASON_MAX_LENGTH))

    def __repr__(self) -> str:
        state = f" revoked ({self.revoke_reason})" if self.revoked_at else ""
        return f"<AuthSession {self.id} of user {self.user_id}{state}>"


class RefreshToken(Base):
    __tablename__ = "refresh_tokens"
    __table_args__ = (Index(None, "session_id", "issued_at"),)

    # The token's SHA-256, hex: the token itself is never stored.
    digest: Mapped[str] = mapped_column(String(TOKEN_DIGEST_LENGTH), primary_key=True)
    session_id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"),
        ForeignKey("auth_sessions.id", ondelete="CASCADE"),
    )
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # When a refresh replaced it; NULL for the session's current token.
    replaced_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    def __repr__(self) -> str:
        return f"<RefreshToken {self.digest[:8]}… of session {self.session_id}>"
