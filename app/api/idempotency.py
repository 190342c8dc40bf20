"""The `Idempotency-Key` header of the writes that create things or add to a lead (issue 13):
POST /leads, /leads/{id}/notes, /leads/{id}/calls, /leads/bulk/status and /leads/bulk/assign.

`Once` is the dependency: the key (1-255 printable ASCII characters, else 400 naming the
header) and the request's fingerprint. A route renders its answer with a function of the
service's result and runs the service call inside `once.run(user_id, render)`; with a key, the
service's transaction stores that answer (app/services/idempotency.py) and the route sends the
very response that was stored; a refusal is kept by the error handler that renders it
(app/api/errors.py). Without a key nothing changes.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Header, Request, Response

from app.api.preconditions import text_header
from app.models.idempotency_key import IDEMPOTENCY_KEY_MAX_LENGTH
from app.services import idempotency
from app.services.exceptions import InvalidHeaderException

# Printable ASCII, spaces allowed inside only (HTTP drops them at either end of a header value).
_KEY = re.compile(rf"[\x21-\x7e](?:[\x20-\x7e]{{0,{IDEMPOTENCY_KEY_MAX_LENGTH - 2}}}[\x21-\x7e])?")
KEY_PATTERN = f"^[!-~]([ -~]{{0,{IDEMPOTENCY_KEY_MAX_LENGTH - 2}}}[!-~])?$"
REPLAYED = "Idempotent-Replayed"


@dataclass
class Outcome:
    """The answer a call under `Once.run` rendered, if it rendered one."""

    response: Response | None = None

    def or_render(self, render: Callable[[Any], Response], result: Any) -> Response:
        return self.response if self.response is not None else render(result)


IDEMPOTENT_CALL = "idempotent_call"  # where a route's call waits for a refusal to be kept


@dataclass(frozen=True)
class Once:
    key: str | None
    fingerprint: str
    request: Request | None = None

    @asynccontextmanager
    async def run(self, user_id: int, render: Callable[[Any], Response]) -> AsyncIterator[Outcome]:
        outcome = Outcome()
        if self.key is None:
            yield outcome
            return
        call = idempotency.IdempotentCall(user_id, self.key, self.fingerprint, render)
        if self.request is not None:  # a refusal's answer is kept by the error handler
            setattr(self.request.state, IDEMPOTENT_CALL, call)
        token = idempotency.current.set(call)
        try:
            yield outcome
        finally:
            idempotency.current.reset(token)
        outcome.response = call.response  # type: ignore[assignment]


async def once(
    request: Request,
    key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            json_schema_extra=text_header(KEY_PATTERN),
            description=(
                "1-255 printable ASCII characters (spaces inside only) naming this request, new "
                "for each new "
                "request: a retry with the same key and the same body gets the first answer "
                "again (with `Idempotent-Replayed: true`) and changes nothing. Kept per user "
                "for IDEMPOTENCY_TTL_SECONDS (a day)."
            ),
        ),
    ] = None,
) -> Once:
    if key is None:
        return Once(None, "")
    if not _KEY.fullmatch(key):
        raise InvalidHeaderException(
            "Idempotency-Key",
            f"must be 1 to {IDEMPOTENCY_KEY_MAX_LENGTH} printable ASCII characters",
        )
    body = await request.body()
    return Once(key, idempotency.fingerprint(request.method, request.url.path, body), request)


OnceDep = Annotated[Once, Depends(once)]


def replayed(answer: idempotency.StoredAnswer) -> Response:
    return Response(
        answer.body,
        status_code=answer.status_code,
        headers={**answer.headers, REPLAYED: "true"},
    )
