"""Wakes a process's live streams when events have been dispatched (issue 15).

A stream reads its events from the database (app/services/event_stream.py) and, between reads,
waits here. What wakes it:

- on PostgreSQL, a NOTIFY on `EVENTS_CHANNEL`, which every dispatch that took events sends as
  it commits, from whichever process dispatched: one LISTENing connection per process, on a
  connection of its own (not one of the pool's), opened again after a loss;
- the process's own worker, when it dispatched (the only way on SQLite, with no NOTIFY);
- failing both, time: a stream reads again every `idle_seconds` however quiet it is, so a
  missed notice (a lost listening connection, a worker in another process on SQLite) delays
  events by that much and loses none.

Nothing here is state that matters: a notice only says "read again".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from app.config import Settings
from app.services.webhook_dispatch import EVENTS_CHANNEL

logger = logging.getLogger(__name__)

RECONNECT_SECONDS = 2.0


class EventHub:
    def __init__(self) -> None:
        self._changed = asyncio.Event()
        self._listener: asyncio.Task[None] | None = None

    def notify(self) -> None:
        """New events may have been dispatched: wake every stream waiting now."""
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def changed(self) -> Any:
        """A wait for the next notice from now on (`await wait(seconds, stop)`: at most
        `seconds`, and no longer than `stop` is unset), taken before a stream reads, so that a
        notice arriving during the read still wakes it after."""
        changed = self._changed

        async def wait(seconds: float, stop: asyncio.Event) -> None:
            waits = {asyncio.ensure_future(changed.wait()), asyncio.ensure_future(stop.wait())}
            try:
                await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiting in waits:
                    waiting.cancel()

        return wait

    def listen(self, dsn: str, options: dict[str, Any]) -> None:
        """PostgreSQL: LISTEN for dispatches from every process, until `stop()`."""
        self._listener = asyncio.create_task(self._listen(dsn, options), name="event-listener")

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None

    async def _listen(self, dsn: str, options: dict[str, Any]) -> None:
        import asyncpg

        while True:
            try:
                connection = await asyncpg.connect(dsn, **options)
            except (OSError, asyncpg.PostgresError, TimeoutError):
                logger.warning("live stream: cannot LISTEN yet; trying again", exc_info=True)
                await asyncio.sleep(RECONNECT_SECONDS)
                continue
            lost = asyncio.Event()
            try:
                connection.add_termination_listener(lambda _connection, lost=lost: lost.set())
                await connection.add_listener(EVENTS_CHANNEL, lambda *_: self.notify())
                self.notify()  # whatever was dispatched while nobody listened
                await lost.wait()
                logger.warning("live stream: the LISTEN connection was lost; opening another")
            except (OSError, asyncpg.PostgresError, TimeoutError):
                logger.warning("live stream: LISTEN failed; trying again", exc_info=True)
            finally:
                with contextlib.suppress(Exception):
                    await connection.close(timeout=1)
            await asyncio.sleep(RECONNECT_SECONDS)


def listen_for_events(hub: EventHub, engine: Any, settings: Settings) -> None:
    """On PostgreSQL (asyncpg), have the hub LISTEN on a connection like the engine's."""
    url = engine.url
    if url.get_backend_name() == "postgresql" and url.get_driver_name() == "asyncpg":
        from app.database import asyncpg_connect_options, asyncpg_dsn

        hub.listen(asyncpg_dsn(url), asyncpg_connect_options(settings))
