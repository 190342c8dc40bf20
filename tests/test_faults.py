"""Database faults, run for real: connections killed under the app, an unreachable database, a
statement that outlives the statement timeout, a network that stops passing anything (a black
hole), a pool with no free connection, and several app processes on one database; what kind of
fault each failure is, and how often faults are logged.

Everything PostgreSQL-specific runs against throw-away databases made for this module (never the
shared, rolled-back test database): PostgreSQL connections are terminated and rows locked here
in ways that would disturb other tests. Each database is dropped WITH (FORCE) at the end, pass or
fail. The in-process apps are real `create_app` instances with their own engine (so their own
pool, client-side limits and statement timeout); the multi-process tests start `python -m app`.

Nothing is mocked: the faults are real (`pg_terminate_backend`, row and table locks held from a
control connection, a closed port, a host name that does not resolve, a TCP proxy in front of
PostgreSQL that stops forwarding or drops connections: tests/support.py, `DatabaseProxy`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from alembic.script import ScriptDirectory
from fastapi import FastAPI
from pydantic import SecretStr
from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.pool import NullPool

from app.config import Settings, use_settings
from app.database import (
    alembic_config,
    create_engine,
    create_session_factory,
)
from app.main import create_app
from app.models import User
from app.services.base import transactional
from app.services.exceptions import DatabaseException
from app.services.faults import FaultKind, fault_kind
from app.services.security import create_access_token
from app.services.user_service import UserService
from tests.helpers import (
    MEMORY_SQLITE_URL,
    ON_POSTGRES,
    PASSWORD_HASH,
    TEST_DATABASE_URL,
    postgres_only,
)
from tests.support import (
    DatabaseProxy,
    Server,
    database_proxy,
    established_local_ports,
    established_sockets,
    password_files,
    postgres_dsn,
    postgres_fetch,
    postgres_url,
    run_async,
    server_launcher,
    throwaway_database_sync,
    wait_for_workers,
    wait_ready,
)

SECRET = "fault-test-secret-key-long-enough-for-hs256-signing"
PASSWORD = "fault-tolerant-passphrase"
# Where no database answers: a closed port (the server is down), and a host name that does not
# resolve (".invalid" never does, RFC 2606), as when a container platform's database service is
# gone. Neither needs a PostgreSQL server, so these tests run on SQLite runs too.
UNREACHABLE = {
    "closed_port": ("postgresql+asyncpg://postgres@127.0.0.1:1/x", "ConnectionRefusedError"),
    "unknown_host": ("postgresql+asyncpg://postgres@crm-db.invalid:5432/x", "gaierror"),
}
unreachable = pytest.mark.parametrize(
    ("database_url", "reason"), list(UNREACHABLE.values()), ids=list(UNREACHABLE)
)

REQUEST_DEADLINE = 10.0  # a request that has not answered by then is taken to hang


# --- PostgreSQL plumbing -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pg_database() -> Iterator[str]:
    """This module's migrated throw-away database (its name)."""
    with throwaway_database_sync("crm_faults", migrated=True) as name:
        yield name


@pytest.fixture
def fresh_pg_database() -> Iterator[str]:
    """An empty throw-away database (not migrated) for one test."""
    with throwaway_database_sync("crm_faults") as name:
        yield name


@pytest.fixture
async def control(pg_database: str) -> AsyncIterator[Callable[[], Awaitable[asyncpg.Connection]]]:
    """`await control()`: a connection of the test's own to the throw-away database, which the
    faults spare; all are closed when the test ends."""
    opened: list[asyncpg.Connection] = []

    async def connect() -> asyncpg.Connection:
        connection = await asyncpg.connect(postgres_dsn(pg_database))
        opened.append(connection)
        return connection

    try:
        yield connect
    finally:
        for connection in opened:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(connection.close(), 5)
            connection.terminate()


async def control_pids(connections: list[asyncpg.Connection]) -> list[int]:
    return [connection.get_server_pid() for connection in connections]


async def app_backends(
    observer: asyncpg.Connection, database: str, spare: list[int]
) -> list[asyncpg.Record]:
    """Every backend on the database that is not one of the test's control connections: the
    app's connections."""
    return await observer.fetch(
        "SELECT pid, state, wait_event_type, query FROM pg_stat_activity"
        " WHERE datname = $1 AND pid <> ALL($2::int[]) AND backend_type = 'client backend'",
        database,
        spare,
    )


async def terminate_app_backends(
    observer: asyncpg.Connection, database: str, spare: list[int]
) -> list[int]:
    """pg_terminate_backend on every backend of the database except `spare`, and wait until
    they are gone and their connections' close has reached the app's end (the app may not have
    read it yet: that is for it to notice)."""
    rows = await observer.fetch(
        "SELECT pid, client_port, pg_terminate_backend(pid) AS done FROM pg_stat_activity"
        " WHERE datname = $1 AND pid <> ALL($2::int[]) AND backend_type = 'client backend'",
        database,
        spare,
    )
    assert all(row["done"] for row in rows), rows
    killed = [row["pid"] for row in rows]
    ports = {row["client_port"] for row in rows}
    deadline = time.monotonic() + REQUEST_DEADLINE
    while await observer.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1::int[])", killed
    ) or established_local_ports(ports):
        assert time.monotonic() < deadline, f"backends {killed} outlived pg_terminate_backend"
        await asyncio.sleep(0.02)
    return killed


async def wait_for_lock_waiter(
    observer: asyncpg.Connection, database: str, spare: list[int], request: asyncio.Task
) -> int:
    """The pid of the app backend waiting on a lock, once the request reaches that point."""
    deadline = time.monotonic() + REQUEST_DEADLINE
    while True:
        assert not request.done(), f"the request did not block on the lock: {request.result()}"
        for row in await app_backends(observer, database, spare):
            if row["wait_event_type"] == "Lock":
                return row["pid"]
        assert time.monotonic() < deadline, "the request never waited on the row lock"
        await asyncio.sleep(0.02)


# --- the app, in process -------------------------------------------------------------------------


def app_settings(database_url: str, **overrides: Any) -> Settings:
    return Settings(
        _env_file=None,
        app_env="testing",
        database_url=database_url,
        secret_key=SecretStr(SECRET),
        **overrides,
    )


@dataclass
class RunningApp:
    app: FastAPI
    client: httpx.AsyncClient
    settings: Settings


@contextlib.asynccontextmanager
async def running_app(database_url: str, **overrides: Any) -> AsyncIterator[RunningApp]:
    """A real app with its own engine (pool, client-side limits, statement timeout from the
    settings), served in process; an error that escapes the app is a 500 response, as a server
    sends."""
    with use_settings(app_settings(database_url, **overrides)) as settings:
        engine = create_engine(settings.database_url)
        app = create_app(engine=engine)
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        try:
            async with httpx.AsyncClient(
                transport=transport, base_url="http://testserver", timeout=REQUEST_DEADLINE
            ) as client:
                yield RunningApp(app, client, settings)
        finally:
            await engine.dispose()


async def create_superuser(database_url: str) -> str:
    """A superuser made with UserService.create_user; returns its email."""
    email = f"boss-{secrets.token_hex(4)}@faults.example.com"
    engine = create_async_engine(database_url, poolclass=NullPool)
    try:
        async with create_session_factory(engine)() as db:
            data = {
                "email": email,
                "full_name": "Fault Boss",
                "password": PASSWORD,
                "is_superuser": True,
            }
            await UserService.create_user(db, data, acting_user_id=None)
    finally:
        await engine.dispose()
    return email


async def log_in(client: httpx.AsyncClient, email: str) -> dict[str, str]:
    response = await client.post(
        "/api/v1/auth/token", data={"username": email, "password": PASSWORD}
    )
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


async def new_lead(client: httpx.AsyncClient, headers: dict[str, str]) -> dict[str, Any]:
    tag = secrets.token_hex(4)
    response = await client.post(
        "/api/v1/leads",
        headers=headers,
        json={"first_name": "Grace", "last_name": f"Hopper{tag}", "email": f"g{tag}@navy.mil"},
    )
    assert response.status_code == 201, response.text
    return response.json()


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, f"{response.status_code} {response.text}"
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"detail", "code"}, body
    assert body["code"] == code, body
    assert isinstance(body["detail"], str) and body["detail"], body


@dataclass(frozen=True)
class Blocker:
    """A lock a control connection holds so that one request of the app waits in PostgreSQL."""

    where: str
    lock: str  # run in the holder's transaction; $1 is the lead's id when it appears
    probe: str  # fails with lock_not_available for as long as the lock is held
    method: str  # the request that then waits
    code: str  # the error code that request must get

    async def hold(self, connection: asyncpg.Connection, lead_id: int) -> None:
        await connection.execute("BEGIN")
        await connection.execute(self.lock, *self._args(self.lock, lead_id))

    async def assert_still_held(self, connection: asyncpg.Connection, lead_id: int) -> None:
        with pytest.raises(asyncpg.LockNotAvailableError):
            async with connection.transaction():
                await connection.execute(self.probe, *self._args(self.probe, lead_id))

    def send(self, client: httpx.AsyncClient, path: str, headers: dict[str, str]) -> Any:
        if self.method == "PATCH":
            return client.patch(path, headers=headers, json={"company": "Blocked Ltd"})
        return client.get(path, headers=headers)

    @staticmethod
    def _args(statement: str, lead_id: int) -> tuple[int, ...]:
        return (lead_id,) if "$1" in statement else ()


BLOCKERS = [
    # Inside a service call (@transactional): the PATCH waits for the lead's row lock.
    Blocker(
        where="in_a_service",
        lock="SELECT id FROM leads WHERE id = $1 FOR UPDATE",
        probe="SELECT id FROM leads WHERE id = $1 FOR UPDATE NOWAIT",
        method="PATCH",
        code="database_error",
    ),
    # Outside any service: reading the caller's account for the bearer token waits.
    Blocker(
        where="while_authenticating",
        lock="LOCK TABLE users IN ACCESS EXCLUSIVE MODE",
        probe="LOCK TABLE users IN ACCESS SHARE MODE NOWAIT",
        method="GET",
        code="database_unavailable",
    ),
]
blockers = pytest.mark.parametrize("blocker", BLOCKERS, ids=[b.where for b in BLOCKERS])


async def finish(request: asyncio.Task) -> httpx.Response:
    """The request's response; a failure (with the request cancelled) if it hangs."""
    try:
        return await asyncio.wait_for(request, REQUEST_DEADLINE)
    except TimeoutError:
        pytest.fail(f"the request did not answer within {REQUEST_DEADLINE:.0f}s")


async def cancel(request: asyncio.Task) -> None:
    request.cancel()
    with contextlib.suppress(BaseException):
        await request


# --- 1. connections killed under the app ---------------------------------------------------------


@postgres_only
@blockers
async def test_request_in_flight_when_connections_are_killed_gets_503_then_app_recovers(
    pg_database: str, control: Callable[[], Awaitable[asyncpg.Connection]], blocker: Blocker
) -> None:
    url = postgres_url(pg_database)
    email = await create_superuser(url)
    holder, observer = await control(), await control()
    spare = await control_pids([holder, observer])

    async with running_app(url) as running:
        client = running.client
        headers = await log_in(client, email)
        lead = await new_lead(client, headers)
        lead_path = f"/api/v1/leads/{lead['id']}"

        await blocker.hold(holder, lead["id"])
        request = asyncio.create_task(blocker.send(client, lead_path, headers))
        try:
            waiter = await wait_for_lock_waiter(observer, pg_database, spare, request)
            killed = await terminate_app_backends(observer, pg_database, spare)
            assert waiter in killed
        except BaseException:
            await cancel(request)
            raise
        response = await finish(request)
        assert_error(response, 503, blocker.code)
        await holder.execute("ROLLBACK")

        # The same app, not restarted: sequential and concurrent requests all succeed.
        for _ in range(3):
            read = await client.get(lead_path, headers=headers)
            assert read.status_code == 200, read.text
            assert read.json()["company"] is None  # the failed request left nothing behind
        reads = await asyncio.gather(*(client.get(lead_path, headers=headers) for _ in range(5)))
        assert [r.status_code for r in reads] == [200] * 5, [r.text for r in reads]
        patched = await client.patch(lead_path, headers=headers, json={"company": "Back Corp"})
        assert patched.status_code == 200, patched.text
        assert patched.json()["company"] == "Back Corp"
        ready = await client.get("/health/ready")
        assert ready.status_code == 200, ready.text
        # On fresh connections: none of the killed backends is in use.
        backends = {row["pid"] for row in await app_backends(observer, pg_database, spare)}
        assert backends and not backends & set(killed)


@postgres_only
async def test_pooled_connections_killed_while_idle_cost_no_failed_request(
    pg_database: str, control: Callable[[], Awaitable[asyncpg.Connection]]
) -> None:
    """Without pre-ping: after every pooled connection was terminated (with no request in
    flight to notice), the very next requests already succeed."""
    url = postgres_url(pg_database)
    email = await create_superuser(url)
    observer = await control()
    spare = await control_pids([observer])

    async with running_app(url) as running:
        client = running.client
        headers = await log_in(client, email)
        lead = await new_lead(client, headers)
        lead_path = f"/api/v1/leads/{lead['id']}"
        # Fill the pool with several connections, all idle afterwards.
        warm = await asyncio.gather(*(client.get(lead_path, headers=headers) for _ in range(4)))
        assert [r.status_code for r in warm] == [200] * 4
        pooled = await app_backends(observer, pg_database, spare)
        assert len(pooled) >= 2 and all(row["state"] == "idle" for row in pooled), pooled

        killed = await terminate_app_backends(observer, pg_database, spare)
        assert sorted(killed) == sorted(row["pid"] for row in pooled)

        reads = await asyncio.gather(*(client.get(lead_path, headers=headers) for _ in range(4)))
        assert [r.status_code for r in reads] == [200] * 4, [r.text for r in reads]
        assert all(r.json()["id"] == lead["id"] for r in reads)
        ready = await client.get("/health/ready")
        assert ready.status_code == 200, ready.text


@postgres_only
@pytest.mark.parametrize("method", ["GET", "PATCH"])
async def test_after_pooled_connections_were_killed_while_idle_a_read_and_a_write_succeed(
    pg_database: str, control: Callable[[], Awaitable[asyncpg.Connection]], method: str
) -> None:
    url = postgres_url(pg_database)
    email = await create_superuser(url)
    observer = await control()
    spare = await control_pids([observer])

    async with running_app(url) as running:
        client = running.client
        headers = await log_in(client, email)
        lead = await new_lead(client, headers)
        lead_path = f"/api/v1/leads/{lead['id']}"
        assert (await client.get(lead_path, headers=headers)).status_code == 200
        await terminate_app_backends(observer, pg_database, spare)

        if method == "GET":
            response = await client.get(lead_path, headers=headers)
        else:
            response = await client.patch(lead_path, headers=headers, json={"company": "Alive"})

    assert response.status_code == 200, response.text
    assert response.json()["company"] == (None if method == "GET" else "Alive")


# --- 1b. a connection found dead before it did anything costs one more run ----------------------


@pytest.fixture
async def proxy() -> AsyncIterator[DatabaseProxy]:
    """A TCP proxy in front of the test PostgreSQL server (tests/support.py)."""
    async with database_proxy() as running:
        yield running


@contextlib.asynccontextmanager
async def engine_through(
    proxy: DatabaseProxy, database: str, **overrides: Any
) -> AsyncIterator[Any]:
    """The app's engine (one pooled connection) on `database` through the proxy, with that
    connection opened and idle in the pool."""
    url = proxy.url(database)
    engine = create_engine(url, settings=app_settings(url, db_pool_size=1, **overrides))
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        yield engine
    finally:
        await engine.dispose()


def a_user(tag: str) -> User:
    return User(
        email=f"retry-{tag}@faults.example.com", full_name="Retry", hashed_password=PASSWORD_HASH
    )


@postgres_only
@pytest.mark.parametrize("work", ["read", "write"])
async def test_call_whose_pooled_connection_died_unnoticed_runs_once_more_on_a_new_one(
    pg_database: str,
    proxy: DatabaseProxy,
    control: Callable[[], Awaitable[asyncpg.Connection]],
    work: str,
) -> None:
    """The pooled connection is gone, and the app cannot know yet (nothing told it: the first
    bytes it sends find the connection closed), as right after a database restart."""
    tag = secrets.token_hex(4)
    runs = 0

    @transactional
    async def call(db: AsyncSession) -> int:
        nonlocal runs
        runs += 1
        if work == "write":
            db.add(a_user(tag))
            await db.flush()
        return int(await db.scalar(select(func.count()).select_from(User)) or 0)

    async with engine_through(proxy, pg_database) as engine:
        proxy.drop_on_next_use()
        async with create_session_factory(engine, read_only=work == "read")() as db:
            counted = await call(db)

    assert proxy.dropped == 1
    assert runs == 2
    observer = await control()
    stored = await observer.fetchval(
        "SELECT count(*) FROM users WHERE email = $1", f"retry-{tag}@faults.example.com"
    )
    assert stored == (1 if work == "write" else 0)
    assert counted >= stored


@postgres_only
async def test_call_is_run_again_at_most_once_for_a_dead_connection(
    pg_database: str, proxy: DatabaseProxy
) -> None:
    runs = 0

    @transactional
    async def call(db: AsyncSession) -> None:
        nonlocal runs
        runs += 1
        await db.connection()  # the connection this run got...
        proxy.drop_on_next_use()  # ...dies before it is used
        await db.execute(text("SELECT 1"))

    async with engine_through(proxy, pg_database) as engine, create_session_factory(engine)() as db:
        with pytest.raises(DatabaseException):
            await call(db)

    assert runs == 2
    assert proxy.dropped == 2


@postgres_only
async def test_connection_lost_while_committing_is_not_run_again_and_answers_503(
    pg_database: str, proxy: DatabaseProxy, control: Callable[[], Awaitable[asyncpg.Connection]]
) -> None:
    """Whether a commit that got no answer happened is unknown: running the call again could
    do its work twice."""
    tag = secrets.token_hex(4)
    runs = 0

    @transactional
    async def call(db: AsyncSession) -> None:
        nonlocal runs
        runs += 1
        db.add(a_user(tag))
        await db.flush()
        proxy.drop_on_next_use()  # the COMMIT is the next thing sent

    async with engine_through(proxy, pg_database) as engine, create_session_factory(engine)() as db:
        with pytest.raises(DatabaseException):
            await call(db)

    assert runs == 1
    assert proxy.dropped == 1
    observer = await control()
    stored = await observer.fetchval(
        "SELECT count(*) FROM users WHERE email = $1", f"retry-{tag}@faults.example.com"
    )
    assert stored == 0  # the COMMIT never reached the server


# --- 2. the database cannot be reached -----------------------------------------------------------


@unreachable
async def test_ready_says_503_with_a_reason_when_the_database_cannot_be_reached(
    database_url: str, reason: str
) -> None:
    async with running_app(database_url) as running:
        response = await running.client.get("/health/ready")

    assert_error(response, 503, "database_unavailable")
    assert response.json()["detail"] == f"The database is not reachable ({reason})."


async def test_ready_says_200_when_the_database_answers() -> None:
    url = TEST_DATABASE_URL if ON_POSTGRES else MEMORY_SQLITE_URL
    async with running_app(url) as running:
        response = await running.client.get("/health/ready")

    assert response.status_code == 200, response.text
    assert response.json() == {"status": "ok", "database": "ok"}


@unreachable
async def test_api_requests_against_an_unreachable_database_get_503_not_500(
    database_url: str, reason: str
) -> None:
    async with running_app(database_url) as running:
        token, _ = create_access_token(1, running.settings, session_id=1)
        headers = {"Authorization": f"Bearer {token}"}
        listed = await running.client.get("/api/v1/leads", headers=headers)
        created = await running.client.post(
            "/api/v1/leads",
            headers=headers,
            json={"first_name": "Ada", "last_name": "Lovelace", "email": "ada@analytical.io"},
        )
        login = await running.client.post(
            "/api/v1/auth/token", data={"username": "a@example.com", "password": PASSWORD}
        )

    assert_error(listed, 503, "database_unavailable")
    assert_error(created, 503, "database_unavailable")
    assert_error(login, 503, "database_unavailable")


# --- 3. statement timeout ------------------------------------------------------------------------


@postgres_only
@blockers
async def test_statement_outliving_the_timeout_is_cancelled_in_the_database_and_answered_503(
    pg_database: str, control: Callable[[], Awaitable[asyncpg.Connection]], blocker: Blocker
) -> None:
    url = postgres_url(pg_database)
    email = await create_superuser(url)
    holder, observer = await control(), await control()
    spare = await control_pids([holder, observer])

    async with running_app(url, db_statement_timeout_ms=500) as running:
        client = running.client
        headers = await log_in(client, email)
        lead = await new_lead(client, headers)
        lead_path = f"/api/v1/leads/{lead['id']}"

        await blocker.hold(holder, lead["id"])
        started = time.monotonic()
        request = asyncio.create_task(blocker.send(client, lead_path, headers))
        try:
            waiter = await wait_for_lock_waiter(observer, pg_database, spare, request)
        except BaseException:
            await cancel(request)
            raise
        response = await finish(request)
        elapsed = time.monotonic() - started

        assert_error(response, 503, blocker.code)
        assert 0.5 <= elapsed < 5.0, elapsed
        # The app's statement is over in the database (its connection idle, nothing waiting),
        # and its backend was not killed: only the statement was cancelled.
        backends = await app_backends(observer, pg_database, spare)
        assert [row["pid"] for row in backends if row["state"] != "idle"] == [], backends
        assert [row["pid"] for row in backends if row["wait_event_type"] == "Lock"] == []
        assert waiter in {row["pid"] for row in backends}
        # The lock holder is untouched: still in its transaction, still holding the lock.
        state = await observer.fetchval(
            "SELECT state FROM pg_stat_activity WHERE pid = $1", holder.get_server_pid()
        )
        assert state == "idle in transaction"
        assert holder.is_in_transaction()
        await blocker.assert_still_held(observer, lead["id"])

        await holder.execute("ROLLBACK")
        read = await client.get(lead_path, headers=headers)
        assert read.status_code == 200, read.text
        assert read.json()["company"] is None


# --- 3b. the app's own limits: a network black hole, a busy pool --------------------------------

# Short limits, so that the black hole's cut-off shows within a test.
SHORT_LIMITS: dict[str, Any] = {
    "db_statement_timeout_ms": 1000,
    "db_client_timeout_margin_ms": 500,
    "db_connect_timeout_seconds": 1.0,
    "db_pool_timeout_seconds": 1.0,
    "db_pool_size": 2,
}
CLIENT_LIMIT = 1.5  # the statement timeout plus the margin, above
SLACK = 2.0
READY_WITHIN = 2.0  # /health/ready's promise, whatever the database does


async def timed(call: Awaitable[httpx.Response]) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = await call
    return response, time.monotonic() - started


def send(client: httpx.AsyncClient, method: str, path: str, headers: dict[str, str]) -> Any:
    if method == "PATCH":
        return client.patch(path, headers=headers, json={"company": "Meanwhile Ltd"})
    return client.get(path, headers=headers)


def assert_database_fault(response: httpx.Response) -> None:
    """503, as a database fault is answered inside a service call or outside one."""
    assert response.status_code == 503, response.text
    assert response.json()["code"] in {"database_error", "database_unavailable"}, response.text


@postgres_only
@pytest.mark.parametrize("method", ["GET", "PATCH"])
async def test_request_during_a_network_black_hole_gets_503_within_the_client_limit(
    pg_database: str, proxy: DatabaseProxy, method: str
) -> None:
    email = await create_superuser(postgres_url(pg_database))

    async with running_app(proxy.url(pg_database), **SHORT_LIMITS) as running:
        client = running.client
        headers = await log_in(client, email)
        lead = await new_lead(client, headers)
        proxy.black_hole()
        response, elapsed = await timed(
            send(client, method, f"/api/v1/leads/{lead['id']}", headers)
        )

    assert_database_fault(response)
    assert elapsed < CLIENT_LIMIT + SLACK, elapsed


@postgres_only
async def test_after_a_black_hole_ends_requests_succeed_on_fresh_connections(
    pg_database: str, proxy: DatabaseProxy
) -> None:
    email = await create_superuser(postgres_url(pg_database))

    async with running_app(proxy.url(pg_database), **SHORT_LIMITS) as running:
        client = running.client
        headers = await log_in(client, email)
        lead = await new_lead(client, headers)
        lead_path = f"/api/v1/leads/{lead['id']}"
        proxy.black_hole()
        during = await asyncio.gather(
            *(send(client, method, lead_path, headers) for method in ("GET", "PATCH", "GET"))
        )
        proxy.restore()
        reads = await asyncio.gather(*(client.get(lead_path, headers=headers) for _ in range(3)))
        patched = await client.patch(lead_path, headers=headers, json={"company": "After Ltd"})
        ready = await client.get("/health/ready")

    for response in during:
        assert_database_fault(response)
    assert [r.status_code for r in reads] == [200] * 3, [r.text for r in reads]
    assert patched.status_code == 200, patched.text
    assert patched.json()["company"] == "After Ltd"
    assert ready.status_code == 200, ready.text


@postgres_only
@pytest.mark.parametrize("pool", ["with_an_idle_connection", "empty"])
async def test_ready_answers_503_within_2_s_during_a_black_hole(
    pg_database: str, proxy: DatabaseProxy, pool: str
) -> None:
    """With the default limits (5 s to connect, 17 s per statement): readiness has a deadline
    of its own."""
    async with running_app(proxy.url(pg_database)) as running:
        if pool == "with_an_idle_connection":
            async with running.app.state.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        proxy.black_hole()
        response, elapsed = await timed(running.client.get("/health/ready"))

    assert_error(response, 503, "database_unavailable")
    assert response.json()["detail"] == "The database is not reachable (TimeoutError)."
    assert elapsed < READY_WITHIN, elapsed


async def wait_for_lock_waiters(
    observer: asyncpg.Connection, database: str, spare: list[int], count: int
) -> None:
    deadline = time.monotonic() + REQUEST_DEADLINE
    while True:
        rows = await app_backends(observer, database, spare)
        if sum(1 for row in rows if row["wait_event_type"] == "Lock") >= count:
            return
        assert time.monotonic() < deadline, f"{count} requests never waited on the lock: {rows}"
        await asyncio.sleep(0.02)


@postgres_only
async def test_ready_says_200_within_2_s_while_every_pooled_connection_is_busy(
    pg_database: str, control: Callable[[], Awaitable[asyncpg.Connection]]
) -> None:
    """Two requests hold the pool's two connections, each waiting on a row lock: the database
    is fine, only busy, and the app must not tell a load balancer otherwise."""
    url = postgres_url(pg_database)
    email = await create_superuser(url)
    holder, observer = await control(), await control()
    spare = await control_pids([holder, observer])

    async with running_app(url, db_pool_size=2) as running:
        client = running.client
        headers = await log_in(client, email)
        lead = await new_lead(client, headers)
        lead_path = f"/api/v1/leads/{lead['id']}"
        await holder.execute("BEGIN")
        await holder.execute("SELECT id FROM leads WHERE id = $1 FOR UPDATE", lead["id"])
        busy = [
            asyncio.create_task(client.patch(lead_path, headers=headers, json={"company": c}))
            for c in ("One Ltd", "Two Ltd")
        ]
        try:
            await wait_for_lock_waiters(observer, pg_database, spare, 2)
            pool = running.app.state.engine.sync_engine.pool
            assert (pool.checkedout(), pool.checkedin()) == (2, 0)
            response, elapsed = await timed(client.get("/health/ready"))
        finally:
            await holder.execute("ROLLBACK")
        finished = [await finish(request) for request in busy]

    assert response.status_code == 200, response.text
    assert elapsed < READY_WITHIN, elapsed
    assert [r.status_code for r in finished] == [200, 200], [r.text for r in finished]


# --- 3c. fault logging ---------------------------------------------------------------------------


async def wait_for_record(caplog: pytest.LogCaptureFixture, text: str, within: float) -> None:
    deadline = time.monotonic() + within
    while not any(text in record.getMessage() for record in caplog.records):
        assert time.monotonic() < deadline, f"no log line with {text!r} within {within}s"
        await asyncio.sleep(0.05)


async def test_a_fault_is_logged_once_per_interval_with_a_count_not_once_per_request(
    caplog: pytest.LogCaptureFixture,
) -> None:
    database_url, reason = UNREACHABLE["closed_port"]
    interval = 3
    caplog.set_level(logging.WARNING)

    async with running_app(database_url, fault_log_interval_seconds=interval) as running:
        responses = [
            await running.client.post(
                "/api/v1/auth/token",
                data={"username": f"user{n}@faults.example.com", "password": PASSWORD},
            )
            for n in range(50)
        ]
        await wait_for_record(caplog, "requests failed", within=interval + SLACK)

    assert [r.status_code for r in responses] == [503] * 50
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 2, warnings
    assert warnings[0].startswith(f"database unreachable ({reason}) in ")
    assert warnings[1] == (
        f"database unreachable ({reason}): 49 requests failed in the last {interval} s"
    )


# --- 3d. what kind of fault a failure is ---------------------------------------------------------
#
# `fault_kind` is how every path (the ORM's, the raw asyncpg reads, readiness) tells a fault
# from any other error; each kind is produced for real where that can be done, both as asyncpg
# raises it and as SQLAlchemy wraps it.


async def raised(work: Awaitable[Any]) -> BaseException:
    try:
        await work
    except Exception as exc:
        return exc
    pytest.fail("expected the database to fail")


@unreachable
@pytest.mark.parametrize("through", ["asyncpg", "sqlalchemy"])
async def test_a_database_that_cannot_be_reached_is_unavailable(
    database_url: str, reason: str, through: str
) -> None:
    if through == "asyncpg":
        dsn = database_url.replace("postgresql+asyncpg://", "postgresql://")
        error = await raised(asyncpg.connect(dsn, timeout=5))
    else:
        engine = create_engine(database_url, app_settings(database_url))
        try:
            error = await raised(engine.connect().start())
        finally:
            await engine.dispose()

    assert type(error).__name__ == reason
    assert fault_kind(error) is FaultKind.UNAVAILABLE


async def test_no_free_pooled_connection_in_time_is_pool_exhausted(tmp_path: Path) -> None:
    engine = create_async_engine(
        f"sqlite+aiosqlite:///{tmp_path}/pool.db", pool_size=1, max_overflow=0, pool_timeout=0.1
    )
    try:
        async with engine.connect():
            error = await raised(engine.connect().start())
    finally:
        await engine.dispose()

    assert isinstance(error, SQLAlchemyError)
    assert fault_kind(error) is FaultKind.POOL_EXHAUSTED


async def test_the_apps_own_time_limit_running_out_is_a_timeout() -> None:
    error = await raised(asyncio.wait_for(asyncio.Event().wait(), 0.01))

    assert fault_kind(error) is FaultKind.TIMEOUT


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (asyncpg.TooManyConnectionsError("sorry, too many clients already"), "unavailable"),
        (asyncpg.CannotConnectNowError("the database system is starting up"), "unavailable"),
        (asyncpg.CrashShutdownError("terminating connection: crash of another"), "connection_lost"),
        (ConnectionResetError(104, "Connection reset by peer"), "connection_lost"),
        (
            asyncpg.InternalClientError("cannot switch to state 15; another operation (2) is ..."),
            "connection_lost",
        ),
        (ValueError("not a database error"), None),
    ],
    ids=["too_many_connections", "starting_up", "crash", "reset", "broken_protocol", "other"],
)
def test_faults_the_server_cannot_be_made_to_show_here_are_told_apart_by_kind(
    error: BaseException, kind: str | None
) -> None:
    """The server refusing clients or crashing, or the driver reading a killed backend's goodbye
    at just the wrong moment, cannot be arranged here: these are the exceptions as raised."""
    assert fault_kind(error) == kind


@contextlib.asynccontextmanager
async def both_connections(database: str) -> AsyncIterator[tuple[asyncpg.Connection, Any]]:
    """A raw asyncpg connection and a SQLAlchemy one (the app's engine) to `database`."""
    url = postgres_url(database)
    engine = create_engine(url, app_settings(url))
    raw = await asyncpg.connect(postgres_dsn(database))
    try:
        async with engine.connect() as conn:
            yield raw, conn
    finally:
        raw.terminate()
        await engine.dispose()


@postgres_only
async def test_a_statement_the_server_cancelled_is_a_timeout(pg_database: str) -> None:
    async with both_connections(pg_database) as (raw, conn):
        await raw.execute("SET statement_timeout = 50")
        await conn.exec_driver_sql("SET statement_timeout = 50")
        errors = [
            await raised(raw.execute("SELECT pg_sleep(1)")),
            await raised(conn.exec_driver_sql("SELECT pg_sleep(1)")),
        ]

    assert isinstance(errors[0], asyncpg.QueryCanceledError)
    assert isinstance(errors[1], DBAPIError)
    assert [fault_kind(error) for error in errors] == [FaultKind.TIMEOUT] * 2


@postgres_only
async def test_a_connection_whose_backend_was_killed_is_lost(
    pg_database: str, control: Callable[[], Awaitable[asyncpg.Connection]]
) -> None:
    """Killed in the middle of a statement, and used again afterwards."""
    observer = await control()
    async with both_connections(pg_database) as (raw, conn):
        pids = [raw.get_server_pid(), await conn.scalar(text("SELECT pg_backend_pid()"))]
        sleeping = [
            asyncio.create_task(raised(raw.execute("SELECT pg_sleep(30)"))),
            asyncio.create_task(raised(conn.exec_driver_sql("SELECT pg_sleep(30)"))),
        ]
        deadline = time.monotonic() + REQUEST_DEADLINE
        while await observer.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1::int[])"
            " AND query LIKE 'SELECT pg_sleep%'",
            pids,
        ) < len(pids):
            assert time.monotonic() < deadline, "the statements never started"
            await asyncio.sleep(0.02)
        await observer.execute("SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) pid", pids)
        errors = [await asyncio.wait_for(task, REQUEST_DEADLINE) for task in sleeping]
        closed = await raised(raw.fetchval("SELECT 1"))

    assert isinstance(errors[0], asyncpg.PostgresError | asyncpg.InterfaceError), errors
    assert isinstance(errors[1], DBAPIError) and errors[1].connection_invalidated, errors
    assert isinstance(closed, asyncpg.InterfaceError)
    assert [fault_kind(error) for error in [*errors, closed]] == [FaultKind.CONNECTION_LOST] * 3


@postgres_only
async def test_the_apps_own_limit_on_a_statement_is_a_timeout(pg_database: str) -> None:
    async with both_connections(pg_database) as (raw, _):
        error = await raised(raw.execute("SELECT pg_sleep(1)", timeout=0.05))

    assert isinstance(error, TimeoutError)
    assert fault_kind(error) is FaultKind.TIMEOUT


@postgres_only
async def test_errors_of_the_statement_itself_are_no_fault(pg_database: str) -> None:
    async with both_connections(pg_database) as (raw, conn):
        await raw.execute("CREATE TEMP TABLE once (x int PRIMARY KEY); INSERT INTO once VALUES (1)")
        await conn.exec_driver_sql("CREATE TEMP TABLE once (x int PRIMARY KEY)")
        await conn.exec_driver_sql("INSERT INTO once VALUES (1)")
        errors = [
            await raised(raw.execute("INSERT INTO once VALUES (1)")),
            await raised(raw.fetchval("SELECT $1::int")),  # a parameter missing
            await raised(conn.exec_driver_sql("INSERT INTO once VALUES (1)")),
        ]

    assert isinstance(errors[0], asyncpg.UniqueViolationError)
    assert isinstance(errors[1], asyncpg.InterfaceError)
    assert isinstance(errors[2], IntegrityError)
    assert [fault_kind(error) for error in errors] == [None] * 3


# --- 4 and 5. several processes ------------------------------------------------------------------


@pytest.fixture
def launch() -> Iterator[Callable[..., Server]]:
    """`launch(folder, *args, **settings)` starts `python -m app` (without waiting); every
    process started is stopped when the test ends, pass or fail."""
    with server_launcher(wait_until_ready=False, client_timeout=REQUEST_DEADLINE) as start:
        yield start


@postgres_only
def test_two_processes_starting_together_migrate_once_and_create_one_superuser(
    fresh_pg_database: str, tmp_path: Path, launch: Callable[..., Server]
) -> None:
    url = postgres_url(fresh_pg_database)
    folders = [tmp_path / "one", tmp_path / "two"]
    for folder in folders:
        folder.mkdir()
    servers = [launch(folder, DATABASE_URL=url, SECRET_KEY=SECRET) for folder in folders]
    for server in servers:
        wait_ready(server)

    outputs = [server.output() for server in servers]
    passwords = [password_files(output) for output in outputs]
    assert sorted(len(found) for found in passwords) == [0, 1], outputs
    superusers = run_async(
        lambda: postgres_fetch(fresh_pg_database, "SELECT email FROM users WHERE is_superuser")
    )
    assert [row["email"] for row in superusers] == ["admin@example.com"]
    versions = run_async(
        lambda: postgres_fetch(fresh_pg_database, "SELECT version_num FROM alembic_version")
    )
    heads = ScriptDirectory.from_config(alembic_config()).get_heads()
    assert sorted(row["version_num"] for row in versions) == sorted(heads)
    # The password shown is the superuser's, and both processes accept it.
    (password_file,) = next(found for found in passwords if found)
    password = password_file.read_text().strip()
    for server in servers:
        with server.client() as client:
            response = client.post(
                "/api/v1/auth/token",
                data={"username": "admin@example.com", "password": password},
            )
        assert response.status_code == 200, response.text


@postgres_only
def test_two_workers_serve_postgres_correctly(
    fresh_pg_database: str, tmp_path: Path, launch: Callable[..., Server]
) -> None:
    admin_password = "workers-" + secrets.token_hex(8)
    admin = f"workers-{secrets.token_hex(4)}@faults.example.com"
    server = launch(
        tmp_path,
        "--workers",
        "2",
        DATABASE_URL=postgres_url(fresh_pg_database),
        SECRET_KEY=SECRET,
        ADMIN_EMAIL=admin,
        ADMIN_PASSWORD=admin_password,
    )
    wait_ready(server)
    workers = wait_for_workers(server, 2)
    pg_port = make_url(TEST_DATABASE_URL).port or 5432

    statuses: list[int] = []

    def call(method: str, path: str, **kwargs: Any) -> httpx.Response:
        with server.client() as client:  # a new connection every time
            response = client.request(method, path, **kwargs)
        statuses.append(response.status_code)
        return response

    login = call("POST", "/api/v1/auth/token", data={"username": admin, "password": admin_password})
    assert login.status_code == 200, login.text
    headers = {"Authorization": f"Bearer {login.json()['access_token']}"}

    created: dict[int, str] = {}
    for n in range(15):
        response = call(
            "POST",
            "/api/v1/leads",
            headers=headers,
            json={"first_name": "Worker", "last_name": f"Lead{n}", "email": f"w{n}@acme.io"},
        )
        assert response.status_code == 201, response.text
        created[response.json()["id"]] = f"Lead{n}"
    for _ in range(2):
        for lead_id, last_name in created.items():
            response = call("GET", f"/api/v1/leads/{lead_id}", headers=headers)
            assert response.status_code == 200, response.text
            assert response.json()["last_name"] == last_name
    # Keep going (reads only) until both workers have served a request, within reason.
    for _ in range(200):
        if all(established_sockets(pid, pg_port, remote=True) for pid in workers):
            break
        response = call("GET", "/api/v1/leads", headers=headers, params={"limit": 100})
        assert response.status_code == 200, response.text
    listed = call("GET", "/api/v1/leads", headers=headers, params={"limit": 100})

    assert [pid for pid in workers if not established_sockets(pid, pg_port, remote=True)] == [], (
        "a worker never served a request"
    )
    assert listed.status_code == 200, listed.text
    assert {lead["id"] for lead in listed.json()["items"]} >= set(created)
    assert [code for code in statuses if code >= 500] == []
    assert "Traceback" not in server.output(), server.output()


@postgres_only
def test_a_served_apps_read_pool_survives_its_connections_being_killed_while_idle(
    fresh_pg_database: str, tmp_path: Path, launch: Callable[..., Server]
) -> None:
    """The served app's hot reads run on its own asyncpg pool (app/services/reader.py), not
    on SQLAlchemy's: after every connection of the app was terminated while idle, the next
    reads of a lead, a page and the statistics all succeed, on fresh connections."""
    admin = f"pool-{secrets.token_hex(4)}@faults.example.com"
    password = "read-pool-" + secrets.token_hex(8)
    server = launch(
        tmp_path,
        DATABASE_URL=postgres_url(fresh_pg_database),
        SECRET_KEY=SECRET,
        ADMIN_EMAIL=admin,
        ADMIN_PASSWORD=password,
    )
    wait_ready(server)
    with server.client() as client:
        login = client.post("/api/v1/auth/token", data={"username": admin, "password": password})
        headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
        body = {"first_name": "Pool", "last_name": "Survivor", "email": "pool@acme.io"}
        lead = client.post("/api/v1/leads", headers=headers, json=body).json()
        paths = [f"/api/v1/leads/{lead['id']}", "/api/v1/leads", "/api/v1/leads/statistics"]
        for path in paths:  # the read pool holds a connection now
            assert client.get(path, headers=headers).status_code == 200

        async def kill_all() -> list[int]:
            observer = await asyncpg.connect(postgres_dsn(fresh_pg_database))
            try:
                spare = [observer.get_server_pid()]
                return await terminate_app_backends(observer, fresh_pg_database, spare)
            finally:
                await observer.close()

        assert run_async(kill_all)
        reads = [client.get(path, headers=headers) for path in paths for _ in range(3)]
    assert [r.status_code for r in reads] == [200] * len(reads), [r.text for r in reads]
