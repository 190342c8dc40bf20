"""How each kind of database is set up: the pragmas, the pool and its limits, the testing
database, and migrating at start-up."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import AppEnv, Settings, get_settings
from app.database import (
    MigrationReport,
    Turns,
    alembic_config,
    asyncpg_connect_options,
    create_engine,
    create_session_factory,
    is_memory_sqlite,
    upgrade_database,
)
from app.main import create_app
from app.services.security import create_access_token
from tests.helpers import ON_POSTGRES, TEST_DATABASE_URL, client_of, postgres_only
from tests.support import postgres_url, throwaway_database


async def pragma(engine: AsyncEngine, name: str) -> object:
    async with engine.connect() as conn:
        return (await conn.execute(text(f"PRAGMA {name}"))).scalar()


def test_testing_settings_default_to_an_in_memory_database() -> None:
    settings = Settings(_env_file=None, app_env=AppEnv.TESTING)
    assert is_memory_sqlite(settings.database_url)


def test_development_settings_default_to_a_sqlite_file() -> None:
    settings = Settings(_env_file=None, app_env=AppEnv.DEVELOPMENT)
    assert settings.database_url == "sqlite+aiosqlite:///./crm.db"


async def test_sqlite_file_runs_with_foreign_keys_wal_and_a_busy_timeout(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, sqlite_busy_timeout_ms=4321)
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path}/crm.db", settings)
    try:
        assert await pragma(engine, "foreign_keys") == 1
        assert await pragma(engine, "journal_mode") == "wal"
        assert await pragma(engine, "busy_timeout") == 4321
    finally:
        await engine.dispose()


async def test_sqlite_transactions_take_the_write_lock_up_front(tmp_path: Path) -> None:
    """A second writer must wait rather than fail: its BEGIN blocks while another is open."""
    settings = Settings(_env_file=None, sqlite_busy_timeout_ms=100)
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path}/crm.db", settings)
    other = create_engine(f"sqlite+aiosqlite:///{tmp_path}/crm.db", settings)
    try:
        async with engine.connect() as first:
            await first.execute(text("SELECT 1"))  # opens the transaction
            async with other.connect() as second:
                with pytest.raises(Exception, match="locked"):
                    await second.execute(text("SELECT 1"))
    finally:
        await engine.dispose()
        await other.dispose()


async def test_in_memory_database_is_shared_by_every_session_of_an_engine() -> None:
    engine = create_engine("sqlite+aiosqlite://")
    sessions = create_session_factory(engine)
    try:
        async with sessions() as one:
            await one.execute(text("CREATE TABLE t (x INTEGER)"))
            await one.execute(text("INSERT INTO t VALUES (7)"))
            await one.commit()
        async with sessions() as two:
            assert await two.scalar(text("SELECT x FROM t")) == 7
    finally:
        await engine.dispose()


async def test_sqlite_lower_folds_accented_letters() -> None:
    engine = create_engine("sqlite+aiosqlite://")
    try:
        async with engine.connect() as conn:
            assert await conn.scalar(text("SELECT lower('ÉMILE MÜLLER')")) == "émile müller"
    finally:
        await engine.dispose()


@postgres_only
def test_postgres_engine_has_a_sized_pool_with_recycle_and_no_pre_ping() -> None:
    """No round trip per checkout: dead connections are skipped or retried instead
    (tests/test_faults.py)."""
    settings = Settings(
        _env_file=None,
        db_pool_size=7,
        db_max_overflow=3,
        db_pool_recycle_seconds=600,
        db_pool_timeout_seconds=4,
    )
    engine = create_engine(TEST_DATABASE_URL, settings)
    pool = engine.sync_engine.pool
    assert pool.size() == 7
    assert pool._max_overflow == 3  # no public accessor
    assert pool._pre_ping is False
    assert pool._recycle == 600
    assert pool.timeout() == 4


def test_asyncpg_connections_get_the_statement_timeout_plus_margin_as_client_limit() -> None:
    settings = Settings(
        _env_file=None,
        db_statement_timeout_ms=1200,
        db_client_timeout_margin_ms=300,
        db_connect_timeout_seconds=2.5,
    )

    assert asyncpg_connect_options(settings) == {
        "server_settings": {
            "statement_timeout": "1200",
            "plan_cache_mode": "force_custom_plan",
            "pg_trgm.similarity_threshold": "0.5",
        },
        "command_timeout": 1.5,
        "timeout": 2.5,
    }


def test_without_a_statement_timeout_the_client_sets_no_statement_limit_either() -> None:
    """DB_STATEMENT_TIMEOUT_MS=0 lets statements run as long as they take; the app does not cut
    them off on its own. Opening a connection stays bounded."""
    settings = Settings(_env_file=None, db_statement_timeout_ms=0, db_connect_timeout_seconds=3)

    options = asyncpg_connect_options(settings)

    assert options["command_timeout"] is None
    assert options["server_settings"]["statement_timeout"] == "0"
    assert options["timeout"] == 3


@postgres_only
async def test_statement_outliving_the_client_limit_is_cut_off_and_its_connection_dropped() -> None:
    """The app's own limit (statement timeout + margin) holds even where the server's does not
    (here: switched off for the session, as a dead network would); the connection it gave up on
    is discarded, and the next checkout gets a fresh one with the usual settings."""
    settings = Settings(
        _env_file=None, db_statement_timeout_ms=300, db_client_timeout_margin_ms=200
    )
    engine = create_engine(TEST_DATABASE_URL, settings)
    try:
        async with engine.connect() as conn:
            await conn.exec_driver_sql("SET statement_timeout = 0")
            pid = await conn.scalar(text("SELECT pg_backend_pid()"))
            started = time.monotonic()
            with pytest.raises(TimeoutError):
                await conn.exec_driver_sql("SELECT pg_sleep(5)")
            elapsed = time.monotonic() - started
            assert conn.invalidated
        async with engine.connect() as conn:
            assert await conn.scalar(text("SELECT pg_backend_pid()")) != pid
            assert await conn.scalar(text("SHOW statement_timeout")) == "300ms"
    finally:
        await engine.dispose()
    assert 0.5 <= elapsed < 3.0, elapsed


async def test_starting_on_a_database_already_at_head_does_not_run_alembic(
    tmp_path: Path,
) -> None:
    async with migratable_database(tmp_path) as url:
        engine = create_engine(url, Settings(_env_file=None))
        try:
            first = await upgrade_database(engine)
            second = await upgrade_database(engine)
        finally:
            await engine.dispose()

    assert first.ran and first.before is None and first.after == first.head
    assert [revision for revision, _ in first.applied][-1] == first.head
    assert second == MigrationReport(first.head, first.head, (), first.head, ran=False)


async def test_a_database_behind_head_is_still_migrated(tmp_path: Path) -> None:
    async with migratable_database(tmp_path) as url:
        engine = create_engine(url, Settings(_env_file=None))
        try:
            script = ScriptDirectory.from_config(alembic_config())
            previous = script.get_revision(script.get_current_head()).down_revision
            await upgrade_database(engine, previous)
            report = await upgrade_database(engine)
        finally:
            await engine.dispose()

    assert report.ran
    assert report.before == previous
    assert report.applied == ((report.head, script.get_revision(report.head).doc),)


@contextlib.asynccontextmanager
async def migratable_database(tmp_path: Path) -> AsyncIterator[str]:
    """An empty database of the kind the run is on: a throw-away one on the PostgreSQL server,
    or a SQLite file."""
    if not ON_POSTGRES:
        yield f"sqlite+aiosqlite:///{tmp_path}/crm.db"
        return
    async with throwaway_database("crm_migrate") as name:
        yield postgres_url(name)


@pytest.mark.skipif(ON_POSTGRES, reason="checks the SQLite default only")
def test_without_test_database_url_the_suite_runs_on_in_memory_sqlite() -> None:
    assert TEST_DATABASE_URL == ""


@postgres_only
async def test_postgresql_connections_plan_each_statement_for_its_parameters() -> None:
    """A generic plan (made once for any parameter values) picked the wrong index for one
    agent's score range and ran 5x slower; the app's connections always plan afresh."""
    engine = create_engine(TEST_DATABASE_URL)
    try:
        async with engine.connect() as conn:
            mode = (await conn.execute(text("SHOW plan_cache_mode"))).scalar()
        assert mode == "force_custom_plan"
    finally:
        await engine.dispose()


# --- turns at the pool ---------------------------------------------------------------------------


async def test_a_released_turn_goes_to_the_caller_waiting_not_to_a_newcomer() -> None:
    """asyncio's queues let a newcomer take what a woken waiter was about to; Turns does not."""
    turns = Turns(1, timeout=None)
    await turns.acquire()
    order: list[str] = []

    async def take(name: str) -> None:
        await turns.acquire()
        order.append(name)
        await asyncio.sleep(0)
        turns.release()

    waiting = asyncio.create_task(take("waiting"))
    await asyncio.sleep(0)  # it is now waiting for the turn
    turns.release()  # it is woken, but has not run yet...
    await turns.acquire()  # ...when a newcomer asks
    order.append("newcomer")
    turns.release()
    await waiting
    assert order == ["waiting", "newcomer"]


async def test_waiting_for_a_turn_is_bounded_by_the_timeout() -> None:
    turns = Turns(1, timeout=0.05)
    await turns.acquire()
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await turns.acquire()
    assert time.monotonic() - started < 1


async def test_a_cancelled_waiter_is_skipped_and_costs_no_turn() -> None:
    turns = Turns(1, timeout=None)
    await turns.acquire()
    gave_up = asyncio.create_task(turns.acquire())
    await asyncio.sleep(0)
    gave_up.cancel()
    patient = asyncio.create_task(turns.acquire())
    await asyncio.sleep(0)
    turns.release()
    await asyncio.wait_for(patient, 1)  # the turn went past the cancelled waiter


async def test_a_timed_out_waiter_costs_no_turn() -> None:
    turns = Turns(1, timeout=0.05)
    await turns.acquire()
    with pytest.raises(TimeoutError):
        await turns.acquire()
    turns.release()
    await asyncio.wait_for(turns.acquire(), 0.01)  # free at once: nobody is waiting


async def test_a_turn_handed_to_a_caller_cancelled_at_that_moment_is_passed_on() -> None:
    turns = Turns(1, timeout=None)
    await turns.acquire()
    first = asyncio.create_task(turns.acquire())
    second = asyncio.create_task(turns.acquire())
    await asyncio.sleep(0)
    turns.release()  # the turn is handed to `first`...
    first.cancel()  # ...which is cancelled before it runs
    await asyncio.wait_for(second, 1)
    assert first.cancelled()


@postgres_only
async def test_a_request_waits_its_turn_for_a_connection_and_gets_503_past_the_pool_timeout(
    engine: AsyncEngine,
) -> None:
    """Request sessions take a turn at the pool first (app/api/deps.py `get_session`): with
    every turn taken, a request waits DB_POOL_TIMEOUT_SECONDS and gets the pool's 503."""
    app = create_app(engine=engine)
    turns = app.state.session_turns = Turns(1, timeout=0.2)
    token, _ = create_access_token(987_654, get_settings(), 0, session_id=1)
    headers = {"Authorization": f"Bearer {token}"}
    async with client_of(app) as client:
        await turns.acquire()
        held = await client.get("/api/v1/users/me", headers=headers)
        turns.release()
        free = await client.get("/api/v1/users/me", headers=headers)
    assert held.status_code == 503, held.text
    assert held.json()["code"] == "database_unavailable"
    assert free.status_code == 401, free.text
