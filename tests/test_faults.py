"""Database faults, run for real: connections killed under the app, an unreachable database, a
statement that outlives the statement timeout, and several app processes on one database.

Everything PostgreSQL-specific runs against throw-away databases made for this module (never the
shared, rolled-back test database): PostgreSQL connections are terminated and rows locked here
in ways that would disturb other tests. Each database is dropped WITH (FORCE) at the end, pass or
fail. The in-process apps are real `create_app` instances with their own engine (so their own
pool, pre-ping and statement timeout); the multi-process tests start `python -m app`.

Nothing is mocked: the faults are real (`pg_terminate_backend`, row and table locks held from a
control connection, a closed port, a host name that does not resolve).
"""

from __future__ import annotations

import asyncio
import contextlib
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
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from app.config import Settings, use_settings
from app.database import (
    alembic_config,
    create_engine,
    create_session_factory,
)
from app.main import create_app
from app.services.security import create_access_token
from app.services.user_service import UserService
from tests.helpers import MEMORY_SQLITE_URL, ON_POSTGRES, TEST_DATABASE_URL, postgres_only
from tests.support import (
    Server,
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
    they are gone."""
    rows = await observer.fetch(
        "SELECT pid, pg_terminate_backend(pid) AS done FROM pg_stat_activity"
        " WHERE datname = $1 AND pid <> ALL($2::int[]) AND backend_type = 'client backend'",
        database,
        spare,
    )
    assert all(row["done"] for row in rows), rows
    killed = [row["pid"] for row in rows]
    deadline = time.monotonic() + REQUEST_DEADLINE
    while await observer.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1::int[])", killed
    ):
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
    """A real app with its own engine (pool, pre-ping, statement timeout from the settings),
    served in process; an error that escapes the app is a 500 response, as a server sends."""
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
    """Pre-ping: after every pooled connection was terminated (with no request in flight to
    notice), the very next requests already succeed."""
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
        token, _ = create_access_token(1, running.settings)
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
