"""Login throttling: too many failed logins for one account from one client address lock that
pair out for a while, so a password cannot be guessed at speed.

The count is kept per (email, client address) pair: an attacker hammering one account does not
lock its owner out elsewhere, and a shared address (an office NAT) hammering one account does not
lock everyone there out of theirs. Unknown emails are counted exactly like known ones, so the
answers never tell which accounts exist. While a pair is locked the password is not even looked
at (no argon2 cost, and a right password gets the same 429 as a wrong one, so the lockout cannot
be used to test guesses).

A second, looser limit counts one address's failures across all emails
(LOGIN_MAX_FAILURES_PER_ADDRESS): a client spraying guesses over ever-new emails never repeats a
pair, and is stopped by that one instead. The address is the peer's, or a trusted proxy's
X-Forwarded-For (FORWARDED_ALLOW_IPS, nobody by default), so a client cannot pick its own.
Refused refresh tokens (`POST /auth/refresh`) count toward the same limit, under the email
REFRESH_ATTEMPTS, and nothing else: a guess at a refresh token is a guess at a credential, but
an office whose tokens all expired overnight must not be locked out after a handful of them.

The state is rows of `login_failures` in the database, not memory, so every app process behind
one database counts the same failures. An address's rows are deleted once they are too old to
matter (on each of its attempts), and a pair's all at once on a successful login.

The check, the password test and the recording of a failure have to happen as one step per pair,
or N attempts racing past the check together would all be tried:

- PostgreSQL: the transaction first takes an advisory lock on a hash of the pair (released at
  commit or rollback), so attempts on the same pair queue; other pairs and other writers are
  not held up.
- SQLite: every writing transaction already holds the database's write lock (BEGIN IMMEDIATE).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from app.config import Settings
from app.models import LoginFailure
from app.models.login_failure import CLIENT_ADDRESS_MAX_LENGTH
from app.models.validation import EMAIL_MAX_LENGTH
from app.services.exceptions import TooManyAttemptsException

UNKNOWN_CLIENT = "unknown"  # no address known (a trusted in-process call, a Unix socket)
REFRESH_ATTEMPTS = "#refresh"  # the "email" of a refused refresh (no address starts with #)


@dataclass(frozen=True)
class ThrottleRules:
    max_failures: int
    window: timedelta
    lockout: timedelta
    max_failures_per_address: int

    @classmethod
    def from_settings(cls, settings: Settings) -> ThrottleRules:
        return cls(
            max_failures=settings.login_max_failures,
            window=timedelta(seconds=settings.login_failure_window_seconds),
            lockout=timedelta(seconds=settings.login_lockout_seconds),
            max_failures_per_address=settings.login_max_failures_per_address,
        )

    @property
    def memory(self) -> timedelta:
        """How long a failure can still matter: it may be the oldest of N within the window,
        and the lockout runs from the newest of them."""
        return self.window + self.lockout


@dataclass(frozen=True)
class LoginPair:
    email: str
    client_address: str

    @classmethod
    def of(cls, email: str | None, username: str, client_address: str | None) -> LoginPair:
        """The pair a login attempt counts against. `email` is the normalised address, or None
        when the username is not an address: then a digest of it stands in, because such a
        "username" is often a password typed into the wrong field and must not be stored."""
        if email is None or len(email) > EMAIL_MAX_LENGTH:
            email = "#" + hashlib.sha256(str(username).encode("utf-8", "replace")).hexdigest()
        address = (client_address or UNKNOWN_CLIENT).replace("\x00", "")
        return cls(email, address[:CLIENT_ADDRESS_MAX_LENGTH] or UNKNOWN_CLIENT)

    def lock_key(self) -> int:
        """A signed 64-bit key for PostgreSQL's advisory locks. Two pairs sharing a key only
        queue behind each other."""
        digest = hashlib.blake2b(
            f"login:{self.email}\x00{self.client_address}".encode(), digest_size=8
        ).digest()
        return int.from_bytes(digest, "big", signed=True)


def _of_pair(pair: LoginPair) -> tuple[ColumnElement[bool], ...]:
    return (
        LoginFailure.email == pair.email,
        LoginFailure.client_address == pair.client_address,
    )


async def check_not_locked(
    db: AsyncSession, pair: LoginPair, rules: ThrottleRules, now: datetime
) -> None:
    """Take the pair's lock for the rest of the transaction, forget its failures that no
    longer matter, and raise TooManyAttemptsException if it is locked out.

    Locked out means: the pair's `max_failures` most recent failures all fall within one
    window, and the newest of them is less than the lockout period ago. No failure is recorded
    while locked, so the newest is the one that completed the set."""
    if db.get_bind().dialect.name == "postgresql":
        await db.execute(select(func.pg_advisory_xact_lock(pair.lock_key())))
    await check_address_not_locked(db, pair.client_address, rules, now)
    cutoff = now - rules.memory
    recent = (
        select(LoginFailure.failed_at)
        .where(*_of_pair(pair), LoginFailure.failed_at > cutoff)
        .order_by(LoginFailure.failed_at.desc())
        .limit(rules.max_failures)
        .subquery()
    )
    count, oldest, newest = (
        await db.execute(
            select(func.count(), func.min(recent.c.failed_at), func.max(recent.c.failed_at))
        )
    ).one()
    if count < rules.max_failures or newest - oldest > rules.window:
        return
    remaining = (newest + rules.lockout - now).total_seconds()
    if remaining > 0:
        raise TooManyAttemptsException(retry_after=max(1, math.ceil(remaining)))


async def check_address_not_locked(
    db: AsyncSession, client_address: str, rules: ThrottleRules, now: datetime
) -> None:
    """Forget the address's failures that no longer matter, whatever their emails (a spray
    of one-off emails never comes back to clear its own), and raise TooManyAttemptsException
    while it has `max_failures_per_address` failures within the window; it lifts when the
    oldest of them leaves the window. (Not under a lock of its own: attempts from one address
    for different emails may run at once, so as many as run at once (LOGIN_HASH_CONCURRENCY
    per process, for logins) may pass the limit.)"""
    await db.execute(
        delete(LoginFailure)
        .where(
            LoginFailure.client_address == client_address,
            LoginFailure.failed_at <= now - rules.memory,
        )
        .execution_options(synchronize_session=False)
    )
    limit = rules.max_failures_per_address
    recent = (
        select(LoginFailure.failed_at)
        .where(
            LoginFailure.client_address == client_address,
            LoginFailure.failed_at > now - rules.window,
        )
        .order_by(LoginFailure.failed_at.desc())
        .limit(limit)
        .subquery()
    )
    count, oldest = (await db.execute(select(func.count(), func.min(recent.c.failed_at)))).one()
    if count >= limit:
        remaining = (oldest + rules.window - now).total_seconds()
        raise TooManyAttemptsException(retry_after=max(1, math.ceil(remaining)))


async def record_failure(db: AsyncSession, pair: LoginPair, when: datetime) -> None:
    # A plain INSERT: an ORM object would outlive the row in the session once it is deleted.
    await db.execute(
        insert(LoginFailure).values(
            email=pair.email, client_address=pair.client_address, failed_at=when
        )
    )


async def clear_failures(db: AsyncSession, pair: LoginPair) -> None:
    await db.execute(
        delete(LoginFailure).where(*_of_pair(pair)).execution_options(synchronize_session=False)
    )
