"""Clients that try to hold the server open, against `python -m app` served for real
(app/server.py): each is cut off within its timeout plus a margin while a normal request on
another connection is answered meanwhile, and the connection cap refuses at once, then recovers.

The hostile clients are raw sockets (asyncio streams): an HTTP client would not misbehave on
purpose. The timeouts are set to 2 s so the module stays short. The servers use a SQLite file
in a folder of their own (the subprocess default), on either test database.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from urllib.parse import urlsplit

import httpx
import pytest

from tests.helpers import sqlite_suite_only
from tests.support import Server, established_sockets, log_lines, server_launcher

# A server of its own on a SQLite file: the same test whichever suite runs; the SQLite one does.
pytestmark = sqlite_suite_only

TIMEOUT = 2.0  # the header, body and keep-alive timeouts of the `guarded` server
MARGIN = 2.0  # how much later than its timeout a client may be cut off
CAP = 20  # MAX_CONNECTIONS_PER_WORKER of the `capped` server
DEADLINE = 10.0  # for anything that has to happen "eventually"
CLOSED_LINE = "closed connections that held the server"

LEAD = b'{"first_name": "Ada", "last_name": "Lovelace", "email": "ada@example.com"}'


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with server_launcher(wait_until_ready=True) as start:
        yield start(
            tmp_path_factory.mktemp("guarded"),
            REQUEST_HEADER_TIMEOUT_SECONDS=str(TIMEOUT),
            REQUEST_BODY_TIMEOUT_SECONDS=str(TIMEOUT),
            KEEP_ALIVE_SECONDS=str(TIMEOUT),
        )


@pytest.fixture(scope="module")
def capped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Few connections, and long timeouts so that the connections filling it stay open; one
    log line per hour at most, so the test of that is not at the mercy of the clock."""
    with server_launcher(wait_until_ready=True) as start:
        yield start(
            tmp_path_factory.mktemp("capped"),
            MAX_CONNECTIONS_PER_WORKER=str(CAP),
            KEEP_ALIVE_SECONDS="60",
            REQUEST_HEADER_TIMEOUT_SECONDS="60",
            FAULT_LOG_INTERVAL_SECONDS="3600",
        )


# --- raw clients -------------------------------------------------------------------------------


def port(server: Server) -> int:
    return int(urlsplit(server.base_url).port or 0)


async def connect(
    server: Server, *data: bytes
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port(server))
    for piece in data:
        writer.write(piece)
    await writer.drain()
    return reader, writer


async def cut_off(reader: asyncio.StreamReader, within: float) -> bytes:
    """Everything the server sends until it closes the connection, which must be within
    `within` seconds (a reset by the server counts as closed)."""
    received = b""
    try:
        async with asyncio.timeout(within):
            while chunk := await reader.read(65536):
                received += chunk
    except TimeoutError:
        pytest.fail(f"the connection was still open after {within:g} s; received {received!r}")
    except ConnectionResetError:
        pass
    return received


def response_of(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """Status, headers (lower-cased names) and body of one raw HTTP/1.1 response."""
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in header_lines)
    return int(status_line.split(" ")[1]), {k.lower(): v for k, v in headers.items()}, body


def assert_timeout_answer(raw: bytes, waiting_for: str) -> None:
    status, headers, body = response_of(raw)
    assert status == 408, raw
    assert headers["connection"] == "close"
    assert headers["content-type"] == "application/json"
    answer = json.loads(body)
    assert answer["code"] == "request_timeout"
    assert waiting_for in answer["detail"]


async def assert_cut_off_while_others_are_served(
    server: Server, reader: asyncio.StreamReader, within: float
) -> bytes:
    """What the held connection got before the server closed it (within `within` s), having
    checked that a normal request on another connection was answered while it was held."""
    closing = asyncio.create_task(cut_off(reader, within))
    try:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=within) as client:
            response = await client.get("/health")
        assert response.status_code == 200
        assert not closing.done(), "cut off before a normal request could be answered meanwhile"
        return await closing
    finally:
        closing.cancel()


def request_head(method: str, *headers: str) -> bytes:
    lines = [f"{method} /api/v1/leads HTTP/1.1", "Host: crm.test", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


# --- the timeouts ------------------------------------------------------------------------------


async def test_a_connection_that_sends_nothing_is_closed_after_the_keep_alive_timeout(
    guarded: Server,
) -> None:
    reader, writer = await connect(guarded)
    received = await assert_cut_off_while_others_are_served(guarded, reader, TIMEOUT + MARGIN)
    assert received == b""
    writer.close()


async def test_a_connection_idle_after_a_response_is_closed_after_the_keep_alive_timeout(
    guarded: Server,
) -> None:
    reader, writer = await connect(guarded, b"GET /health HTTP/1.1\r\nHost: crm.test\r\n\r\n")
    first = await reader.readuntil(b'{"status":"ok"}')
    assert response_of(first)[0] == 200
    received = await assert_cut_off_while_others_are_served(guarded, reader, TIMEOUT + MARGIN)
    assert received == b""
    writer.close()


async def test_headers_that_never_finish_get_408_and_the_connection_closed(
    guarded: Server,
) -> None:
    reader, writer = await connect(guarded, b"GET /health HTTP/1.1\r\nHost: crm.test\r\nX-Wait: ")
    received = await assert_cut_off_while_others_are_served(guarded, reader, TIMEOUT + MARGIN)
    assert_timeout_answer(received, "headers")
    writer.close()


async def test_headers_trickling_in_are_cut_off_at_the_header_timeout_all_the_same(
    guarded: Server,
) -> None:
    """The header timeout is a deadline from the first byte, not an idle limit (slowloris)."""
    reader, writer = await connect(guarded, b"GET /health HTTP/1.1\r\nHost: crm.test\r\n")

    async def trickle() -> None:
        for number in range(1000):
            await asyncio.sleep(TIMEOUT / 4)
            writer.write(f"X-Trickle-{number}: 1\r\n".encode())

    trickling = asyncio.create_task(trickle())
    try:
        received = await assert_cut_off_while_others_are_served(guarded, reader, TIMEOUT + MARGIN)
    finally:
        trickling.cancel()
    assert_timeout_answer(received, "headers")
    writer.close()


async def test_a_body_shorter_than_its_content_length_gets_408_and_the_connection_closed(
    guarded: Server,
) -> None:
    head = request_head("POST", "Content-Type: application/json", "Content-Length: 1000000")
    reader, writer = await connect(guarded, head, b"0123456789")
    received = await assert_cut_off_while_others_are_served(guarded, reader, TIMEOUT + MARGIN)
    assert_timeout_answer(received, "body")
    writer.close()


async def test_an_endless_chunked_body_that_pauses_gets_408_and_the_connection_closed(
    guarded: Server,
) -> None:
    head = request_head("POST", "Content-Type: application/json", "Transfer-Encoding: chunked")
    reader, writer = await connect(guarded, head, chunk(b'{"first_name": '))
    received = await assert_cut_off_while_others_are_served(guarded, reader, TIMEOUT + MARGIN)
    assert_timeout_answer(received, "body")
    writer.close()


async def test_a_slow_but_steady_body_is_not_cut_off(guarded: Server) -> None:
    """The body timeout is an idle limit: a body taking longer than it in all, but never
    pausing that long, is read whole and answered by the app (401: no token was sent)."""
    head = request_head("POST", "Content-Type: application/json", "Transfer-Encoding: chunked")
    reader, writer = await connect(guarded, head)
    pieces = [LEAD[index : index + 10] for index in range(0, len(LEAD), 10)]
    for piece in pieces:
        writer.write(chunk(piece))
        await writer.drain()
        await asyncio.sleep(TIMEOUT / 3)
    assert len(pieces) * TIMEOUT / 3 > 2 * TIMEOUT  # longer in all than the timeout, twice
    writer.write(b"0\r\n\r\n")
    await writer.drain()
    async with asyncio.timeout(DEADLINE):
        raw = await reader.readuntil(b"}")
    status, _, body = response_of(raw)
    assert status == 401, raw
    assert json.loads(body)["code"] == "not_authenticated"
    writer.close()


async def test_a_timed_out_body_is_no_error_for_the_app(guarded: Server) -> None:
    """The app waiting for the body sees a client that left: it logs its request, no error."""
    request_id = f"slow-body-{secrets.token_hex(6)}"
    head = request_head("POST", "Content-Length: 100", f"X-Request-ID: {request_id}")
    reader, writer = await connect(guarded, head, b"{")
    assert_timeout_answer(await cut_off(reader, TIMEOUT + MARGIN), "body")
    writer.close()
    deadline = time.monotonic() + DEADLINE
    while not any(line.get("request_id") == request_id for line in log_lines(guarded.output())):
        assert time.monotonic() < deadline, f"no access line for {request_id}:\n{guarded.output()}"
        await asyncio.sleep(0.1)
    errors = [
        line for line in log_lines(guarded.output()) if line["level"] in {"ERROR", "CRITICAL"}
    ]
    assert errors == []


# --- the connection cap ------------------------------------------------------------------------


@pytest.fixture
async def at_capacity(capped: Server) -> AsyncIterator[list[asyncio.StreamWriter]]:
    """The capped server holding CAP silent connections (the writers that close them)."""
    writers = [(await connect(capped))[1] for _ in range(CAP)]
    try:
        deadline = time.monotonic() + DEADLINE
        while established_sockets(capped.process.pid, port(capped), remote=False) < CAP:
            assert time.monotonic() < deadline, f"the server never accepted {CAP} connections"
            await asyncio.sleep(0.05)
        yield writers
    finally:
        for writer in writers:
            writer.close()


async def test_connections_beyond_the_cap_get_503_and_are_closed_at_once(
    capped: Server, at_capacity: list[asyncio.StreamWriter]
) -> None:
    for _ in range(5):
        reader, writer = await connect(capped)
        status, headers, body = response_of(await cut_off(reader, MARGIN))
        assert status == 503
        assert headers["retry-after"] == "1"
        assert json.loads(body)["code"] == "service_unavailable"
        writer.close()


async def test_the_server_serves_again_once_connections_are_closed(
    capped: Server, at_capacity: list[asyncio.StreamWriter]
) -> None:
    reader, writer = await connect(capped)
    assert response_of(await cut_off(reader, MARGIN))[0] == 503
    writer.close()
    for held in at_capacity:
        held.close()
    deadline = time.monotonic() + DEADLINE
    async with httpx.AsyncClient(base_url=capped.base_url, timeout=MARGIN) as client:
        while True:
            try:
                if (await client.get("/health")).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "still refused after the connections closed"
            await asyncio.sleep(0.05)


async def test_refused_connections_are_logged_once_per_interval_not_once_each(
    capped: Server, at_capacity: list[asyncio.StreamWriter]
) -> None:
    for _ in range(5):
        reader, writer = await connect(capped)
        await cut_off(reader, MARGIN)
        writer.close()
    deadline = time.monotonic() + DEADLINE
    while not (lines := closed_lines(capped)):
        assert time.monotonic() < deadline, f"no {CLOSED_LINE!r} line:\n{capped.output()}"
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)  # room for a wrong second line to be written
    assert len(closed_lines(capped)) == 1
    assert lines[0]["level"] == "WARNING"
    assert lines[0]["closed"] == {"refused at the connection limit": 1}


def closed_lines(server: Server) -> list[dict]:
    return [line for line in log_lines(server.output()) if line["message"].startswith(CLOSED_LINE)]
