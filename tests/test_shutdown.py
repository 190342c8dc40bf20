"""SIGTERM to a real `python -m app`: it stops accepting connections, lets the request in
flight finish (up to SHUTDOWN_GRACE_SECONDS), closes its database pool and exits 0; and what it
writes meanwhile is JSON lines, one access line per request.

The request in flight is slow for a real reason: a PATCH that waits for SQLite's write lock,
which the test holds with a connection of its own (BEGIN IMMEDIATE) and releases after the
signal. One server run is shared by the tests that look at different sides of it.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import signal
import socket
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import TEST_SECRET, sqlite_suite_only
from tests.log_scan import secrets_in
from tests.support import Server, established_sockets, log_lines, server_launcher, sqlite_rows

# A server of its own on a SQLite file: the same test whichever suite runs; the SQLite one does.
pytestmark = sqlite_suite_only

ADMIN_EMAIL = "admin@shutdown.example.com"
ADMIN_PASSWORD = "shutdown-admin-passphrase"
LEADS = "/api/v1/leads"
SIGNAL_DEADLINE_SECONDS = 5.0  # for the server to react to SIGTERM
EXIT_DEADLINE_SECONDS = 15.0


def settings_for(database: Path, **more: str) -> dict[str, str]:
    return {
        "APP_ENV": "development",
        "DATABASE_URL": f"sqlite+aiosqlite:///{database}",
        "SECRET_KEY": TEST_SECRET,
        "ADMIN_EMAIL": ADMIN_EMAIL,
        "ADMIN_PASSWORD": ADMIN_PASSWORD,
        "LOG_LEVEL": "INFO",
        "SQLITE_BUSY_TIMEOUT_MS": "10000",
        **more,
    }


def log_in(client: httpx.Client) -> dict[str, str]:
    response = client.post(
        "/api/v1/auth/token",
        data={"username": ADMIN_EMAIL, "password": ADMIN_PASSWORD},
        headers={"X-Request-ID": "login-1"},
    )
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def refuses_connections(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return False
    except ConnectionRefusedError:
        return True


def wait_until(condition: Any, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


@contextlib.contextmanager
def write_lock(database: Path) -> Iterator[sqlite3.Connection]:
    """SQLite's write lock, held by the test until the block ends (or `ROLLBACK` is run)."""
    holder = sqlite3.connect(database, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        yield holder
    finally:
        if holder.in_transaction:
            holder.execute("ROLLBACK")
        holder.close()


@contextlib.contextmanager
def patch_in_flight(
    server: Server, lead_id: int, headers: dict[str, str]
) -> Iterator[concurrent.futures.Future[httpx.Response]]:
    """A PATCH sent on a connection of its own from another thread, returned once the server
    has accepted that connection (the test must already hold the write lock)."""
    port = int(server.base_url.rsplit(":", 1)[1])
    already = established_sockets(server.process.pid, port, remote=False)

    def send() -> httpx.Response:
        with httpx.Client(base_url=server.base_url, timeout=30.0) as client:
            return client.patch(
                f"{LEADS}/{lead_id}",
                json={"company": "Graceful Ltd"},
                headers={**headers, "X-Request-ID": "patch-in-flight"},
            )

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(send)
        assert wait_until(
            lambda: established_sockets(server.process.pid, port, remote=False) > already, 5.0
        ), "the server never accepted the PATCH's connection"
        time.sleep(0.3)  # for it to read the request and reach the lock
        assert not future.done(), f"the PATCH did not wait for the lock: {future.result()}"
        yield future


def start(tmp_path: Path, launch: Any, **more: str) -> tuple[Server, Path, dict[str, str], int]:
    database = tmp_path / "shutdown.db"
    server = launch(tmp_path, **settings_for(database, **more))
    with server.client() as client:
        headers = log_in(client)
        created = client.post(
            LEADS,
            json={"first_name": "Grace", "last_name": "Ful", "email": "grace@ful.example.com"},
            headers={**headers, "X-Request-ID": "create-1"},
        )
        assert created.status_code == 201, created.text
    return server, database, headers, created.json()["id"]


@dataclass
class Stop:
    """What a SIGTERM during a slow PATCH led to."""

    patch: httpx.Response
    refused_while_in_flight: bool
    in_flight_when_refused: bool
    exit_code: int | None
    stored_company: str | None
    output: str
    lead_id: int
    admin_id: int


@pytest.fixture(scope="module")
def graceful_stop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stop]:
    tmp_path = tmp_path_factory.mktemp("shutdown")
    with server_launcher(wait_until_ready=True) as launch:
        server, database, headers, lead_id = start(tmp_path, launch)
        port = int(server.base_url.rsplit(":", 1)[1])
        with write_lock(database) as holder, patch_in_flight(server, lead_id, headers) as patch:
            server.process.send_signal(signal.SIGTERM)
            refused = wait_until(lambda: refuses_connections(port), SIGNAL_DEADLINE_SECONDS)
            in_flight = not patch.done()
            holder.execute("ROLLBACK")
            response = patch.result(timeout=EXIT_DEADLINE_SECONDS)
        with contextlib.suppress(Exception):
            server.process.wait(timeout=EXIT_DEADLINE_SECONDS)
        exit_code = server.process.poll()
        (stored,) = sqlite_rows(database, f"SELECT company FROM leads WHERE id = {int(lead_id)}")
        ((admin_id,),) = sqlite_rows(database, "SELECT id FROM users WHERE is_superuser")
        yield Stop(
            response, refused, in_flight, exit_code, stored[0], server.output(), lead_id, admin_id
        )


def test_sigterm_lets_the_request_in_flight_finish_and_store_its_change(
    graceful_stop: Stop,
) -> None:
    assert graceful_stop.patch.status_code == 200, graceful_stop.patch.text
    assert graceful_stop.patch.json()["company"] == "Graceful Ltd"
    assert graceful_stop.stored_company == "Graceful Ltd"


def test_after_sigterm_new_connections_are_refused(graceful_stop: Stop) -> None:
    assert graceful_stop.refused_while_in_flight, graceful_stop.output
    assert graceful_stop.in_flight_when_refused  # refused while the PATCH was still running


def test_a_graceful_stop_exits_0(graceful_stop: Stop) -> None:
    assert graceful_stop.exit_code == 0, graceful_stop.output


def test_the_database_pool_is_closed_after_the_last_request(graceful_stop: Stop) -> None:
    lines = log_lines(graceful_stop.output)
    messages = [line["message"] for line in lines]
    closed = messages.index("shutdown complete: database pool closed")
    (patched,) = [i for i, line in enumerate(lines) if line.get("request_id") == "patch-in-flight"]
    assert patched < closed


def test_everything_the_server_writes_is_a_json_log_line(graceful_stop: Stop) -> None:
    written = [line for line in graceful_stop.output.splitlines() if line.strip()]
    assert written
    assert len(log_lines(graceful_stop.output)) == len(written), graceful_stop.output


def test_each_request_leaves_one_access_line_in_place_of_uvicorns(graceful_stop: Stop) -> None:
    lines = log_lines(graceful_stop.output)
    access = [line for line in lines if line["logger"] == "app.access"]
    ids = [line["request_id"] for line in access]
    assert [ids.count(sent) for sent in ("login-1", "create-1", "patch-in-flight")] == [1, 1, 1]
    assert not [line for line in lines if line["logger"] == "uvicorn.access"]
    (patch,) = [line for line in access if line["request_id"] == "patch-in-flight"]
    path = f"{LEADS}/{graceful_stop.lead_id}"
    assert (patch["method"], patch["path"], patch["status"]) == ("PATCH", path, 200)
    assert patch["user_id"] == graceful_stop.admin_id
    assert patch["duration_ms"] >= 300  # it waited for the lock


def test_the_server_logs_no_password_and_no_token(graceful_stop: Stop) -> None:
    assert ADMIN_PASSWORD not in graceful_stop.output
    assert secrets_in(graceful_stop.output) == []


def test_a_request_outlasting_the_grace_period_is_cut_off(tmp_path: Path) -> None:
    """SHUTDOWN_GRACE_SECONDS bounds the wait: a stuck request does not keep the server up."""
    with server_launcher(wait_until_ready=True) as launch:
        server, database, headers, lead_id = start(tmp_path, launch, SHUTDOWN_GRACE_SECONDS="1")
        with write_lock(database), patch_in_flight(server, lead_id, headers) as patch:
            signalled = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(httpx.TransportError):
                patch.result(timeout=EXIT_DEADLINE_SECONDS)
            try:  # all while the lock is still held: the stuck request is not waited for
                server.process.wait(timeout=EXIT_DEADLINE_SECONDS)
            except subprocess.TimeoutExpired:
                pytest.fail(f"the server is still up, {EXIT_DEADLINE_SECONDS}s after SIGTERM")
            stopped_after = time.monotonic() - signalled

    assert stopped_after < 5.0, server.output()
    assert server.process.returncode == 0, server.output()
    assert "timeout graceful shutdown exceeded" in server.output()
    (stored,) = sqlite_rows(database, f"SELECT company FROM leads WHERE id = {int(lead_id)}")
    assert stored == (None,)
