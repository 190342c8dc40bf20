"""Engine and session factory, configured per database.

- SQLite file (development default): foreign keys on, WAL so readers never block the writer, and
  a busy timeout so concurrent writers queue instead of failing with "database is locked".
- In-memory SQLite (testing): one shared connection (StaticPool), so every session sees the same
  database for as long as the engine lives.
- PostgreSQL (production): a sized pool per process, pre-ping so a restarted database does not
  cost failed requests (a free `is_closed()` check instead was tried and raced with the
  server's termination message), recycling so long-lived connections do not go stale, and a
  statement timeout so no request can hold a connection for ever.
"""

from __future__ import annotations

import asyncio
import fcntl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import StaticPool

from app.config import Settings, get_settings, normalize_database_url


def is_memory_sqlite(url: str) -> bool:
    parsed = make_url(url)
    return parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:")


def create_engine(url: str | None = None, settings: Settings | None = None) -> AsyncEngine:
    settings = settings or get_settings()
    url = normalize_database_url(url or settings.database_url)
    backend = make_url(url).get_backend_name()

    kwargs: dict[str, Any] = {}
    if backend == "sqlite":
        if is_memory_sqlite(url):
            kwargs["poolclass"] = StaticPool
        kwargs["connect_args"] = {
            "timeout": settings.sqlite_busy_timeout_ms / 1000,
            "check_same_thread": False,
        }
    elif backend == "postgresql":
        kwargs.update(
            pool_size=settings.db_pool_size,
            pool_pre_ping=True,
            max_overflow=settings.db_max_overflow,
            pool_recycle=settings.db_pool_recycle_seconds,
            pool_timeout=settings.db_pool_timeout_seconds,
            connect_args={
                "server_settings": {
                    "statement_timeout": str(settings.db_statement_timeout_ms),
                    # asyncpg prepares every statement; after five runs PostgreSQL may switch
                    # to a generic plan made without the parameter values, which for skewed
                    # filters (one agent, a score range) was 5x slower than planning afresh.
                    "plan_cache_mode": "force_custom_plan",
                }
            },
        )

    # A database error's text is logged (app/services/base.py); without this it would carry the
    # statement's parameters: note text, emails, password hashes.
    engine = create_async_engine(url, hide_parameters=True, **kwargs)
    if backend == "sqlite":
        _configure_sqlite(engine, settings, memory=is_memory_sqlite(url))
    return engine


def _configure_sqlite(engine: AsyncEngine, settings: Settings, *, memory: bool) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from the driver, so `_on_begin` decides how they start.
        dbapi_connection.isolation_level = None
        # SQLite's own lower() folds only A-Z, so case-insensitive search would miss "Émile"
        # for "émile"; Python's folds every script, like PostgreSQL's.
        dbapi_connection.create_function("lower", 1, _unicode_lower, deterministic=True)
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(settings.sqlite_busy_timeout_ms)}")
        if not memory:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        # A deferred transaction that reads and then writes cannot wait for another writer: SQLite
        # fails it at once with "database is locked". Taking the write lock up front makes
        # writers queue (for up to the busy timeout) instead. Read-only sessions never write,
        # so they take no lock and run beside the writer (WAL).
        read_only = conn.get_execution_options().get(READ_ONLY_OPTION, False)
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def _unicode_lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


READ_ONLY_OPTION = "crm_read_only"


def create_session_factory(
    engine: AsyncEngine, *, read_only: bool = False
) -> async_sessionmaker[AsyncSession]:
    """Sessions on `engine`. `read_only` sessions are for requests that change nothing (GET):
    on PostgreSQL they run in autocommit, which saves the BEGIN and COMMIT round trips and
    changes nothing a reader sees (READ COMMITTED takes a new snapshot per statement anyway);
    on SQLite they start a plain deferred transaction instead of taking the write lock."""
    if read_only:
        options: dict[str, Any] = {READ_ONLY_OPTION: True}
        if engine.dialect.name == "postgresql":
            options["isolation_level"] = "AUTOCOMMIT"
        engine = engine.execution_options(**options)
    # expire_on_commit=False: services commit, then hand the loaded objects back to callers
    # (routers, scripts) that read them after the transaction is over.
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


ALEMBIC_INI = Path(__file__).resolve().parent.parent / "alembic.ini"


def alembic_config(url: str | None = None) -> AlembicConfig:
    """The project's Alembic config, usable from any working directory, leaving the caller's
    logging alone."""
    config = AlembicConfig(str(ALEMBIC_INI))
    config.set_main_option("script_location", str(ALEMBIC_INI.parent / "alembic"))
    config.attributes["configure_logger"] = False
    if url:
        # ConfigParser treats % as interpolation; a password may well contain one.
        config.set_main_option("sqlalchemy.url", normalize_database_url(url).replace("%", "%%"))
    return config


@dataclass(frozen=True)
class MigrationReport:
    """What `upgrade_database` did: the revision before (None: an empty database) and after,
    the revisions applied in order, as (id, description), and the scripts' head. `ran` is
    False when the database was already at the revision asked for, so Alembic was not started
    at all."""

    before: str | None
    after: str | None
    applied: tuple[tuple[str, str], ...]
    head: str | None
    ran: bool = True


async def upgrade_database(engine: AsyncEngine, revision: str = "head") -> MigrationReport:
    """Apply the Alembic migrations to the engine's database; what was done.

    Alembic's command API is synchronous and its env.py runs its own event loop with its own
    engine (on SQLite without foreign-key enforcement, which table rebuilds need), so it runs in
    a worker thread. That costs seconds (4-7 s on a restart), so a database already at the
    revision asked for is left alone: its revision is read first, and compared with the
    scripts'. Alembic's own log lines are not the report (they are silenced at INFO, see
    app/logging_config.py): the revisions are read before and after instead."""
    url = engine.url.render_as_string(hide_password=False)
    config = alembic_config(url)
    script = ScriptDirectory.from_config(config)
    head = script.get_current_head()
    before = await current_revision(engine)
    if before is not None and before == (head if revision == "head" else revision):
        return MigrationReport(before, before, (), head, ran=False)
    await asyncio.to_thread(command.upgrade, config, revision)
    after = await current_revision(engine)
    applied: tuple[tuple[str, str], ...] = ()
    if after is not None and after != before:
        steps = reversed(list(script.iterate_revisions(after, before)))
        applied = tuple((step.revision, step.doc) for step in steps)
    return MigrationReport(before, after, applied, head)


async def current_revision(engine: AsyncEngine) -> str | None:
    """The database's Alembic revision; None for a database never migrated."""

    def read(conn: Any) -> str | None:
        return MigrationContext.configure(conn).get_current_revision()

    async with engine.connect() as conn:
        return await conn.run_sync(read)


STARTUP_LOCK_KEY = 4_711_2026  # any constant; identifies this app's start-up lock


@asynccontextmanager
async def startup_lock(engine: AsyncEngine) -> AsyncIterator[None]:
    """Let one process at a time migrate and bootstrap, so several starting together (workers,
    replicas) neither race the migrations nor create the first superuser twice.

    PostgreSQL: a session advisory lock, released when the block ends or the process dies.
    SQLite file: an exclusive lock on a file beside the database. In-memory SQLite: nothing to
    share, nothing to lock.
    """
    url = engine.url
    if url.get_backend_name() == "postgresql":
        async with engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": STARTUP_LOCK_KEY})
            try:
                yield
            finally:
                await conn.execute(
                    text("SELECT pg_advisory_unlock(:key)"), {"key": STARTUP_LOCK_KEY}
                )
        return
    if url.get_backend_name() == "sqlite" and not is_memory_sqlite(str(url)):
        with open(f"{url.database}.lock", "a") as handle:  # noqa: ASYNC230 - once, at start-up
            await asyncio.to_thread(fcntl.flock, handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
        return
    yield
