"""The receiver bench/webhooks.py sends to: answers every POST 204 at once and counts those to
/hook (`GET /count`). Served by uvicorn on uvloop + httptools, like everything in bench/."""

from __future__ import annotations

import time
from typing import Any

received = {"count": 0, "first": 0.0, "last": 0.0}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    more = True
    while more:  # read the whole body, as a real receiver does
        message = await receive()
        more = message.get("more_body", False)
    if scope["method"] == "POST":
        if scope["path"] != "/hook":  # the floor's requests are not counted
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        now = time.monotonic()
        received["first"] = received["first"] or now
        received["last"] = now
        received["count"] += 1
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    body = (
        f'{{"count": {received["count"]}, "first": {received["first"]}, '
        f'"last": {received["last"]}}}'
    ).encode()
    headers = [(b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
