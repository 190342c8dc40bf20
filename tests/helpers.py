"""What the tests share besides fixtures: the test database's URL, known passwords, settings
and app builders, and small readers. Test modules import these from here; fixtures live in
tests/conftest.py, which builds on this module too (no test module imports conftest)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher
from pydantic import SecretStr
from sqlalchemy import event, insert, inspect, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from app.api.deps import get_session, get_session_opener, get_write_session_opener
from app.config import Settings, normalize_database_url
from app.main import create_app
from app.models import ApiKey, AuthSession, Lead, LeadSource, LeadStatus, User
from app.services.reader import session_reader, session_writer
from app.services.security import MAX_SESSION_ID, create_access_token, secret_digest

TEST_DATABASE_URL = normalize_database_url(os.environ.get("TEST_DATABASE_URL", "").strip())
ON_POSTGRES = TEST_DATABASE_URL.startswith("postgresql")
MEMORY_SQLITE_URL = "sqlite+aiosqlite://"

# The app hashes passwords with argon2 at its recommended cost, about 0.2 s a hash or check here,
# on purpose. Tests create users and log in by the hundred, so they use the same algorithm and
# code path at argon2's lowest cost (see conftest's `_cheap_password_hashing`); only the
# parameters written into each hash differ. Servers started as subprocesses keep the real cost.
TEST_HASHER = PasswordHash((Argon2Hasher(time_cost=1, memory_cost=1024, parallelism=1),))

# An argon2 hash (at that cost) of "correct horse battery staple", so fixtures need not hash.
PASSWORD = "correct horse battery staple"
PASSWORD_HASH = (
    "$argon2id$v=19$m=1024,t=1,p=1$DigTYjvXFLdQV+OzukkOqQ$"
    "W3mYY+8K6IalPPg8DIEyDE8yx6OfhOzWoJ6lpjosdss"
)
TEST_SECRET = "test-secret-key-that-is-long-enough-for-hs256-signing"

postgres_only = pytest.mark.skipif(not ON_POSTGRES, reason="needs TEST_DATABASE_URL (PostgreSQL)")
# A test of a SQLite server of its own does the same whichever suite runs it: the SQLite suite
# runs it, the PostgreSQL suite does not run it again.
sqlite_suite_only = pytest.mark.skipif(
    ON_POSTGRES, reason="a SQLite server of its own: run once, by the SQLite suite"
)

UserFactory = Callable[..., Awaitable[User]]
LeadFactory = Callable[..., Awaitable[Lead]]


def uid(obj: User | Lead) -> int:
    """An object's id without loading anything (safe after a rollback expired it)."""
    identity = inspect(obj).identity
    assert identity is not None
    return int(identity[0])


def stamp(at: datetime) -> str:
    """The `[YYYY-MM-DD HH:MM UTC]` prefix of a note line written at `at`, as the reference
    design prints it (spelt out here, not taken from the app, so a test can catch a change)."""
    return at.astimezone(UTC).strftime("[%Y-%m-%d %H:%M UTC]")


def concrete(path: str, lead_id: int, user_id: int) -> str:
    """An OpenAPI path template with a real lead and user id in it."""
    return path.replace("{lead_id}", str(lead_id)).replace("{user_id}", str(user_id))


async def count_rows(db: AsyncSession, table: str = "leads") -> int:
    return int(await db.scalar(text(f"SELECT count(*) FROM {table}")) or 0)


def make_settings(**changes: Any) -> Settings:
    """The tests' settings: no .env file, APP_ENV=testing, a fixed signing key, and `changes`.
    Put them in force with `use_settings(make_settings(...))`: the app, its dependencies and
    the services all read `get_settings()`, so that is the one way to change a setting."""
    return Settings(_env_file=None, app_env="testing", secret_key=SecretStr(TEST_SECRET), **changes)


# What an account reads as (UserRead): never a password or its hash.
USER_FIELDS = {
    "id",
    "email",
    "full_name",
    "is_active",
    "is_superuser",
    "is_service_account",
    "created_at",
}

# The session each user made by the `make_user` fixture was given, by user id (this test's).
TEST_SESSIONS: dict[int, int] = {}
NO_SUCH_SESSION = MAX_SESSION_ID


def token_for(
    settings: Settings,
    user_id: int,
    *,
    version: int = 0,
    superuser: Any = None,
    session: int | None = None,
) -> str:
    """A token issued for these claims (token version, superuser hint, session: by default
    the one `make_user` gave the user), whatever the account now says."""
    if session is None:
        session = TEST_SESSIONS.get(user_id, NO_SUCH_SESSION)
    return create_access_token(user_id, settings, version, session_id=session, superuser=superuser)[
        0
    ]


def claims_bearer(
    settings: Settings,
    user_id: int,
    *,
    version: int = 0,
    superuser: Any = None,
    session: int | None = None,
) -> dict[str, str]:
    """An Authorization header with `token_for` these claims: for tests that change the
    account afterwards."""
    token = token_for(settings, user_id, version=version, superuser=superuser, session=session)
    return {"Authorization": f"Bearer {token}"}


async def committed_user(
    engine: AsyncEngine, settings: Settings, *, superuser: bool, email: str
) -> tuple[dict[str, str], int]:
    """An account in a database of the test's own (committed, with a live session): an
    Authorization header for it, and its id."""
    async with AsyncSession(engine, expire_on_commit=False) as session:
        user = User(
            email=email, full_name=email, hashed_password=PASSWORD_HASH, is_superuser=superuser
        )
        session.add(user)
        await session.commit()
        session_id = await add_session(session, user.id)
    token = token_for(settings, user.id, superuser=superuser, session=session_id)
    return {"Authorization": f"Bearer {token}"}, user.id


async def add_session(db: AsyncSession, user_id: int) -> int:
    """A live session for the user, as a login would start (committed); its id."""
    now = datetime.now(UTC)
    session = AuthSession(
        user_id=user_id,
        created_at=now,
        last_used_at=now,
        expires_at=now + timedelta(days=14),
        chain_key=b"k" * 32,
    )
    db.add(session)
    await db.commit()
    return session.id


async def change_user(db: AsyncSession, user_id: int, **values: Any) -> None:
    """Change a user's row behind the API's back (deactivate, promote, revoke tokens)."""
    await db.execute(update(User).where(User.id == user_id).values(**values))
    await db.commit()


def app_in_session(engine: AsyncEngine, db: AsyncSession) -> FastAPI:
    """The real application, built from the settings in force, its requests running in the
    test's session (so on PostgreSQL the test's rollback undoes them too)."""
    application = create_app(engine=engine)

    async def test_session() -> AsyncIterator[AsyncSession]:
        yield db

    @contextlib.asynccontextmanager
    async def in_test_session() -> AsyncIterator[AsyncSession]:
        yield db

    async def test_sessions() -> Any:
        return in_test_session

    application.dependency_overrides[get_session] = test_session
    application.dependency_overrides[get_session_opener] = test_sessions
    application.dependency_overrides[get_write_session_opener] = test_sessions
    # On PostgreSQL still the compiled asyncpg road (app/services/reader.py).
    application.state.reader = session_reader(db)
    application.state.writer = session_writer(db)
    return application


@contextlib.asynccontextmanager
async def client_of(app: FastAPI, **transport: Any) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of `app` through ASGI (`transport`: ASGITransport's options)."""
    asgi = httpx.ASGITransport(app=app, **transport)
    async with httpx.AsyncClient(transport=asgi, base_url="http://testserver") as c:
        yield c


@contextlib.asynccontextmanager
async def sql_statements(db: AsyncSession) -> AsyncIterator[list[str]]:
    """Record every SQL statement sent to the database while the block runs.

    The fixture binds the session to an Engine (SQLite) or to one Connection (PostgreSQL);
    listening on that sync Connection, or on the Engine, sees every cursor execution. On
    PostgreSQL the hot reads bypass SQLAlchemy's execution (app/services/reader.py) and run on
    the connection's asyncpg driver connection, whose query logger sees them (it does not see
    SQLAlchemy's prepared statements, so nothing is counted twice)."""
    bind = db.bind
    target: Any = bind.sync_connection if isinstance(bind, AsyncConnection) else bind.sync_engine
    statements: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    def logged(query: Any) -> None:
        statements.append(query.query)

    driver = None
    if isinstance(bind, AsyncConnection) and bind.dialect.driver == "asyncpg":
        driver = bind.sync_connection.connection.driver_connection
        driver.add_query_logger(logged)
    event.listen(target, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(target, "before_cursor_execute", record)
        if driver is not None:
            await asyncio.sleep(0)  # asyncpg hands each query to its loggers with call_soon
            driver.remove_query_logger(logged)


async def add_api_key(
    db: AsyncSession,
    user_id: int,
    scope: str = "write",
    *,
    expires_at: datetime | None = None,
    revoked: bool = False,
) -> tuple[int, str]:
    """An API key of the user's, stored as `POST /api-keys` stores one (committed): its id
    and the key."""
    from app.services.api_keys import _new_key

    prefix, key = _new_key()
    now = datetime.now(UTC)
    row = ApiKey(
        user_id=user_id,
        name=f"{scope} key",
        prefix=prefix,
        digest=secret_digest(key),
        scope=scope,
        created_at=now,
        expires_at=expires_at,
        revoked_at=now if revoked else None,
    )
    db.add(row)
    await db.commit()
    return row.id, key


def leads_csv(count: int, *, bad_rows: frozenset[int] = frozenset(), prefix: str = "p") -> bytes:
    """A CSV file of `count` leads, each with an email of its own (`{prefix}{n}@...`); the
    data rows numbered in `bad_rows` (the header is row 1) have an invalid email."""
    lines = ["First Name,Last Name,E-mail,Company Name,Lead Source,Tags"]
    for n in range(count):
        email = "not-an-email" if n + 2 in bad_rows else f"{prefix}{n}@firm{n % 97}.example"
        lines.append(f"Ada{n},Lovelace,{email},Firm {n % 97},website,imported;csv")
    return ("\n".join(lines) + "\n").encode()


def wait_for_a_fresh_minute(margin_seconds: int = 10) -> None:
    """Sleep into the next minute if this one has less than `margin_seconds` left: for a test
    of a per-minute count (capture forms' rate limit), which a new minute would reset."""
    second = datetime.now(UTC).second
    if second >= 60 - margin_seconds:
        time.sleep(61 - second)


async def insert_leads(
    db: AsyncSession, count: int, *, prefix: str, owner_id: int | None = None
) -> list[int]:
    """`count` leads in one INSERT (the factory is too slow for thousands); their ids."""
    now = datetime.now(UTC)
    await db.execute(
        insert(Lead),
        [
            {
                "first_name": f"{prefix}{n}",
                "last_name": "Bulk",
                "email": f"{prefix}{n}@example.com",
                "source": LeadSource.OTHER,
                "status": LeadStatus.NEW,
                "lead_score": 50,
                "score_is_manual": True,
                "tags": [],
                "call_attempts": 0,
                "assigned_to": owner_id,
                "notes": f"seed {n}",
                "created_at": now,
                "updated_at": now,
            }
            for n in range(count)
        ],
    )
    await db.commit()
    ids = sorted(
        await db.scalars(
            select(Lead.id).where(Lead.last_name == "Bulk", Lead.first_name.like(f"{prefix}%"))
        )
    )
    await db.commit()  # leave no transaction open, as a caller between requests would
    return ids
