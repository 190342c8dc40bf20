"""Refuse oversized request bodies before anything parses them.

FastAPI's own `max_body_size` answers 413 in plain text whenever Content-Length is too large,
replacing whatever the app would have sent; this middleware answers in the API's error shape.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.errors import error_response


def too_large_message(max_bytes: int) -> str:
    return f"The request body is larger than the limit of {max_bytes} bytes."


class BodySizeLimit:
    """413 for a body over `max_bytes`: at once when Content-Length says so, otherwise as soon
    as the streamed body passes the limit (chunked uploads cannot sneak past)."""

    def __init__(self, app: ASGIApp, max_bytes: int, larger: dict[str, int] | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.larger = larger or {}  # paths (their ends) with a limit of their own: uploads

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        own = next((n for end, n in self.larger.items() if scope["path"].endswith(end)), None)
        if own is not None:
            await BodySizeLimit(self.app, own)(scope, receive, send)
            return
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        if declared is None and b"transfer-encoding" not in headers:
            await self.app(scope, receive, send)  # no body (most reads): nothing to count
            return
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            response = error_response(413, too_large_message(self.max_bytes), "request_too_large")
            await response(scope, receive, send)
            return

        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # FastAPI lets an HTTPException out of body parsing unchanged, so the app's
                    # error handler answers it in the usual shape.
                    raise HTTPException(413, too_large_message(self.max_bytes))
            return message

        await self.app(scope, limited_receive, send)
