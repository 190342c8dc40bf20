"""CORS: the API's own origins (CORS_ORIGINS) for every path but the capture forms', whose
origins are each form's `allowed_origins` (issue 17).

A capture endpoint answers CORS itself: its preflight (`OPTIONS`, app/api/routes/capture.py)
looks the form up, and the POST's answer, errors included, carries
`Access-Control-Allow-Origin` when the request's Origin is one of the form's. The route puts the
allowed origin in the request's state once it knows the form; `CaptureCors` copies it into the
answer's headers, whatever answer that turns out to be (202, 422, 429). Another origin gets no
CORS header at all, so the browser keeps the answer from the page.
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CAPTURE_PATH = "/api/v1/capture/"
ALLOWED_ORIGIN = "capture_allowed_origin"  # the request state's key


def is_capture(scope: Scope) -> bool:
    return scope["type"] == "http" and str(scope["path"]).startswith(CAPTURE_PATH)


class ApiCors(CORSMiddleware):
    """Starlette's CORS for the API, leaving the capture endpoints to their forms."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if is_capture(scope):
            await self.app(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


class CaptureCors:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not is_capture(scope):
            await self.app(scope, receive, send)
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.add_vary_header("Origin")
                origin = scope.get("state", {}).get(ALLOWED_ORIGIN)
                if origin is not None:
                    headers["Access-Control-Allow-Origin"] = origin
            await send(message)

        await self.app(scope, receive, send_with_cors)
