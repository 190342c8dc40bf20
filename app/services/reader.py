"""Read-only statements, and single-statement writes, on the fastest road each database offers.

The hot reads (a lead by id, a page of leads, the statistics, each with the caller's account
check) are SQLAlchemy Core statements like every other query: the SQL is written once, with the
models. What differs is how they reach the database:

- PostgreSQL: each statement is compiled once per shape by SQLAlchemy's own asyncpg dialect
  (the same text `conn.execute` would send), and then run on a raw asyncpg connection with its
  parameters in order. That skips SQLAlchemy's execution context, result objects and async
  adaption, which cost the detail read about three times what PostgreSQL and asyncpg spend on
  it (issue 12). The connection comes from the app's own asyncpg pool (`ReadPool`) when the app
  runs, or from a SQLAlchemy connection when a caller hands one in (tests, scripts).
- SQLite (and any other database): the same statements through a SQLAlchemy connection, as
  every other query runs.

The API's create (`LeadCreation`, app/services/lead_creation.py) is one `INSERT ... SELECT
... RETURNING` and takes the same road (a `Writer`): asyncpg runs a lone statement in a
transaction of its own, so it commits or leaves nothing, as a read leaves nothing.

Both hand back plain tuples, columns in the statement's order. A read is idempotent, so a dead
connection (a restarted database, a killed backend) costs one transparent retry on a fresh
one instead of an error: that replaces pre-pinging every checkout.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import asyncpg
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession
from sqlalchemy.sql import Executable, Select

from app.config import Settings, get_settings
from app.services.exceptions import CRMException, DatabaseUnavailableException
from app.services.faults import (
    FaultKind,
    database_fault,
    fault_kind,
    is_collision,
    is_database_error,
    is_integrity_violation,
    reason,
    record_fault,
)

logger = logging.getLogger(__name__)

Params = Mapping[str, Any]
WHERE = "a hot read (app/services/reader.py)"  # what the fault log names
WRITE_WHERE = "a hot write (app/services/reader.py)"
Failure = Callable[[BaseException], Exception]  # a database failure -> what to raise instead


class Reader(Protocol):
    async def rows(self, statement: Select[Any], params: Params | None = None) -> list[tuple]:
        """Every row of a read-only statement, as tuples in its column order. `params` fills
        the statement's named `bindparam`s."""
        ...


class Writer(Protocol):
    dialect_name: str  # which database: a write may take a shape only one of them has

    async def rows(self, statement: Executable, params: Params | None = None) -> list[tuple]:
        """The rows a single write statement returns (its RETURNING), the statement committed
        by the time it returns: one statement is atomic on its own. A statement refused by the
        database leaves nothing behind."""
        ...

    def transaction(self) -> AbstractAsyncContextManager[Reader]:
        """Statements on one connection in one transaction, committed when the block ends and
        rolled back when anything escapes it. A collision with another transaction (deadlock,
        serialization failure, lock not available) and an integrity violation come out as the
        driver raised them, for `app.services.base.in_transaction` to retry or translate; any
        other database failure is `DatabaseUnavailableException`."""
        ...


# --- PostgreSQL: compiled once, run on asyncpg ----------------------------------------------


@dataclass(frozen=True)
class _Compiled:
    """One statement shape compiled for the asyncpg dialect, and what turns a call's values
    into asyncpg's positional arguments and its results into what SQLAlchemy would give."""

    compiled: Any  # SQLCompiler
    expanding: bool  # holds IN lists, whose rendering depends on the number of values
    sql: str | None  # the text, when it does not depend on the values
    names: tuple[str, ...]
    bind: Mapping[str, Callable[[Any], Any]]
    result: tuple[tuple[int, Callable[[Any], Any]], ...] | None  # None: not known yet


class CompiledStatements:
    """The compiled statements of one dialect, by shape (SQLAlchemy's cache key, the very key
    its own compiled cache uses: same structure, any values)."""

    def __init__(self, dialect: Dialect, size: int = 500) -> None:
        self.dialect = dialect
        self.size = size
        self._cache: dict[Any, _Compiled] = {}

    def prepare(self, statement: Executable, params: Params | None) -> tuple[_Compiled, str, list]:
        """The compiled shape, the SQL text and the positional arguments for one call."""
        key = statement._generate_cache_key()
        entry = self._cache.get(key.key) if key is not None else None
        if entry is None:
            entry = self._compile(statement, key)
        values = entry.compiled.construct_params(
            params, extracted_parameters=key.bindparams if key is not None else None
        )
        if entry.expanding:
            expanded = entry.compiled._process_parameters_for_postcompile(values)
            sql, names, values = expanded.statement, expanded.positiontup, expanded.parameters
            bind = expanded.processors
        else:
            sql, names, bind = entry.sql, entry.names, entry.bind
        args = [
            bind[name](values[name]) if name in bind else values[name]
            for name in names  # type: ignore[union-attr]
        ]
        return entry, sql, args  # type: ignore[return-value]

    def _compile(self, statement: Executable, key: Any) -> _Compiled:
        compiled = statement.compile(dialect=self.dialect, cache_key=key)
        expanding = bool(compiled.post_compile_params or compiled.literal_execute_params)
        entry = _Compiled(
            compiled=compiled,
            expanding=expanding,
            sql=None if expanding else compiled.string,
            names=tuple(compiled.positiontup or ()),
            bind=dict(compiled._bind_processors),
            result=None,
        )
        if key is not None:
            if len(self._cache) >= self.size:
                self._cache.clear()  # shapes are few; a flood of odd ones must not grow memory
            self._cache[key.key] = entry
        return entry

    def result_processors(self, entry: _Compiled, oids: Sequence[int]) -> tuple:
        """The columns whose values SQLAlchemy would convert (enums to their members, NULL
        tag lists to []), with the converter; PostgreSQL's type of each column decides, as in
        SQLAlchemy's own result handling."""
        processors = []
        for index, (column, oid) in enumerate(
            zip(entry.compiled._result_columns, oids, strict=True)
        ):
            process = column[3]._cached_result_processor(self.dialect, oid)
            if process is not None:
                processors.append((index, process))
        return tuple(processors)


AcquireConnection = Callable[[], AbstractAsyncContextManager[asyncpg.Connection]]


class AsyncpgReader:
    """Runs compiled statements on raw asyncpg connections from `acquire`."""

    def __init__(
        self,
        statements: CompiledStatements,
        acquire: AcquireConnection,
        timeout: float | None,
        failure: Failure | None = None,
    ) -> None:
        self.statements = statements
        self.acquire = acquire
        self.timeout = timeout  # the client-side bound on one statement, seconds
        self.failure = failure or unavailable
        self.dialect_name = statements.dialect.name

    async def rows(self, statement: Executable, params: Params | None = None) -> list[tuple]:
        entry, sql, args = self.statements.prepare(statement, params)
        for attempt in (1, 2):
            try:
                async with self.acquire() as conn:
                    records = await self._fetch(conn, entry, sql, args, self.timeout)
                break
            except Exception as exc:
                if not is_database_error(exc):
                    raise
                if attempt == 1 and _dead_before_sending(exc):
                    logger.info("read on a dead connection (%s); retrying once", reason(exc))
                    continue
                raise self.failure(exc) from exc
        return _converted(entry, records)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Reader]:
        try:
            async with self.acquire() as conn, conn.transaction():
                yield _OnConnection(self, conn)
        except Exception as exc:
            if not is_database_error(exc) or is_collision(exc) or is_integrity_violation(exc):
                raise
            raise self.failure(exc) from exc

    async def _fetch(
        self,
        conn: asyncpg.Connection,
        entry: _Compiled,
        sql: str,
        args: list,
        seconds: float | None,
    ) -> Any:
        if entry.result is None:
            prepared = await conn.prepare(sql, timeout=seconds)
            oids = [attribute.type.oid for attribute in prepared.get_attributes()]
            object.__setattr__(entry, "result", self.statements.result_processors(entry, oids))
        try:
            return await conn.fetch(sql, *args, timeout=seconds)
        except TimeoutError:
            # The database stopped answering: the connection's state is unknown, so it goes.
            conn.terminate()
            raise


def _converted(entry: _Compiled, records: Sequence[Any]) -> list[tuple]:
    processors = entry.result
    if not processors:
        return [tuple(record) for record in records]
    rows = []
    for record in records:
        row = list(record)
        for index, process in processors:
            row[index] = process(row[index])
        rows.append(tuple(row))
    return rows


class _OnConnection:
    """An `AsyncpgReader`'s statements on the one connection of a transaction."""

    def __init__(self, reader: AsyncpgReader, conn: asyncpg.Connection) -> None:
        self.reader = reader
        self.conn = conn

    async def rows(self, statement: Executable, params: Params | None = None) -> list[tuple]:
        entry, sql, args = self.reader.statements.prepare(statement, params)
        records = await self.reader._fetch(self.conn, entry, sql, args, self.reader.timeout)
        return _converted(entry, records)


# --- everything else: SQLAlchemy ------------------------------------------------------------


class SessionReader:
    """Runs the statements through SQLAlchemy connections from `connect`."""

    def __init__(
        self,
        connect: Callable[[], AbstractAsyncContextManager[AsyncConnection]],
        failure: Failure | None = None,
        *,
        dialect_name: str,
    ) -> None:
        self.connect = connect
        self.failure = failure or unavailable
        self.dialect_name = dialect_name

    async def rows(self, statement: Executable, params: Params | None = None) -> list[tuple]:
        try:
            async with self.connect() as conn:
                result = await conn.execute(statement, dict(params or {}))
                return [tuple(row) for row in result.all()] if result.returns_rows else []
        except Exception as exc:
            if not is_database_error(exc):
                raise
            raise self.failure(exc) from exc

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Reader]:
        try:
            async with self.connect() as conn:
                yield _SessionConnection(conn)
        except Exception as exc:
            if not is_database_error(exc) or is_collision(exc) or is_integrity_violation(exc):
                raise
            raise self.failure(exc) from exc


class _SessionConnection:
    """A `SessionReader`'s statements on the one connection of a transaction."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def rows(self, statement: Executable, params: Params | None = None) -> list[tuple]:
        result = await self.conn.execute(statement, dict(params or {}))
        return [tuple(row) for row in result.all()] if result.returns_rows else []


def _dead_before_sending(exc: BaseException) -> bool:
    """The connection was found dead before the statement went out (asyncpg refuses to send
    on a connection it knows is closed): nothing ran, so the read may go to another one. A
    connection lost while its statement ran is not retried: the statement may have been killed
    on purpose (pg_terminate_backend on a query stuck behind a lock), and the caller waited
    already. Connections the server closed while pooled are skipped before this (`ReadPool`,
    and SQLAlchemy's checkout: `app.database.closed_by_server`)."""
    return isinstance(exc, asyncpg.InterfaceError) and fault_kind(exc) is FaultKind.CONNECTION_LOST


def written_fault(exc: BaseException) -> CRMException:
    """The one translation of a hot write's database failure, answered as when the write ran
    in a session: no connection to be had (unreachable, the pool exhausted) is 503
    `database_unavailable`, as for a request that fails before its service runs; a failure
    while the write ran is what `@transactional` answers, 503 `database_error`. Both are
    logged through the fault log."""
    if fault_kind(exc) in (FaultKind.UNAVAILABLE, FaultKind.POOL_EXHAUSTED):
        return unavailable(exc)
    return database_fault(exc, WRITE_WHERE)


def unavailable(exc: BaseException) -> DatabaseUnavailableException:
    """The one translation of a hot read's database failure (logged through the fault log)."""
    record_fault(exc, WHERE)
    return DatabaseUnavailableException("The database is not available right now; please retry.")


# --- wiring ---------------------------------------------------------------------------------


class ReadPool:
    """The app's own asyncpg pool for the hot reads (and the one-statement create) on
    PostgreSQL, opened on first use (so an app that never reads opens nothing) and closed with
    the app."""

    def __init__(self, dsn: str, size: int, connect_options: Mapping[str, Any], timeout: float):
        self.dsn = dsn
        self.size = size
        self.connect_options = dict(connect_options)
        self._pool: asyncpg.Pool | None = None
        self._opening: asyncio.Lock | None = None
        # Borrowers queue here, first come first served, waiting at most `timeout` seconds:
        # asyncpg's own wait for a connection is not fair (p99 4x p50 with 32 clients on 10
        # connections; 1.7x in turn).
        from app.database import Turns

        self._turns = Turns(size, timeout)

    async def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            self._opening = self._opening or asyncio.Lock()
            async with self._opening:
                if self._pool is None:
                    self._pool = await asyncpg.create_pool(
                        self.dsn,
                        min_size=0,
                        max_size=self.size,
                        reset=_nothing_to_reset,
                        **self.connect_options,
                    )
        return self._pool

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[asyncpg.Connection]:
        """A connection the server has not already closed: one it did close while it sat in
        the pool (a restart, a killed backend) is dropped for another, for the price of one
        poll of its socket (`closed_by_server`) instead of a round trip."""
        from app.database import closed_by_server

        pool = await self.pool()
        await self._turns.acquire()
        try:
            conn = await pool.acquire()  # never waits: no more borrowers than connections
            try:
                for _ in range(self.size):
                    if not closed_by_server(conn):
                        break
                    conn.terminate()
                    await pool.release(conn)
                    conn = await pool.acquire()
                yield conn
            finally:
                await pool.release(conn)
        finally:
            self._turns.release()

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()


async def _nothing_to_reset(conn: asyncpg.Connection) -> None:
    """The read pool runs single autocommit statements only: no transaction, cursor, LISTEN,
    advisory lock or setting outlives one, so asyncpg's default reset on release (`RESET ALL`,
    `UNLISTEN *`... : a round trip per read, a tenth of a lead read's cost) has nothing to undo.
    A connection abandoned mid-statement is terminated instead (`AsyncpgReader._fetch`)."""


def read_timeout(settings: Settings) -> float | None:
    """How long the app waits for one read's answer: the server's statement timeout plus a
    margin, so a database that stops answering altogether costs a bounded wait."""
    if not settings.db_statement_timeout_ms:
        return None
    return (settings.db_statement_timeout_ms + settings.db_client_timeout_margin_ms) / 1000


def read_pool_for(engine: AsyncEngine, settings: Settings) -> ReadPool | None:
    """The read pool for an engine on PostgreSQL with asyncpg (None elsewhere), connecting
    exactly as the engine's own connections do."""
    url = engine.url
    if url.get_backend_name() != "postgresql" or url.get_driver_name() != "asyncpg":
        return None
    if not settings.db_read_pool_size:  # borrow from SQLAlchemy's pool (`engine_reader`)
        return None
    from app.database import asyncpg_connect_options, asyncpg_dsn

    dsn = asyncpg_dsn(url)
    return ReadPool(
        dsn,
        settings.db_read_pool_size,
        asyncpg_connect_options(settings),
        timeout=settings.db_pool_timeout_seconds,
    )


def session_reader(db: AsyncSession, settings: Settings | None = None) -> Reader:
    """A reader running in `db`'s connection and transaction: what a script or a test that
    holds a session uses, so its reads see its own uncommitted writes. On PostgreSQL the
    statements still take the compiled asyncpg road, on the session's own driver connection."""
    bind = db.bind
    if bind.dialect.name == "postgresql" and bind.dialect.driver == "asyncpg":
        statements = _statements_for(bind.dialect)

        @asynccontextmanager
        async def acquire() -> AsyncIterator[asyncpg.Connection]:
            conn = await db.connection()
            raw = await conn.get_raw_connection()
            yield raw.driver_connection

        settings = settings or get_settings()
        return AsyncpgReader(statements, acquire, read_timeout(settings))

    @asynccontextmanager
    async def connect() -> AsyncIterator[AsyncConnection]:
        yield await db.connection()

    return SessionReader(connect, dialect_name=bind.dialect.name)


def session_writer(db: AsyncSession, settings: Settings | None = None) -> Writer:
    """A writer running in `db`'s connection, committing `db` after each statement (tests and
    scripts that hold a session, as `session_reader`): on PostgreSQL the statement still takes
    the compiled asyncpg road, on the session's own driver connection."""
    bind = db.bind
    if bind.dialect.name == "postgresql" and bind.dialect.driver == "asyncpg":

        @asynccontextmanager
        async def acquire() -> AsyncIterator[asyncpg.Connection]:
            conn = await db.connection()
            raw = await conn.get_raw_connection()
            yield raw.driver_connection
            await db.commit()

        settings = settings or get_settings()
        statements = _statements_for(bind.dialect)
        return AsyncpgReader(statements, acquire, read_timeout(settings), written_fault)

    @asynccontextmanager
    async def connect() -> AsyncIterator[AsyncConnection]:
        try:
            yield await db.connection()
        except BaseException:
            await db.rollback()
            raise
        await db.commit()

    return SessionReader(connect, written_fault, dialect_name=bind.dialect.name)


def engine_writer(engine: AsyncEngine, read_pool: ReadPool | None, settings: Settings) -> Writer:
    """The app's writer for the hot writes (`LeadCreation`, `LeadChanges`): on PostgreSQL the
    hot reads' road (asyncpg runs a lone statement in its own transaction), elsewhere a
    SQLAlchemy connection whose transaction commits when the statement is done. Its failures
    read as a service's do (`written_fault`)."""
    dialect = engine.dialect
    if dialect.name == "postgresql" and dialect.driver == "asyncpg":
        acquire = read_pool.acquire if read_pool is not None else _checkout(engine)
        statements = _statements_for(dialect)
        return AsyncpgReader(statements, acquire, read_timeout(settings), written_fault)

    @asynccontextmanager
    async def connect() -> AsyncIterator[AsyncConnection]:
        async with engine.begin() as conn:
            yield conn

    return SessionReader(connect, written_fault, dialect_name=dialect.name)


def engine_reader(engine: AsyncEngine, read_pool: ReadPool | None, settings: Settings) -> Reader:
    """The app's reader: on PostgreSQL the read pool's connections (or, without one, raw
    connections checked out of SQLAlchemy's pool: an engine handed to `create_app`),
    elsewhere SQLAlchemy connections."""
    from app.database import READ_ONLY_OPTION

    dialect = engine.dialect
    if dialect.name == "postgresql" and dialect.driver == "asyncpg":
        acquire = read_pool.acquire if read_pool is not None else _checkout(engine)
        return AsyncpgReader(_statements_for(dialect), acquire, read_timeout(settings))

    reading = engine.execution_options(**{READ_ONLY_OPTION: True})

    @asynccontextmanager
    async def connect() -> AsyncIterator[AsyncConnection]:
        async with reading.connect() as conn:
            yield conn

    return SessionReader(connect, dialect_name=dialect.name)


def _checkout(engine: AsyncEngine) -> AcquireConnection:
    @asynccontextmanager
    async def checkout() -> AsyncIterator[asyncpg.Connection]:
        async with engine.connect() as conn:
            raw = await conn.get_raw_connection()
            try:
                yield raw.driver_connection
            except Exception as exc:
                # Dead, or abandoned by the client mid-statement: not back into SQLAlchemy's
                # pool. (A statement the server cancelled leaves a healthy connection.)
                if isinstance(exc, TimeoutError) or fault_kind(exc) is FaultKind.CONNECTION_LOST:
                    await conn.invalidate()
                raise

    return checkout


_STATEMENTS: weakref.WeakKeyDictionary[Dialect, CompiledStatements] = weakref.WeakKeyDictionary()


def _statements_for(dialect: Dialect) -> CompiledStatements:
    """One compiled cache per dialect object (an engine's), shared by its readers."""
    statements = _STATEMENTS.get(dialect)
    if statements is None:
        statements = _STATEMENTS[dialect] = CompiledStatements(dialect)
    return statements
