"""The live event stream (issue 15), `GET /api/v1/events/stream`, read over real HTTP from the
app served by uvicorn on the test's event loop, against a database of the test's own where
every transaction commits.

Events reach a stream once the dispatcher has ordered them, so each test runs the dispatcher
itself (`dispatch`) at the moment it chooses, as the worker would in its next round.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fastapi.routing
import fastapi.sse
import httpx
import pytest
from sqlalchemy import insert, update

from app.api.routes import events as events_route
from app.config import Settings, use_settings
from app.database import create_session_factory, upgrade_database
from app.main import create_app
from app.models import LeadEvent, LeadEventType, User
from app.services.lead_events import event_values
from app.workers.webhooks import WebhookWorker
from tests.helpers import committed_user, make_settings, postgres_only
from tests.support import (
    CLIENT_TIMEOUT_SECONDS,
    EventStreamReader,
    StreamMessage,
    committed_database,
    own_engine,
    served,
)

API = "/api/v1"
STREAM = f"{API}/events/stream"
LEAD = {"first_name": "Ada", "last_name": "Lovelace"}


@dataclass
class Live:
    app: Any
    engine: Any
    client: httpx.AsyncClient
    worker: WebhookWorker
    admin: dict[str, str]
    agent: dict[str, str]
    agent_id: int
    other: dict[str, str]
    other_id: int
    emails: int = 0

    @contextlib.asynccontextmanager
    async def stream(
        self, headers: dict[str, str], *, last_event_id: str | None = None, follow: bool = True
    ) -> AsyncIterator[EventStreamReader]:
        """An open stream, once its opening message (which follows the start being fixed) is
        in: what is dispatched after this is the stream's to send."""
        sent = dict(headers)
        if last_event_id is not None:
            sent["Last-Event-ID"] = last_event_id
        params = None if follow else {"follow": "false"}
        async with self.client.stream("GET", STREAM, headers=sent, params=params) as response:
            assert response.status_code == 200, (await response.aread()).decode()
            assert response.headers["content-type"].startswith("text/event-stream")
            reader = EventStreamReader(response)
            opening = await reader.next()
            assert opening.comments == ("stream open",)
            yield reader

    async def create_lead(self, assigned_to: int | None = None, **fields: Any) -> int:
        self.emails += 1
        body = {**LEAD, "email": f"ada{self.emails}@example.com", **fields}
        if assigned_to is not None:
            body["assigned_to"] = assigned_to
        response = await self.client.post(f"{API}/leads", json=body, headers=self.admin)
        assert response.status_code == 201, response.text
        return int(response.json()["id"])

    async def patch(self, lead_id: int, **fields: Any) -> None:
        response = await self.client.patch(
            f"{API}/leads/{lead_id}", json=fields, headers=self.admin
        )
        assert response.status_code == 200, response.text

    async def dispatch(self) -> None:
        await self.worker.dispatch()


@pytest.fixture
def settings() -> Any:
    with use_settings(make_settings()) as installed:
        yield installed


@pytest.fixture
async def live(tmp_path: Path, settings: Settings) -> AsyncIterator[Live]:
    async with committed_database(tmp_path, "crm_stream") as url:
        engine = own_engine(url, pool_size=8)
        try:
            await upgrade_database(engine)
            admin, _ = await committed_user(engine, settings, superuser=True, email="a@crm.io")
            agent, agent_id = await committed_user(
                engine, settings, superuser=False, email="agent@crm.io"
            )
            other, other_id = await committed_user(
                engine, settings, superuser=False, email="other@crm.io"
            )
            app = create_app(engine=engine)
            worker = WebhookWorker(
                create_session_factory(engine),
                create_session_factory(engine, read_only=True),
                settings,
                on_dispatched=app.state.event_hub.notify,
            )
            async with (
                served(app) as serving,
                httpx.AsyncClient(base_url=serving.url, timeout=CLIENT_TIMEOUT_SECONDS) as client,
            ):
                yield Live(app, engine, client, worker, admin, agent, agent_id, other, other_id)
        finally:
            await engine.dispose()


def lead_of(message: StreamMessage) -> int:
    return int(message.json()["data"]["lead_id"])


async def events_until_end(reader: EventStreamReader) -> list[StreamMessage]:
    found = []
    with contextlib.suppress(EOFError):
        while True:
            found.append(await reader.next_event())
    return found


# ------------------------------------------------------------------------------------ scope


async def test_an_agent_gets_the_events_of_their_own_leads(live: Live) -> None:
    async with live.stream(live.agent) as stream:
        lead_id = await live.create_lead(assigned_to=live.agent_id)
        await live.dispatch()
        message = await stream.next_event()
    body = message.json()
    assert (message.event, body["type"]) == ("lead.created", "lead.created")
    assert message.id == body["id"]
    assert body["data"]["lead"]["id"] == lead_id
    assert body["data"]["changes"]["assigned_to"] == {"old": None, "new": live.agent_id}


async def test_an_agent_gets_no_event_of_another_agents_lead(live: Live) -> None:
    async with live.stream(live.agent) as stream:
        await live.create_lead(assigned_to=live.other_id)
        await live.create_lead()  # nobody's
        own = await live.create_lead(assigned_to=live.agent_id)
        await live.dispatch()
        first = await stream.next_event()
    assert lead_of(first) == own


async def test_a_superuser_gets_every_event_in_order(live: Live) -> None:
    async with live.stream(live.admin) as stream:
        leads = [
            await live.create_lead(assigned_to=live.other_id),
            await live.create_lead(),
            await live.create_lead(assigned_to=live.agent_id),
        ]
        await live.dispatch()
        got = [lead_of(await stream.next_event()) for _ in leads]
    assert got == leads


async def test_the_change_that_takes_a_lead_away_reaches_its_former_agent(live: Live) -> None:
    async with live.stream(live.agent) as stream:
        lead_id = await live.create_lead(assigned_to=live.agent_id)
        await live.patch(lead_id, assigned_to=live.other_id)
        await live.patch(lead_id, status="CONTACTED")  # the other agent's business now
        marker = await live.create_lead(assigned_to=live.agent_id)
        await live.dispatch()
        got = [await stream.next_event() for _ in range(3)]
    assert [(lead_of(m), m.event) for m in got] == [
        (lead_id, "lead.created"),
        (lead_id, "lead.updated"),
        (marker, "lead.created"),
    ]
    taken_away = got[1].json()["data"]
    assert taken_away["changes"]["assigned_to"] == {"old": live.agent_id, "new": live.other_id}
    assert taken_away["lead"] is None  # no longer theirs to read


async def test_a_stream_shows_an_agent_events_of_their_leads_as_they_were_then(
    live: Live,
) -> None:
    """A lead given to the agent later brings none of its earlier events along."""
    earlier = await live.create_lead(assigned_to=live.other_id)
    await live.dispatch()
    async with live.stream(live.agent) as stream:
        await live.patch(earlier, status="CONTACTED")  # still the other agent's
        await live.patch(earlier, assigned_to=live.agent_id)
        await live.dispatch()
        message = await stream.next_event()
    assert message.json()["data"]["changes"] == {
        "assigned_to": {"old": live.other_id, "new": live.agent_id}
    }


# ---------------------------------------------------------------------------------- resuming


async def test_a_reconnect_with_last_event_id_misses_nothing(live: Live) -> None:
    async with live.stream(live.admin) as stream:
        lead_id = await live.create_lead()
        await live.dispatch()
        first = await stream.next_event()
    # Disconnected: three more changes, dispatched while nobody listens.
    await live.patch(lead_id, status="CONTACTED")
    await live.patch(lead_id, company="Analytical Engines")
    second = await live.create_lead()
    await live.dispatch()

    async with live.stream(live.admin, last_event_id=first.id, follow=False) as stream:
        missed = await events_until_end(stream)

    assert [(lead_of(m), m.event) for m in missed] == [
        (lead_id, "lead.updated"),
        (lead_id, "lead.updated"),
        (second, "lead.created"),
    ]
    assert [int(m.id or 0) for m in missed] == sorted(int(m.id or 0) for m in missed)
    assert int(missed[0].id or 0) > int(first.id or 0)


async def test_without_last_event_id_a_stream_starts_now(live: Live) -> None:
    await live.create_lead()
    await live.dispatch()
    async with live.stream(live.admin, follow=False) as stream:
        assert await events_until_end(stream) == []


async def test_an_event_not_dispatched_yet_waits_for_the_dispatcher(live: Live) -> None:
    async with live.stream(live.admin, follow=False) as stream:
        await live.create_lead()
        assert await events_until_end(stream) == []


@postgres_only
async def test_an_event_committed_late_is_sent_not_skipped(live: Live) -> None:
    """A transaction that took its event id early and commits after a later id was streamed:
    the stream follows the order events became visible in, so it still gets that event."""
    lead_id = await live.create_lead()
    await live.dispatch()
    async with live.stream(live.admin) as stream, live.engine.connect() as slow:
        late = event_values(
            LeadEventType.NOTE_ADDED, lead_id, None, 2, assigned_to=None, note="slow"
        )
        await slow.execute(insert(LeadEvent).values(late))  # id taken, not committed
        later = await live.create_lead()
        await live.dispatch()
        first = await stream.next_event()
        await slow.commit()
        await live.dispatch()
        second = await stream.next_event()
    assert (lead_of(first), lead_of(second)) == (later, lead_id)
    assert int(second.id or 0) < int(first.id or 0)


# ------------------------------------------------------------------------------ waking, pings


@postgres_only
async def test_a_dispatch_in_another_process_wakes_the_stream_through_notify(
    live: Live, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a notice the stream would not read again for an hour: only the NOTIFY of a
    dispatcher with no tie to this app (another engine, no callback) can wake it."""
    monkeypatch.setattr(events_route, "READ_AGAIN_SECONDS", 3600.0)
    elsewhere = own_engine(str(live.engine.url.render_as_string(hide_password=False)), 2)
    try:
        other_process = WebhookWorker(
            create_session_factory(elsewhere),
            create_session_factory(elsewhere, read_only=True),
            settings,
        )
        async with live.stream(live.admin) as stream:
            lead_id = await live.create_lead()
            await other_process.dispatch()
            message = await stream.next_event()
    finally:
        await elsewhere.dispose()
    assert lead_of(message) == lead_id


async def test_the_process_own_dispatch_wakes_its_streams(
    live: Live, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(events_route, "READ_AGAIN_SECONDS", 3600.0)
    async with live.stream(live.admin) as stream:
        lead_id = await live.create_lead()
        await live.dispatch()  # tells the app's hub, as the in-process worker does
        message = await stream.next_event()
    assert lead_of(message) == lead_id


async def test_an_idle_stream_gets_a_comment_heartbeat(
    live: Live, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert fastapi.sse._PING_INTERVAL == 15.0  # what a stream gets when it is not shortened
    monkeypatch.setattr(fastapi.routing, "_PING_INTERVAL", 0.2)
    async with live.stream(live.admin) as stream:
        message = await stream.next()
    assert (message.id, message.data, message.comments) == (None, None, ("ping",))


# ---------------------------------------------------------------------------------- endings


async def test_the_stream_of_an_account_deactivated_meanwhile_ends(live: Live) -> None:
    async with live.stream(live.agent) as stream:
        async with live.engine.begin() as conn:
            await conn.execute(update(User).where(User.id == live.agent_id).values(is_active=False))
        await live.create_lead(assigned_to=live.other_id)
        await live.dispatch()
        assert await stream.ended()


async def test_a_graceful_shutdown_ends_open_streams_at_once(live: Live) -> None:
    """With a minute of grace, a stream left open would hold the shutdown for that minute
    and the reader would time out first."""
    app = create_app(engine=live.engine)
    async with (
        served(app, grace_seconds=60) as serving,
        httpx.AsyncClient(base_url=serving.url, timeout=CLIENT_TIMEOUT_SECONDS) as client,
        client.stream("GET", STREAM, headers=live.admin) as response,
    ):
        reader = EventStreamReader(response)
        assert (await reader.next()).comments == ("stream open",)
        await serving.stop()
        assert await reader.ended()


# ------------------------------------------------------------------------------ bad requests


@pytest.mark.parametrize("header", ["abc", "-1", "0", "1.5", "12a", str(2**63)])
async def test_a_malformed_last_event_id_is_refused_naming_the_header(
    live: Live, header: str
) -> None:
    response = await live.client.get(STREAM, headers={**live.admin, "Last-Event-ID": header})
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "invalid_header"
    assert body["errors"][0]["loc"] == ["header", "Last-Event-ID"]


async def test_a_last_event_id_no_stream_sent_is_refused(live: Live) -> None:
    await live.create_lead()  # its event exists but was never dispatched, so never streamed
    for header in ("1", "999999"):
        response = await live.client.get(STREAM, headers={**live.admin, "Last-Event-ID": header})
        assert response.status_code == 400, header
        assert response.json()["errors"][0]["loc"] == ["header", "Last-Event-ID"]
