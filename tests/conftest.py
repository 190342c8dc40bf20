"""Shared fixtures: a real database per test, users of every kind, and a lead factory.

Without `TEST_DATABASE_URL` every test gets a fresh in-memory SQLite database. With it (a
PostgreSQL URL) the schema is built once per run by the Alembic migrations and every test runs
inside a transaction that is rolled back afterwards; the services' own commits only release a
savepoint inside it.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher
from pydantic import SecretStr
from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.api.deps import get_session
from app.config import Settings, install_settings, normalize_database_url, use_settings
from app.database import create_engine, create_session_factory, upgrade_database
from app.main import create_app
from app.models import Base, Lead, User
from app.seed import DEMO_AGENT_PASSWORD
from app.services import LeadService, security
from app.services.security import create_access_token
from tests.log_scan import SecretScanner, collect_test_secrets, never_log

TEST_DATABASE_URL = normalize_database_url(os.environ.get("TEST_DATABASE_URL", "").strip())
ON_POSTGRES = TEST_DATABASE_URL.startswith("postgresql")
MEMORY_SQLITE_URL = "sqlite+aiosqlite://"

# The app hashes passwords with argon2 at its recommended cost, about 0.2 s a hash or check here,
# on purpose. Tests create users and log in by the hundred, so they use the same algorithm and
# code path at argon2's lowest cost (see `_cheap_password_hashing`); only the parameters written
# into each hash differ. Servers started as subprocesses keep the real cost.
TEST_HASHER = PasswordHash((Argon2Hasher(time_cost=1, memory_cost=1024, parallelism=1),))

# An argon2 hash (at that cost) of "correct horse battery staple", so fixtures need not hash.
PASSWORD = "correct horse battery staple"
PASSWORD_HASH = (
    "$argon2id$v=19$m=1024,t=1,p=1$DigTYjvXFLdQV+OzukkOqQ$"
    "W3mYY+8K6IalPPg8DIEyDE8yx6OfhOzWoJ6lpjosdss"
)

postgres_only = pytest.mark.skipif(not ON_POSTGRES, reason="needs TEST_DATABASE_URL (PostgreSQL)")


@pytest.fixture(scope="session", autouse=True)
def _cheap_password_hashing() -> Iterator[None]:
    saved = security._hasher, security._DUMMY_HASH
    security._hasher = TEST_HASHER
    security._DUMMY_HASH = TEST_HASHER.hash("not a real password, only for timing")
    yield
    security._hasher, security._DUMMY_HASH = saved


@pytest.fixture(scope="session", autouse=True)
def _no_secret_is_ever_logged() -> Iterator[None]:
    """Every record logged during the run, at INFO and above (what production logs by
    default), is checked for the tests' passwords and signing keys and for JWTs; any found
    fails the run at its end (see tests/log_scan.py)."""
    collect_test_secrets()
    never_log(DEMO_AGENT_PASSWORD)
    scanner = SecretScanner()
    root = logging.getLogger()
    level = root.level
    root.setLevel(min(level or logging.WARNING, logging.INFO))
    root.addHandler(scanner)
    yield
    root.removeHandler(scanner)
    root.setLevel(level)
    collect_test_secrets()
    leaks = scanner.leaks()
    if leaks:
        pytest.fail("secrets were logged:\n" + "\n".join(leaks[:20]), pytrace=False)


@pytest.fixture(autouse=True)
def _fresh_settings(monkeypatch: pytest.MonkeyPatch) -> Any:
    """No test sees another's settings: each starts with none installed (the environment's,
    read on first use) and ends by dropping whatever it installed. A test that needs other
    settings installs them with `app.config.use_settings`, the one way (see `settings`)."""
    monkeypatch.delenv("FREE_EMAIL_DOMAINS", raising=False)
    monkeypatch.delenv("HIGH_VALUE_TAGS", raising=False)
    install_settings(None)
    yield
    install_settings(None)


@pytest.fixture(scope="session")
async def postgres_engine() -> AsyncIterator[AsyncEngine | None]:
    if not ON_POSTGRES:
        yield None
        return
    engine = create_engine(TEST_DATABASE_URL)
    # Built by the migrations, as in production, so PostgreSQL-only indexes are there too.
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.drop_all)
        await conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
    await upgrade_database(engine)
    yield engine
    await engine.dispose()


@pytest.fixture
async def engine(postgres_engine: AsyncEngine | None) -> AsyncIterator[AsyncEngine]:
    """The test's database engine: the shared PostgreSQL one, or a fresh in-memory SQLite."""
    if postgres_engine is not None:
        yield postgres_engine
        return
    memory = create_engine(MEMORY_SQLITE_URL)
    async with memory.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    yield memory
    await memory.dispose()


@pytest.fixture
async def db(
    engine: AsyncEngine, postgres_engine: AsyncEngine | None
) -> AsyncIterator[AsyncSession]:
    if postgres_engine is not None:
        async with postgres_engine.connect() as conn:
            outer = await conn.begin()
            session = AsyncSession(
                bind=conn,
                expire_on_commit=False,
                autoflush=False,
                join_transaction_mode="create_savepoint",
            )
            try:
                yield session
            finally:
                await session.close()
                await outer.rollback()
        return

    session = create_session_factory(engine)()
    try:
        yield session
    finally:
        await session.close()


UserFactory = Callable[..., Awaitable[User]]


@pytest.fixture
def make_user(db: AsyncSession) -> UserFactory:
    counter = iter(range(1, 10_000))

    async def make(
        *, email: str | None = None, superuser: bool = False, active: bool = True, name: str = ""
    ) -> User:
        n = next(counter)
        user = User(
            email=email or f"user{n}@crm.example.com",
            full_name=name or f"User {n}",
            hashed_password=PASSWORD_HASH,
            is_superuser=superuser,
            is_active=active,
        )
        db.add(user)
        await db.commit()
        return user

    return make


@pytest.fixture
async def superuser(make_user: UserFactory) -> User:
    return await make_user(email="boss@crm.example.com", superuser=True, name="Boss")


@pytest.fixture
async def agent(make_user: UserFactory) -> User:
    return await make_user(email="agent@crm.example.com", name="Agent One")


@pytest.fixture
async def other_agent(make_user: UserFactory) -> User:
    return await make_user(email="other@crm.example.com", name="Agent Two")


@pytest.fixture
async def inactive_user(make_user: UserFactory) -> User:
    return await make_user(email="gone@crm.example.com", active=False, name="Former Agent")


LeadFactory = Callable[..., Awaitable[Lead]]


@pytest.fixture
def make_lead(db: AsyncSession, superuser: User) -> LeadFactory:
    """Create a lead through the service (so it is scored and noted like any real lead).
    `owner` assigns it; `by` is the acting user (default: the superuser)."""
    counter = iter(range(1, 100_000))

    async def make(*, owner: User | None = None, by: User | None = None, **fields: Any) -> Lead:
        n = next(counter)
        data: dict[str, Any] = {
            "first_name": f"First{n}",
            "last_name": f"Last{n}",
            "email": f"lead{n}@gmail.com",
        }
        data.update(fields)
        if owner is not None:
            data["assigned_to"] = owner.id
        actor = by or superuser
        return await LeadService.create_lead(db, data, user_id=actor.id)

    return make


async def count_rows(db: AsyncSession, table: str = "leads") -> int:
    return int(await db.scalar(text(f"SELECT count(*) FROM {table}")) or 0)


# --- HTTP ---------------------------------------------------------------------------------------

TEST_SECRET = "test-secret-key-that-is-long-enough-for-hs256-signing"


def make_settings(**changes: Any) -> Settings:
    """The tests' settings: no .env file, APP_ENV=testing, a fixed signing key, and `changes`.
    Put them in force with `use_settings(make_settings(...))`: the app, its dependencies and
    the services all read `get_settings()`, so that is the one way to change a setting."""
    return Settings(_env_file=None, app_env="testing", secret_key=SecretStr(TEST_SECRET), **changes)


@pytest.fixture
def settings() -> Iterator[Settings]:
    """The settings in force for the test: `make_settings()`. A module that needs others
    overrides this fixture the same way, `with use_settings(make_settings(...)) as s: yield s`."""
    with use_settings(make_settings()) as installed:
        yield installed


def app_in_session(engine: AsyncEngine, db: AsyncSession) -> FastAPI:
    """The real application, built from the settings in force, its requests running in the
    test's session (so on PostgreSQL the test's rollback undoes them too)."""
    application = create_app(engine=engine)

    async def test_session() -> AsyncIterator[AsyncSession]:
        yield db

    application.dependency_overrides[get_session] = test_session
    return application


@contextlib.asynccontextmanager
async def client_of(app: FastAPI, **transport: Any) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of `app` through ASGI (`transport`: ASGITransport's options)."""
    asgi = httpx.ASGITransport(app=app, **transport)
    async with httpx.AsyncClient(transport=asgi, base_url="http://testserver") as c:
        yield c


@pytest.fixture
def app(settings: Settings, engine: AsyncEngine, db: AsyncSession) -> FastAPI:
    return app_in_session(engine, db)


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client_of(app) as c:
        yield c


@pytest.fixture
def auth_headers(settings: Settings) -> Callable[[User], dict[str, str]]:
    """`auth_headers(user)`: an Authorization header with a fresh token for the user."""

    def headers(user: User) -> dict[str, str]:
        token, _ = create_access_token(inspect(user).identity[0], settings)
        return {"Authorization": f"Bearer {token}"}

    return headers
