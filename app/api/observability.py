"""What every HTTP response carries, and the one log line each request leaves.

`RequestObserver` is the outermost of the app's middlewares, so it also sees the answers of the
others (a 413 from BodySizeLimit, a CORS preflight) and of Starlette's routing (404, 405):

- security headers: `X-Content-Type-Options: nosniff`, `X-Frame-Options: DENY`,
  `Referrer-Policy: no-referrer`, `Cache-Control: no-store` (the API's answers hold a user's
  data and follow from their token; only the docs assets may be cached), and a
  Content-Security-Policy: nothing may load from the API's JSON, and the docs pages may load
  only this origin's scripts plus exactly their own inline scripts (by hash, see `page_csp`).
- a request id: the client's `X-Request-ID` when it is sane (so a gateway's id carries through),
  else a new one; sent back in the header, kept in `scope["state"]["request_id"]` for the
  handlers (a 500's body quotes it) and written in the access line.
- one access line per request (`app.access`, INFO, through app/logging_config.py):
  request_id, method, path (never the query string: it carries search terms), status,
  duration_ms, user_id (set by app/api/deps.py's get_current_user, else null), client (the
  address in `scope["client"]`, which uvicorn's proxy-headers rule has already set to the real
  client's when the peer is a trusted proxy, FORWARDED_ALLOW_IPS) and pid (the worker process
  that served it).
- a 500 for any exception nothing else handled, answered here rather than by Starlette's
  ServerErrorMiddleware: that one sits outside every middleware, so its answer would miss the
  headers above, and it re-raises the exception for the server to log a second time.

All of it is a few list and dict operations per request on header tuples made in advance (about
3 us a request, measured); the access line is skipped entirely below INFO (the benchmark runs at
WARNING), where writing it would add some 15 us.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import re
import time
from collections.abc import Mapping

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.errors import unexpected_error
from app.services.lead_events import current_request_id

access_logger = logging.getLogger("app.access")

REQUEST_ID_HEADER = b"x-request-id"
# Up to 128 of these characters, else the id is replaced: anything else could forge log fields
# or bloat every line written about the request.
SANE_REQUEST_ID = re.compile(rb"[A-Za-z0-9._-]{1,128}")

API_CSP = "default-src 'none'; frame-ancestors 'none'"


def security_headers(csp: str, *, cacheable: bool = False) -> list[tuple[bytes, bytes]]:
    headers = [
        (b"x-content-type-options", b"nosniff"),
        (b"x-frame-options", b"DENY"),
        (b"referrer-policy", b"no-referrer"),
        (b"content-security-policy", csp.encode()),
    ]
    if not cacheable:
        headers.append((b"cache-control", b"no-store"))
    return headers


API_HEADERS = security_headers(API_CSP)
ASSET_HEADERS = security_headers(API_CSP, cacheable=True)

# An inline <script> (no src attribute): what a browser hashes is exactly its text.
_INLINE_SCRIPT = re.compile(rb"<script(?![^>]*\bsrc=)[^>]*>(.*?)</script>", re.DOTALL | re.I)


def page_csp(html: bytes) -> str:
    """The policy for one docs page: scripts from this origin and the page's own inline scripts
    (each by its sha256, nothing else inline may run); styles may be inline, as ReDoc injects
    its CSS at run time; images and fonts may be data: URIs (Swagger UI's icons); ReDoc's
    search runs in a worker made from a blob: URL; the spec and "Try it out" fetch this
    origin only."""
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(script).digest()).decode() + "'"
        for script in _INLINE_SCRIPT.findall(html)
    )
    script_src = f"script-src 'self' {hashes}".rstrip()
    return "; ".join(
        (
            "default-src 'self'",
            script_src,
            "style-src 'self' 'unsafe-inline'",
            "img-src 'self' data:",
            "font-src 'self' data:",
            "worker-src 'self' blob:",
            "connect-src 'self'",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        )
    )


class RequestObserver:
    """Security headers, request id, access line and the 500 (see the module's docstring).

    `page_policies` maps each docs page's path to its Content-Security-Policy (`page_csp`);
    paths under `assets_prefix` are static files that may be cached.
    """

    def __init__(self, app: ASGIApp, page_policies: Mapping[str, str], assets_prefix: str) -> None:
        self.app = app
        self.page_headers = {path: security_headers(csp) for path, csp in page_policies.items()}
        self.assets_prefix = assets_prefix.rstrip("/") + "/"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        logging_access = access_logger.isEnabledFor(logging.INFO)
        started = time.perf_counter() if logging_access else 0.0
        raw_id = None
        for name, value in scope["headers"]:
            if name == REQUEST_ID_HEADER:
                if SANE_REQUEST_ID.fullmatch(value):
                    raw_id = value
                break
        # 128 random bits in hex, like uuid4().hex, at a fifth of its cost.
        request_id = raw_id.decode() if raw_id is not None else os.urandom(16).hex()
        state = scope.get("state")
        if state is None:
            state = scope["state"] = {}
        state["request_id"] = request_id
        # What the events a request's changes write carry (app/services/lead_events.py); the
        # context is this request's task's own, so concurrent requests never see each other's.
        request_id_token = current_request_id.set(request_id)

        path = scope["path"]
        extra = self.page_headers.get(path)
        if extra is None:
            extra = ASSET_HEADERS if path.startswith(self.assets_prefix) else API_HEADERS
        extra = [*extra, (REQUEST_ID_HEADER, raw_id or request_id.encode())]
        status: int | None = None

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), *extra]
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception as exc:
            # Logged once, with its traceback and the request id, by the app's handler. Past
            # the start of an answer nothing more can be sent: the server cuts the connection.
            response = await unexpected_error(Request(scope), exc)
            if status is None:
                await response(scope, receive, send_with_headers)
        finally:
            current_request_id.reset(request_id_token)
            if logging_access:
                duration_ms = round((time.perf_counter() - started) * 1000, 2)
                client = scope.get("client")
                access_logger.info(
                    "%s %s %s",
                    scope["method"],
                    path,
                    status,
                    extra={
                        "request_id": request_id,
                        "method": scope["method"],
                        "path": path,
                        "status": status,
                        "duration_ms": duration_ms,
                        "user_id": state.get("user_id"),
                        "client": client[0] if client else None,
                        "pid": os.getpid(),
                    },
                )
