"""Engine and session factory, configured per database.

- SQLite file (development default): foreign keys on, WAL so readers never block the writer, and
  a busy timeout so concurrent writers queue instead of failing with "database is locked".
- In-memory SQLite (testing): one shared connection (StaticPool), so every session sees the same
  database for as long as the engine lives.
- PostgreSQL (production): a sized pool per process, recycling so long-lived connections do
  not go stale, a statement timeout so no request can hold a connection for ever, and limits
  of the app's own on every wait (`asyncpg_connect_options`), so that a database that stops
  answering altogether (a network black hole) costs a 503, not a hung request. There is no
  pre-ping (a round trip per checkout): a checkout skips a connection the driver already knows
  is closed, for free, and `@transactional` runs a call once more when its connection turns out
  dead before it did anything (`is_stale_connection_error`).
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import math
import select
from collections import deque
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
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import StaticPool

from app.config import Settings, get_settings, normalize_database_url
from app.models.name_likeness import ALIKE_THRESHOLD, SQLITE_FUNCTIONS, THRESHOLD_SETTING
from app.services.faults import FaultKind, fault_kind

logger = logging.getLogger(__name__)


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
            max_overflow=settings.db_max_overflow,
            pool_recycle=settings.db_pool_recycle_seconds,
            pool_timeout=settings.db_pool_timeout_seconds,
            connect_args=asyncpg_connect_options(settings),
        )

    # A database error's text is logged (app/services/faults.py); without this it would carry
    # the statement's parameters: note text, emails, password hashes.
    engine = create_async_engine(url, hide_parameters=True, **kwargs)
    if backend == "sqlite":
        _configure_sqlite(engine, settings, memory=is_memory_sqlite(url))
    elif backend == "postgresql":
        _configure_postgresql(engine)
    return engine


def _configure_sqlite(engine: AsyncEngine, settings: Settings, *, memory: bool) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from the driver, so `_on_begin` decides how they start.
        dbapi_connection.isolation_level = None
        # SQLite's own lower() folds only A-Z, so case-insensitive search would miss "Émile"
        # for "émile"; Python's folds every script, like PostgreSQL's.
        dbapi_connection.create_function("lower", 1, _unicode_lower, deterministic=True)
        # What PostgreSQL's migrations define in SQL (app/models/name_likeness.py).
        for name, arity, function in SQLITE_FUNCTIONS:
            dbapi_connection.create_function(name, arity, function, deterministic=True)
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


class Turns:
    """First come, first served turns at a pool of `size` connections.

    asyncio's own waits for a pooled connection (SQLAlchemy's queue, asyncpg's pool) let a
    newcomer take a connection that a waiter was just woken for; the waiter goes back to the
    end, and under load the unlucky wait longest: writes at 32 clients on a pool of 10 had a
    p99 4-6x their p50. Callers that take a turn here first reach the pool only when one of
    its connections is theirs. Waiting is bounded by `timeout` (TimeoutError).

    Every waiter has the same timeout, so the queue is also in order of deadline: one timer,
    for the first waiter, expires them all in turn. (`asyncio.timeout` around a semaphore set
    up a timer per waiter: under load, when nearly every request waits, 3% of a lead read.)"""

    def __init__(self, size: int, timeout: float | None) -> None:
        self.timeout = timeout
        self._free = size
        self._waiters: deque[tuple[float, asyncio.Future[None]]] = deque()
        self._timer: asyncio.TimerHandle | None = None

    async def acquire(self) -> None:
        if self._free and not self._waiters:
            self._free -= 1
            return
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        deadline = loop.time() + self.timeout if self.timeout is not None else math.inf
        self._waiters.append((deadline, waiter))
        if self._timer is None and self.timeout is not None:
            self._timer = loop.call_at(deadline, self._expire, loop)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self.release()  # handed a turn just as this caller gave up: pass it on
            raise

    def release(self) -> None:
        while self._waiters:
            _, waiter = self._waiters.popleft()
            if not waiter.done():  # skip those that gave up (cancelled, timed out)
                waiter.set_result(None)
                return
        self._free += 1

    def _expire(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        now = loop.time()
        while self._waiters and self._waiters[0][0] <= now:
            _, waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(TimeoutError("no turn came free in time"))
        if self._waiters:
            self._timer = loop.call_at(self._waiters[0][0], self._expire, loop)


def session_turns_for(engine: AsyncEngine, settings: Settings) -> Turns | None:
    """The turns at the engine's pool for request sessions: on PostgreSQL, one per pooled
    connection (`DB_POOL_SIZE` + `DB_MAX_OVERFLOW`), each request's session holding at most one.
    SQLite has no such queue to be unfair in (one file, one writer at a time)."""
    if engine.dialect.name != "postgresql":
        return None
    return Turns(settings.db_pool_size + settings.db_max_overflow, settings.db_pool_timeout_seconds)


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


# --- PostgreSQL: the app's own limits on every wait ------------------------------------------


def client_timeout_seconds(settings: Settings) -> float | None:
    """How long the app waits for the answer to any one statement: the server's statement
    timeout plus DB_CLIENT_TIMEOUT_MARGIN_MS, so that when the server is alive its own cancel
    (a clean 503 that keeps the connection) comes first, and the app's limit only cuts off a
    server or network that stopped answering. None when the statement timeout is off (0):
    statements may then run as long as they like, and the app does not cut them short either
    (nor, then, a black hole: README, Faults)."""
    if settings.db_statement_timeout_ms <= 0:
        return None
    return (settings.db_statement_timeout_ms + settings.db_client_timeout_margin_ms) / 1000


def asyncpg_dsn(url: Any) -> str:
    """An engine URL (postgresql+asyncpg://...) as the DSN `asyncpg.connect` takes."""
    return str(url.set(drivername="postgresql").render_as_string(hide_password=False))


def asyncpg_connect_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for `asyncpg.connect` and `asyncpg.create_pool`: the same for every
    PostgreSQL connection the app opens, SQLAlchemy's pool (`connect_args`) and the raw ones.

    - `server_settings`: the statement timeout, and custom plans: asyncpg prepares every
      statement, and after five runs PostgreSQL may switch to a generic plan made without the
      parameter values, which for skewed filters (one agent, a score range) was 5x slower than
      planning afresh. And the likeness from which pg_trgm's `%` holds, ours rather than its
      default (set here, so no transaction has to set it: GET requests run in autocommit).
    - `command_timeout`: the client's limit on every statement (`client_timeout_seconds`);
      asyncpg raises TimeoutError when it runs out.
    - `timeout`: the limit on opening a connection (DB_CONNECT_TIMEOUT_SECONDS), the TCP
      connect and the start-up exchange together.
    """
    return {
        "server_settings": {
            "statement_timeout": str(settings.db_statement_timeout_ms),
            "plan_cache_mode": "force_custom_plan",
            # pg_trgm's `%` (duplicate candidates: app/models/name_likeness.py)
            THRESHOLD_SETTING: str(ALIKE_THRESHOLD),
        },
        "command_timeout": client_timeout_seconds(settings),
        "timeout": settings.db_connect_timeout_seconds,
    }


STALE_CONNECTION = "crm_stale_connection"  # set on an error raised by a connection's first use
_USED = "crm_used"  # in a pooled connection's info: a statement succeeded since its checkout


def is_stale_connection_error(exc: BaseException) -> bool:
    """Whether `exc` is a connection turning out dead before it ran anything since it left the
    pool (it died while pooled: a restarted database, a killed idle backend). Nothing it was
    asked to do can have happened, so the work may simply be done again on a new connection.
    A connection lost in the middle of the work is not stale: a statement may have been killed
    on purpose, and running it again would undo that."""
    return bool(getattr(exc, STALE_CONNECTION, False))


def _configure_postgresql(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        # A few microseconds, unlike a pre-ping's round trip; the pool opens a new connection
        # in place of one found closed.
        if closed_by_server(dbapi_connection.driver_connection):
            raise DisconnectionError("the connection was closed while it was pooled")
        record.info[_USED] = False

    @event.listens_for(engine.sync_engine, "after_cursor_execute")
    def _on_executed(conn: Any, *_: Any) -> None:
        conn.info[_USED] = True

    @event.listens_for(engine.sync_engine, "handle_error")
    def _on_error(context: Any) -> None:
        error = context.original_exception
        connection = context.connection
        if connection is None or connection.invalidated:
            return
        if isinstance(error, TimeoutError):
            # The app's own limit ran out (asyncpg's command_timeout): the connection is in
            # an unknown state, mid-statement, so it is closed at once (not after a polite
            # close that would wait on the same silent network) and discarded. The other
            # pooled connections may be fine: a slow statement is no dead server.
            _terminate(connection)
            context.is_disconnect = True
            context.invalidate_pool_on_disconnect = False
        elif fault_kind(error) is FaultKind.CONNECTION_LOST:
            context.is_disconnect = True
            if not connection.info.get(_USED, True):
                raised = context.sqlalchemy_exception or error
                setattr(raised, STALE_CONNECTION, True)


def closed_by_server(driver: Any) -> bool:
    """Whether an idle asyncpg connection (pooled, about to be lent) is closed or being closed
    by the server (a restart, pg_terminate_backend): asyncpg saw it close, or the socket holds
    input asyncpg has not read yet. An idle connection is sent nothing but, at the end, its
    goodbye (a FATAL message and the close); reading `is_closed()` alone raced with that
    goodbye: asyncpg had read the message, which leaves its protocol unusable, but not yet the
    close. A few microseconds (one poll), where a pre-ping costs a round trip. Any pool of
    asyncpg connections can use it when it lends one."""
    if driver.is_closed():
        return True
    transport = getattr(driver, "_transport", None)  # asyncpg has no public accessor
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None:
        return False
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    return bool(poller.poll(0))


def _terminate(connection: Any) -> None:
    try:
        connection.connection.driver_connection.terminate()
    except Exception:  # already gone: SQLAlchemy discards it all the same
        logger.debug("could not terminate a timed-out connection", exc_info=True)


# --- readiness ---------------------------------------------------------------------------------

# What SQLAlchemy's asyncpg dialect reads from a URL for itself, not for asyncpg.connect.
_DIALECT_ONLY_ARGS = frozenset({"prepared_statement_cache_size", "prepared_statement_name_func"})


async def check_database(engine: AsyncEngine, settings: Settings) -> None:
    """Run `SELECT 1`, raising what the database raised; the caller bounds it in time.

    On PostgreSQL it never queues for the app's pool, where a busy app would keep it waiting
    for DB_POOL_TIMEOUT_SECONDS and then call a healthy database unreachable: it borrows an idle
    pooled connection when there is one, and otherwise opens a connection of its own, used once
    and closed (the pool is busy, or not yet filled). A pooled connection that fails is never
    handed back: its state is unknown."""
    if engine.dialect.name != "postgresql":
        async with engine.connect() as conn:
            await conn.exec_driver_sql("SELECT 1")
        return
    if engine.sync_engine.pool.checkedin() > 0:  # type: ignore[attr-defined]
        await _select_one_pooled(engine)
    else:
        await _select_one_alone(engine, settings)


async def _select_one_pooled(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        driver = (await conn.get_raw_connection()).driver_connection
        try:
            await driver.fetchval("SELECT 1")
        except BaseException:
            driver.terminate()
            await conn.invalidate()
            raise


async def _select_one_alone(engine: AsyncEngine, settings: Settings) -> None:
    import asyncpg

    _, params = engine.dialect.create_connect_args(engine.url)
    params = {key: value for key, value in params.items() if key not in _DIALECT_ONLY_ARGS}
    connection = await asyncpg.connect(**params, **asyncpg_connect_options(settings))
    try:
        await connection.fetchval("SELECT 1")
        await connection.close()
    except BaseException:
        connection.terminate()
        raise
