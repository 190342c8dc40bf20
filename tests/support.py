"""Support code shared by the tests that run the app for real (test_cli, test_faults,
test_concurrency): `python -m app` servers in subprocesses, and throw-away PostgreSQL databases.

It lives here, not in one of those test modules, so that there is one version of each helper
and no test module imports from another. Nothing here is a test or a fixture; the modules build
their fixtures from these pieces.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import os
import re
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.pool import NullPool

from app.config import Settings
from app.database import create_engine, create_session_factory, upgrade_database
from tests.helpers import ON_POSTGRES, TEST_DATABASE_URL, TEST_SECRET

ROOT = Path(__file__).resolve().parents[1]
READY_DEADLINE_SECONDS = 30.0  # for /health/ready to answer 200, and for workers to start
STOP_DEADLINE_SECONDS = 15.0  # for a server to exit after SIGTERM, and again after SIGKILL
CLIENT_TIMEOUT_SECONDS = 10.0  # a request to a served app that has not answered by then hangs
WORKER_STARTED = re.compile(r"Started server process \[(\d+)\]")
SETTING_NAMES = {name.lower() for name in Settings.model_fields}

T = TypeVar("T")


# --- subprocesses ------------------------------------------------------------------------------


def cli_env(**settings: str) -> dict[str, str]:
    """The current environment minus every app setting (and TEST_DATABASE_URL), plus
    `settings`, with the repository on PYTHONPATH so `-m app` resolves from any folder: a
    subprocess sees the zero-configuration defaults unless the test sets something.

    Without a DATABASE_URL that default is a SQLite file of the test's own, the same whichever
    suite runs: the SQLite suite runs such a test, the PostgreSQL suite skips it."""
    if ON_POSTGRES and "DATABASE_URL" not in settings:
        pytest.skip("a SQLite database of its own: run once, by the SQLite suite")
    env = {
        key: value
        for key, value in os.environ.items()
        if key.lower() not in SETTING_NAMES and key != "TEST_DATABASE_URL"
    }
    env["PYTHONPATH"] = str(ROOT)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(settings)
    return env


def free_port() -> int:
    """A TCP port nobody listens on right now, so servers of parallel tests do not collide."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def log_lines(output: str) -> list[dict[str, Any]]:
    """The JSON log lines in a server's output (a line of anything else is skipped)."""
    lines = []
    for line in output.splitlines():
        with contextlib.suppress(ValueError):
            parsed = json.loads(line)
            if isinstance(parsed, dict):
                lines.append(parsed)
    return lines


def password_files(output: str) -> list[Path]:
    """The files in which a server said it put a generated admin password."""
    return [Path(line["password_file"]) for line in log_lines(output) if "password_file" in line]


def sqlite_rows(database: Path, query: str) -> list[tuple]:
    """Rows of a query on a SQLite file, read behind the app's back to check what it stored."""
    connection = sqlite3.connect(database)
    try:
        return connection.execute(query).fetchall()
    finally:
        connection.close()


# --- servers -----------------------------------------------------------------------------------


@dataclass
class Server:
    """A `python -m app` subprocess, where it listens, and the file its output goes to."""

    process: subprocess.Popen[bytes]
    base_url: str
    log: Path
    timeout: float = CLIENT_TIMEOUT_SECONDS

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def client(self) -> httpx.Client:
        # A new client is a new connection, which the kernel hands to whichever worker accepts.
        return httpx.Client(base_url=self.base_url, timeout=self.timeout)


def spawn_server(
    folder: Path,
    *args: str,
    log: Path,
    client_timeout: float = CLIENT_TIMEOUT_SECONDS,
    **settings: str,
) -> Server:
    """Start `python -m app` in `folder` on a free port (without waiting for it), in a session
    of its own so that `stop` can kill its workers too; its output goes to `log`."""
    port = free_port()
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "app", "--port", str(port), *args],
            cwd=folder,
            env=cli_env(**settings),
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Server(process, f"http://127.0.0.1:{port}", log, client_timeout)


def wait_ready(server: Server) -> None:
    """Poll /health/ready until it answers 200; fail after the deadline or if the process
    exits first, showing what it printed."""
    deadline = time.monotonic() + READY_DEADLINE_SECONDS
    last = "no answer"
    with server.client() as client:
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                pytest.fail(
                    f"the server exited with {server.process.returncode} before it was ready:\n"
                    f"{server.output()}"
                )
            try:
                response = client.get("/health/ready", timeout=2.0)
            except httpx.TransportError as exc:
                last = repr(exc)
            else:
                if response.status_code == 200:
                    return
                last = f"{response.status_code} {response.text}"
            time.sleep(0.1)
    pytest.fail(
        f"/health/ready not 200 within {READY_DEADLINE_SECONDS:.0f}s (last: {last}):\n"
        f"{server.output()}"
    )


def wait_for_workers(server: Server, count: int) -> list[int]:
    """Wait (within the ready deadline) until `count` worker processes have started; their
    pids. /health/ready answering proves only one of them is up."""
    deadline = time.monotonic() + READY_DEADLINE_SECONDS
    while len(WORKER_STARTED.findall(server.output())) < count:
        assert time.monotonic() < deadline, f"{count} worker processes expected:\n{server.output()}"
        time.sleep(0.1)
    return [int(pid) for pid in WORKER_STARTED.findall(server.output())]


def start_worker(url: str, tmp_path: Path, **settings: str) -> subprocess.Popen[bytes]:
    """`python -m app worker` on the database at `url` with `settings`, logging to a file of
    its own in `tmp_path`; in a process group of its own (`stop` ends it)."""
    env = cli_env(DATABASE_URL=url, LOG_LEVEL="WARNING", **settings)
    log = (tmp_path / f"worker-{time.monotonic_ns()}.log").open("wb")
    return subprocess.Popen(
        [sys.executable, "-m", "app", "worker"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, wait, then SIGKILL the process group it leads (its workers, if any)."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=STOP_DEADLINE_SECONDS)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # stray workers; the group is ours alone
    process.wait(timeout=STOP_DEADLINE_SECONDS)


@contextlib.contextmanager
def server_launcher(
    *, wait_until_ready: bool, client_timeout: float = CLIENT_TIMEOUT_SECONDS
) -> Iterator[Callable[..., Server]]:
    """`start(folder, *args, **settings)` starts `python -m app` there (logging to
    `server-N.log`), and waits until it is ready if `wait_until_ready`; every server started is
    stopped on leaving the block, pass or fail, so no test leaves a process behind."""
    started: list[subprocess.Popen[bytes]] = []

    def start(folder: Path, *args: str, **settings: str) -> Server:
        log = folder / f"server-{len(started) + 1}.log"
        server = spawn_server(folder, *args, log=log, client_timeout=client_timeout, **settings)
        started.append(server.process)
        if wait_until_ready:
            wait_ready(server)
        return server

    try:
        yield start
    finally:
        for process in started:
            stop(process)


# --- throw-away PostgreSQL databases -----------------------------------------------------------
#
# Tests that need committed data, kill connections or start servers of their own cannot use the
# shared, rolled-back test database: they get a database of their own on the same server, which
# is dropped WITH (FORCE) at the end, pass or fail.


def run_async(make: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to completion from sync code, on a thread of its own so the test
    session's event loop is left alone."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, make()).result()  # type: ignore[arg-type]


def postgres_url(database: str) -> str:
    """The app's (SQLAlchemy, asyncpg) URL of a database on the test PostgreSQL server."""
    url = make_url(TEST_DATABASE_URL).set(database=database)
    return url.render_as_string(hide_password=False)


def postgres_dsn(database: str) -> str:
    """A plain libpq-style URL of a database on the test server, for asyncpg connections."""
    url = make_url(TEST_DATABASE_URL).set(drivername="postgresql", database=database)
    return url.render_as_string(hide_password=False)


async def on_postgres_server(statement: str) -> None:
    """Run one statement on the `postgres` database (asyncpg is autocommit outside a
    transaction, as CREATE/DROP DATABASE need)."""
    connection = await asyncpg.connect(postgres_dsn("postgres"))
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


async def postgres_fetch(database: str, query: str) -> list[asyncpg.Record]:
    """The rows of one query on a database of the test server, on a connection of its own."""
    connection = await asyncpg.connect(postgres_dsn(database))
    try:
        return await connection.fetch(query)
    finally:
        await connection.close()


async def migrate(database: str) -> None:
    """Bring a database on the test server to the latest revision with the app's migrations."""
    engine = create_async_engine(postgres_url(database), poolclass=NullPool)
    try:
        await upgrade_database(engine)
    finally:
        await engine.dispose()


async def create_database(prefix: str) -> str:
    """CREATE an empty database `<prefix>_<random>` on the test server; its name."""
    name = f"{prefix}_{secrets.token_hex(6)}"
    await on_postgres_server(f'CREATE DATABASE "{name}"')
    return name


async def drop_database(name: str) -> None:
    """DROP a throw-away database, even with connections still open to it."""
    await on_postgres_server(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.asynccontextmanager
async def throwaway_database(prefix: str) -> AsyncIterator[str]:
    """An empty database of its own (its name), dropped on leaving the block: for async code."""
    name = await create_database(prefix)
    try:
        yield name
    finally:
        await drop_database(name)


@contextlib.contextmanager
def throwaway_database_sync(prefix: str, *, migrated: bool = False) -> Iterator[str]:
    """The same for sync tests and fixtures, migrated first if `migrated`."""
    name = run_async(lambda: create_database(prefix))
    try:
        if migrated:
            run_async(lambda: migrate(name))
        yield name
    finally:
        run_async(lambda: drop_database(name))


# --- concurrent writers ---------------------------------------------------------------------

BARRIER_SECONDS = 30.0


def engine_settings(url: str, pool_size: int) -> Settings:
    return Settings(
        _env_file=None,
        app_env="testing",
        database_url=url,
        secret_key=SecretStr(TEST_SECRET),
        db_pool_size=pool_size,
        db_max_overflow=0,
        db_pool_timeout_seconds=30.0,
    )


def own_engine(url: str, pool_size: int) -> AsyncEngine:
    """An engine with a connection for every writer, so none of them waits for the pool."""
    return create_engine(url, settings=engine_settings(url, pool_size))


async def run_together(
    url: str, calls: list[Callable[[AsyncSession], Awaitable[Any]]], *, seconds: float
) -> list[Any]:
    """Run every call in a session of its own (over an engine with a connection for each),
    released together by a barrier once every session holds its connection; results (or the
    exception raised) in the order of `calls`, all within `seconds`."""
    engine = own_engine(url, pool_size=len(calls))
    sessions = create_session_factory(engine)
    barrier = asyncio.Barrier(len(calls))

    async def run(call: Callable[[AsyncSession], Awaitable[Any]]) -> Any:
        async with sessions() as session:
            await session.connection()
            async with asyncio.timeout(BARRIER_SECONDS):
                await barrier.wait()
            return await call(session)

    try:
        async with asyncio.timeout(seconds):
            return await asyncio.gather(*(run(call) for call in calls), return_exceptions=True)
    finally:
        await engine.dispose()


def established_sockets(pid: int, port: int, *, remote: bool) -> int:
    """How many established TCP connections process `pid` holds on `port` (Linux /proc): with
    `remote`, connections it made to a server on `port` (e.g. PostgreSQL); without, connections
    it accepted on its own `port` (one there means a server has the request, not just the
    kernel's listen queue)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    address_field = 2 if remote else 1
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as handle:
            next(handle)
            for line in handle:
                fields = line.split()
                if (
                    int(fields[address_field].rsplit(":", 1)[1], 16) == port
                    and fields[3] == "01"  # ESTABLISHED
                    and fields[9] in inodes
                ):
                    count += 1
    return count


def established_local_ports(ports: set[int]) -> set[int]:
    """Which of these local TCP ports have an established connection (Linux /proc). A client's
    socket leaves ESTABLISHED as soon as the server's close reaches it."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as handle:
            next(handle)
            for line in handle:
                fields = line.split()
                port = int(fields[1].rsplit(":", 1)[1], 16)
                if port in ports and fields[3] == "01":
                    found.add(port)
    return found


# --- a network between the app and PostgreSQL that can fail ------------------------------------


class DatabaseProxy:
    """A TCP proxy in front of the test PostgreSQL server, run on the test's event loop, that
    can fail the way networks do:

    - `black_hole()`: every connection stays open but nothing passes either way (what is sent
      is dropped); new connections are accepted and never forwarded, not even after `restore()`.
    - `restore()`: connections open before the black hole pass data again.
    - `drop_on_next_use()`: every connection open now is closed the moment the client next
      sends anything, before it reaches the server: a connection that died while idle without
      the client having heard of it yet.

    `url(database)` is the app's URL of a database on the server, through the proxy.
    """

    def __init__(self) -> None:
        target = make_url(TEST_DATABASE_URL)
        self.target = (target.host or "127.0.0.1", target.port or 5432)
        self.port = 0
        self.holed = False
        self.dropped = 0  # connections closed by `drop_on_next_use`
        self._server: asyncio.Server | None = None
        self._links: set[_ProxyLink] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> DatabaseProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def url(self, database: str) -> str:
        url = make_url(TEST_DATABASE_URL).set(host="127.0.0.1", port=self.port, database=database)
        return url.render_as_string(hide_password=False)

    def black_hole(self) -> None:
        self.holed = True

    def restore(self) -> None:
        self.holed = False

    def drop_on_next_use(self) -> None:
        for link in self._links:
            link.doomed = True

    @property
    def open_connections(self) -> int:
        return sum(1 for link in self._links if not link.closed)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for link in list(self._links):
            link.close()  # which ends its tasks
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=STOP_DEADLINE_SECONDS)
        for task in list(self._tasks):
            task.cancel()
        if self._server is not None:
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        link = _ProxyLink(writer)
        self._links.add(link)
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            if self.holed:  # accepted, never forwarded: read and drop until the client leaves
                while await reader.read(65536):
                    pass
                return
            up_reader, up_writer = await asyncio.open_connection(*self.target)
            link.upstream = up_writer
            await asyncio.gather(
                self._pump(link, reader, up_writer, from_client=True),
                self._pump(link, up_reader, writer, from_client=False),
            )
        except (OSError, asyncio.CancelledError):
            pass  # a task of the server's: how it ends is no one's business
        finally:
            link.close()
            self._links.discard(link)
            self._tasks.discard(task)

    async def _pump(
        self,
        link: _ProxyLink,
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
        *,
        from_client: bool,
    ) -> None:
        try:
            while data := await source.read(65536):
                if from_client and link.doomed:
                    self.dropped += 1
                    break
                if self.holed:
                    continue
                sink.write(data)
                await sink.drain()
        except OSError:
            pass
        finally:
            link.close()


class _ProxyLink:
    """One client connection through the proxy and its connection to the server."""

    def __init__(self, client: asyncio.StreamWriter) -> None:
        self.client = client
        self.upstream: asyncio.StreamWriter | None = None
        self.doomed = False
        self.closed = False

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for writer in (self.client, self.upstream):
            if writer is not None:
                writer.transport.abort()


@contextlib.asynccontextmanager
async def database_proxy() -> AsyncIterator[DatabaseProxy]:
    """A `DatabaseProxy`, listening until the block ends."""
    proxy = await DatabaseProxy().start()
    try:
        yield proxy
    finally:
        await proxy.close()


@contextlib.asynccontextmanager
async def committed_database(tmp_path: Path, prefix: str) -> AsyncIterator[str]:
    """A database of the test's own (its URL), where each transaction commits for real: a
    SQLite file, or a throw-away PostgreSQL database in the PostgreSQL suite. Not migrated."""
    if not ON_POSTGRES:
        yield f"sqlite+aiosqlite:///{tmp_path}/crm.db"
        return
    async with throwaway_database(prefix) as name:
        yield postgres_url(name)


# --- a webhook receiver ----------------------------------------------------------------------


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes


class Receiver:
    """A real HTTP server on 127.0.0.1 that records every request it is sent, for the webhook
    tests: `status` is what it answers (and `answer` the body); `hold` makes it wait before
    answering (a receiver that hangs), `delay` takes that many seconds over each answer.
    `stop()` and `start()` again take it down and bring it back on the same port. HTTP/1.1
    with `Connection: close`: one request per connection."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.received: list[Received] = []
        self.status = 204
        self.answer = b""
        self.extra_headers: dict[str, str] = {}
        self.hold: asyncio.Event | None = None
        self.delay = 0.0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            headers = {}
            for line in lines[1:]:
                if ":" in line:
                    name, value = line.split(":", 1)
                    headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            self.received.append(Received(headers, body))
            if self.hold is not None:
                await self.hold.wait()
            await asyncio.sleep(self.delay)
            extra = "".join(f"{k}: {v}\r\n" for k, v in self.extra_headers.items())
            writer.write(
                f"HTTP/1.1 {self.status} X\r\nContent-Length: {len(self.answer)}\r\n"
                f"{extra}Connection: close\r\n\r\n".encode()
                + self.answer
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def ids(self) -> list[str]:
        return [item.headers["webhook-id"] for item in self.received]

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(item.body) for item in self.received]


@contextlib.asynccontextmanager
async def receiver() -> AsyncIterator[Receiver]:
    running = Receiver()
    await running.start()
    try:
        yield running
    finally:
        if running.hold is not None:
            running.hold.set()
        await running.stop()


# --- the app served on the test's own event loop, and Server-Sent Events read from it ----------


@dataclass
class Serving:
    url: str  # the base URL
    server: Any  # uvicorn.Server

    async def stop(self) -> None:
        """A graceful shutdown, as on SIGTERM (idempotent)."""
        self.server.should_exit = True


@contextlib.asynccontextmanager
async def served(app: Any, *, grace_seconds: int = 5) -> AsyncIterator[Serving]:
    """`app` served by uvicorn on 127.0.0.1 in this event loop, lifespan included, with the
    protocol `python -m app` serves with. For responses that ASGITransport cannot stream (it
    gathers a whole body before answering)."""
    import uvicorn

    port = free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        loop="none",
        lifespan="on",
        log_level="warning",
        http="app.server:GuardedHttpToolsProtocol",
        timeout_graceful_shutdown=grace_seconds,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(READY_DEADLINE_SECONDS):
            while not server.started:
                if task.done():
                    task.result()  # raises why it did not start
                    raise AssertionError("the server stopped before it started")
                await asyncio.sleep(0.01)
        yield Serving(f"http://127.0.0.1:{port}", server)
    finally:
        server.should_exit = True
        async with asyncio.timeout(grace_seconds + STOP_DEADLINE_SECONDS):
            await task


@dataclass
class StreamMessage:
    """One Server-Sent Events message: its fields, and its comment lines."""

    id: str | None = None
    event: str | None = None
    data: str | None = None
    retry: int | None = None
    comments: tuple[str, ...] = ()

    def json(self) -> Any:
        assert self.data is not None, "a message without data"
        return json.loads(self.data)


def stream_messages(lines: list[str]) -> list[StreamMessage]:
    """The messages in the lines of an event stream (a blank line ends each)."""
    messages, current = [], StreamMessage()
    for line in lines:
        if not line:
            messages.append(current)
            current = StreamMessage()
        elif line.startswith(":"):
            current.comments += (line[1:].strip(),)
        else:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "data":
                current.data = value if current.data is None else f"{current.data}\n{value}"
            elif name == "retry":
                current.retry = int(value)
            elif name in ("id", "event"):
                setattr(current, name, value)
    return messages


class EventStreamReader:
    """Reads an open `text/event-stream` answer one message at a time, none waited for longer
    than CLIENT_TIMEOUT_SECONDS."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._lines = response.aiter_lines()

    async def next(self) -> StreamMessage:
        lines: list[str] = []
        async with asyncio.timeout(CLIENT_TIMEOUT_SECONDS):
            async for line in self._lines:
                lines.append(line)
                if not line:
                    return stream_messages(lines)[0]
        raise EOFError("the stream ended")

    async def next_event(self) -> StreamMessage:
        """The next message that is an event (not only comments)."""
        while True:
            message = await self.next()
            if message.id is not None:
                return message

    async def ended(self) -> bool:
        """Whether the stream ends (within the time limit) with no further event."""
        try:
            await self.next_event()
        except EOFError:
            return True
        return False
