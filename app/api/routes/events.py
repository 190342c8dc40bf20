"""/events/stream: lead events live, as Server-Sent Events (issue 15)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Query, Request, status
from fastapi.sse import EventSourceResponse, ServerSentEvent

from app.api.deps import StreamCaller
from app.api.errors import errors_beside_a_stream
from app.server import ENDLESS
from app.services import event_stream
from app.services.exceptions import CRMException

router = APIRouter(prefix="/events", tags=["events"])

# A stream reads again after this long without a notice (app/workers/event_hub.py).
READ_AGAIN_SECONDS = 5.0
RECONNECT_MS = 3000  # the `retry:` a client waits before reconnecting

STREAM_DESCRIPTION = (
    "One Server-Sent Event per lead event: `id:` the event id, `event:` its type, `data:` the "
    "webhook body (`{id, type, timestamp, data: {lead_id, lead, changes, actor_id}}`). "
    "A comment line (`: ping`) every 15 s keeps proxies from closing an idle stream."
)


@router.get(
    "/stream",
    summary="Follow lead events live",
    response_class=EventSourceResponse,
    status_code=status.HTTP_200_OK,
    responses={
        200: {"description": STREAM_DESCRIPTION},
        **errors_beside_a_stream(400, 401, 422),
    },
)
async def stream_events(
    request: Request,
    stream: StreamCaller,
    follow: Annotated[
        bool,
        Query(
            description="false: send the events there are now after Last-Event-ID, then end "
            "(a script catching up); true: keep the stream open for new ones.",
        ),
    ] = True,
) -> AsyncIterator[ServerSentEvent]:
    """The lead events the caller may see, in the order they were committed: a superuser every
    event; an agent those of the leads that were theirs at the time, and the one that took a
    lead away from them (whose `lead` is then null, as after a hard delete). Without
    `Last-Event-ID` the stream starts now; with it (the `id:` of an event this stream sent;
    EventSource sends it when it reconnects) right after that event, missing none. The stream
    ends when the caller's account may no longer sign in, and when the server shuts down
    (reconnect to another)."""
    ending = request.scope[ENDLESS] = asyncio.Event()  # set by a graceful shutdown
    yield ServerSentEvent(comment="stream open", retry=RECONNECT_MS)
    hub = request.app.state.event_hub
    events = event_stream.follow(
        stream.sessions,
        stream.claims,
        stream.start,
        changed=hub.changed,
        idle_seconds=READ_AGAIN_SECONDS,
        keep_open=follow,
        stop=ending,
    )
    try:
        async for event in events:
            yield ServerSentEvent(id=str(event.id), event=event.type, raw_data=event.body)
    except CRMException:  # the account may no longer sign in: the stream just ends
        return
