"""Shared fixtures: a real database per test, users of every kind, and a lead factory.

Without `TEST_DATABASE_URL` every test gets a fresh in-memory SQLite database. With it (a
PostgreSQL URL) the schema is built once per run by the Alembic migrations and every test runs
inside a transaction that is rolled back afterwards; the services' own commits only release a
savepoint inside it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.config import Settings, install_settings, use_settings
from app.database import create_engine, create_session_factory, upgrade_database
from app.models import Base, Lead, User
from app.seed import DEMO_AGENT_PASSWORD
from app.services import LeadService, security
from tests.helpers import (
    MEMORY_SQLITE_URL,
    ON_POSTGRES,
    PASSWORD_HASH,
    TEST_DATABASE_URL,
    TEST_HASHER,
    TEST_SESSIONS,
    LeadFactory,
    UserFactory,
    add_session,
    app_in_session,
    client_of,
    make_settings,
    token_for,
)
from tests.log_scan import SecretScanner, collect_test_secrets, never_log


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
    # The schema is emptied wholesale, not by this checkout's metadata: a table another
    # checkout left behind (with a foreign key to `users`, say) must not break the run.
    async with engine.begin() as conn:
        await conn.execute(text("DROP SCHEMA public CASCADE"))
        await conn.execute(text("CREATE SCHEMA public"))
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
        TEST_SESSIONS[user.id] = await add_session(db, user.id)
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


# --- HTTP ---------------------------------------------------------------------------------------


@pytest.fixture
def settings() -> Iterator[Settings]:
    """The settings in force for the test: `make_settings()`. A module that needs others
    overrides this fixture the same way, `with use_settings(make_settings(...)) as s: yield s`."""
    with use_settings(make_settings()) as installed:
        yield installed


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
        # As login issues them: with the superuser hint (app/services/security.py).
        state = inspect(user)
        token = token_for(settings, state.identity[0], superuser=state.dict.get("is_superuser"))
        return {"Authorization": f"Bearer {token}"}

    return headers


@pytest.fixture
def h(auth_headers: Callable[[User], dict[str, str]], superuser: User) -> dict[str, str]:
    """The superuser's Authorization header: what most API tests call with."""
    return auth_headers(superuser)
