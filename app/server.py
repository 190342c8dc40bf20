"""The HTTP protocol `python -m app` serves with: uvicorn's httptools protocol plus the limits
uvicorn leaves out, so that a server with no proxy in front cannot be held open by its clients.

uvicorn (0.54, httptools) arms a timer only after a response: the keep-alive wait. A client that
never finishes its headers, promises a body it never sends, or connects and sends nothing keeps
its connection for as long as it likes, and `limit_concurrency` only answers 503 to requests, so
silent connections pile up without end. This subclass adds, per connection:

- a deadline for the request headers: REQUEST_HEADER_TIMEOUT_SECONDS from their first byte.
  Bytes trickling in do not extend it (that is how slowloris holds a server);
- an idle limit for the body: REQUEST_BODY_TIMEOUT_SECONDS without a byte. A slow but steady
  upload is fine, a stalled one is not;
- either one answers `408 request_timeout` in the API's error shape when no response has
  started on the connection, and closes it;
- the keep-alive wait (uvicorn's own `timeout_keep_alive`, KEEP_ALIVE_SECONDS) from the moment a
  connection opens too, not only after a response;
- at most MAX_CONNECTIONS_PER_WORKER open connections (uvicorn's own per-worker set of them):
  one more gets `503 service_unavailable` and is closed at once, instead of waiting.

And on a graceful shutdown, a response that would never end by itself (the live event stream)
is told to end at once, rather than holding the shutdown for its whole grace period.

The clock stops while the server is the reason the client waits: when it paused reading because
the app has not taken the body yet, or when a client that sent `Expect: 100-continue` waits for
the app to ask for the body. What a client does once its request is in (a slow app, a slow
reader of the response) is not timed here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from app.config import get_settings
from app.schemas.common import ErrorResponse

logger = logging.getLogger("app.server")

HEADERS, BODY = "headers", "body"  # what a request under way is waiting for
# An asyncio.Event in a request's ASGI scope, put there by a response that would not end by
# itself (the live event stream): a graceful shutdown sets it, and the response ends.
ENDLESS = "crm.endless_response"


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """One connection: uvicorn's httptools protocol, timed while a request arrives."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings = get_settings()
        self.header_timeout = settings.request_header_timeout_seconds
        self.body_timeout = settings.request_body_timeout_seconds
        self.max_connections = settings.max_connections_per_worker
        self.refused = False
        self.awaiting: str | None = None  # HEADERS or BODY while a request arrives, else None
        self.since = 0.0  # when the current wait began (loop time)
        self.read_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self.max_connections:
            self.refused = True
            self.transport = transport
            detail = f"The server holds its limit of {self.max_connections} connections; retry."
            transport.write(self._error(503, detail, "service_unavailable", retry_after=True))
            transport.close()
            closed.add("refused at the connection limit")
            return
        super().connection_made(transport)
        # uvicorn waits this long for a next request only after a response; a connection that
        # never sends its first is held to the same wait (data_received cancels it).
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.refused:
            return
        if self.awaiting is None:  # the first bytes of a request: its headers' clock starts
            self.awaiting = HEADERS
            self.since = self.loop.time()
        elif self.awaiting is BODY:
            self.since = self.loop.time()
        super().data_received(data)
        # Armed only if the request is still incomplete: a whole request in one read costs
        # no timer at all.
        if (
            self.awaiting is not None
            and self.read_timer is None
            and not self.transport.is_closing()
        ):
            self._arm(self.header_timeout if self.awaiting is HEADERS else self.body_timeout)

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self.awaiting = BODY
        self.since = self.loop.time()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self.awaiting = None
        self._stop_timer()

    def shutdown(self) -> None:
        """uvicorn's graceful shutdown waits for the response in progress. One that would never
        end (an event stream) is told to end now, cleanly, and its client reconnects to another
        server where it left off."""
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            ending = cycle.scope.get(ENDLESS)
            if ending is not None:
                ending.set()
        super().shutdown()

    def handle_websocket_upgrade(self) -> None:
        self.awaiting = None  # the connection now belongs to the WebSocket protocol
        self._stop_timer()
        super().handle_websocket_upgrade()

    def _arm(self, delay: float) -> None:
        self.read_timer = self.loop.call_later(delay, self._check)

    def _stop_timer(self) -> None:
        if self.read_timer is not None:
            self.read_timer.cancel()
            self.read_timer = None

    def _check(self) -> None:
        """The wait may be over: time the client out, or look again when it would be."""
        self.read_timer = None
        if self.awaiting is None or self.transport.is_closing():
            return
        now = self.loop.time()
        if self.flow.read_paused or (self.awaiting is BODY and self.cycle.waiting_for_100_continue):
            self.since = now  # the server keeps the client waiting: its clock starts again
        limit = self.header_timeout if self.awaiting is HEADERS else self.body_timeout
        if (remaining := self.since + limit - now) > 0:
            self._arm(remaining)
        else:
            self._time_out()

    def _time_out(self) -> None:
        """408 if nothing has been answered on the connection yet (else a response is being
        written, which a second one would garble), then close it."""
        awaiting, self.awaiting = self.awaiting, None
        if awaiting is HEADERS:
            writable = self.cycle is None or self.cycle.response_complete
            detail = f"The request headers did not arrive within {self.header_timeout:g} s."
        else:
            writable = not self.pipeline and not self.cycle.response_started
            detail = f"The request body sent nothing for {self.body_timeout:g} s."
        if writable:
            if awaiting is BODY:
                # As if the client had gone (what connection_lost will say): the app's next
                # receive() gets http.disconnect, and anything it sends is dropped.
                self.cycle.disconnected = True
                self.cycle.message_event.set()
            self.transport.write(self._error(408, detail, "request_timeout"))
        self.transport.close()
        closed.add(f"{awaiting} timeout")

    def _error(self, status: int, detail: str, code: str, *, retry_after: bool = False) -> bytes:
        """A whole `Connection: close` response in the API's error shape, written by the server
        itself (no request reached the app)."""
        body = ErrorResponse(detail=detail, code=code).model_dump_json().encode()
        headers = [
            *self.server_state.default_headers,
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
            *([(b"retry-after", b"1")] if retry_after else []),
        ]
        lines = [STATUS_LINE[status], *(name + b": " + value + b"\r\n" for name, value in headers)]
        return b"".join([*lines, b"\r\n", body])


class ClosedTally:
    """Connections closed for holding the server, logged once per FAULT_LOG_INTERVAL_SECONDS
    with a count of each reason: a flood of hostile clients writes a line per interval, not
    one per connection."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.logged_at: float | None = None

    def add(self, reason: str) -> None:
        self.counts[reason] += 1
        now = time.monotonic()
        interval = get_settings().fault_log_interval_seconds
        if self.logged_at is not None and now - self.logged_at < interval:
            return
        summary = ", ".join(f"{count} {reason}" for reason, count in sorted(self.counts.items()))
        logger.warning(
            "closed connections that held the server: %s",
            summary,
            extra={"closed": dict(self.counts)},
        )
        self.counts.clear()
        self.logged_at = now


closed = ClosedTally()
