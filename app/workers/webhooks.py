"""The webhook worker (issue 15): dispatches committed events into deliveries and sends the
due ones, until told to stop.

It keeps nothing that matters in memory: what is to be sent, and who is sending it, is in the
database (app/services/webhook_dispatch.py, app/services/webhook_sending.py), so any number of
workers run side by side (`python -m app worker`, and one in each `python -m app` process unless
RUN_WEBHOOK_WORKER=false), and a killed one loses nothing: its leases run out and another worker
sends what it held. Stopping gracefully, a worker lets the requests in flight finish (they are
bounded by WEBHOOK_TIMEOUT_SECONDS) and gives back whatever it had claimed and not sent.

An idle worker looks for work every WEBHOOK_POLL_SECONDS with two reads, which take no lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.services import webhook_dispatch, webhook_sending
from app.services.webhook_sending import Batch, Claimed
from app.services.webhook_urls import Resolver, system_resolver

logger = logging.getLogger(__name__)

CANCEL_WAIT_SECONDS = 1.0
BATCH = 100  # deliveries one subscription's claim takes at most
RECORD_EVERY = 20  # successes recorded together


class WebhookWorker:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        read_sessions: async_sessionmaker[AsyncSession],
        settings: Settings,
        *,
        resolve: Resolver = system_resolver,
        on_dispatched: Callable[[], None] | None = None,
    ) -> None:
        self.sessions, self.read_sessions, self.settings = sessions, read_sessions, settings
        self.resolve = resolve
        # Told once events were dispatched: the live streams of this process (app/workers/
        # event_hub.py), which on SQLite have no other way to hear of them at once.
        self.on_dispatched = on_dispatched
        self.sending = False  # requests are out: a graceful stop lets them finish
        self._client: httpx.AsyncClient | None = None

    async def __aenter__(self) -> WebhookWorker:
        # No proxy from the environment, no redirects: a webhook goes where its URL says.
        self._client = httpx.AsyncClient(trust_env=False, follow_redirects=False)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def has_work(self) -> bool:
        async with self.read_sessions() as db:
            return await webhook_dispatch.has_undispatched(db) or await webhook_sending.has_due(db)

    async def dispatch(self) -> int:
        """Turn every event committed so far into deliveries; how many events."""
        total = 0
        while True:
            async with self.sessions() as db:
                taken = await webhook_dispatch.dispatch_events(db)
            total += taken
            if taken < webhook_dispatch.BATCH:
                if total and self.on_dispatched is not None:
                    self.on_dispatched()
                return total

    async def send_due(self) -> int:
        """Send what is due: for each of up to WEBHOOK_CONCURRENCY subscriptions at once, its
        batch, one delivery after the other; how many were attempted."""
        lease = webhook_sending.lease_for(self.settings)
        async with self.sessions() as db:
            batches = await webhook_sending.claim_due(
                db, subscriptions=self.settings.webhook_concurrency, batch=BATCH, lease=lease
            )
        held_until = time.monotonic() + lease.total_seconds()
        if not batches:
            return 0
        self.sending = True
        try:
            counts = await asyncio.gather(*(self._deliver(batch, held_until) for batch in batches))
        finally:
            self.sending = False
        return sum(counts)

    async def run_once(self) -> int:
        """Dispatch, then send one round; how much was done (0: nothing to do)."""
        return await self.dispatch() + await self.send_due()

    async def run(self, stop: asyncio.Event) -> None:
        """Work until `stop` is set; a round in progress is finished first."""
        while not stop.is_set():
            try:
                busy = await self.has_work() and await self.run_once() > 0
            except Exception:  # a database hiccup must not end the worker
                logger.exception("webhook worker: a round failed; trying again")
                busy = False
            if not busy:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.settings.webhook_poll_seconds)

    async def _deliver(self, batch: Batch, held_until: float) -> int:
        """Send the batch in order until one fails: its failure is recorded, the rest given
        back (they wait behind its retry). Successes are recorded every RECORD_EVERY and at the
        end; cancelled (a stop past the grace), the worker records what it sent and gives
        back what it had not. Before a send that might outlast the lease (`held_until`, on
        the monotonic clock), the lease of the rest is renewed; if it had run out, the worker
        stops there and leaves the rest to whoever holds them now."""
        assert self._client is not None, "use the worker as `async with`"
        lease = webhook_sending.lease_for(self.settings)
        one_send = 2 * self.settings.webhook_timeout_seconds  # a send and its recording
        delivered: list[tuple[Claimed, int]] = []
        done = 0  # deliveries of the batch sent and answered
        try:
            for claimed in batch.items:
                if time.monotonic() + one_send >= held_until:
                    # what was sent is recorded first: unrecorded, it would still be pending,
                    # the subscription's head, and free for another worker once its lease ends
                    await self._record(delivered)
                    rest = [item.id for item in batch.items[done:]]
                    async with self.sessions() as db:
                        renewed = await webhook_sending.renew(db, rest, lease)
                    if not renewed:
                        return done
                    held_until = time.monotonic() + lease.total_seconds()
                outcome = await webhook_sending.send(
                    self._client, claimed, self.settings, resolve=self.resolve
                )
                done += 1
                if outcome.ok:
                    delivered.append((claimed, outcome.status_code or 200))
                    if len(delivered) >= RECORD_EVERY:
                        await self._record(delivered)
                    continue
                await self._record(delivered)
                async with self.sessions() as db:
                    await webhook_sending.record_failure(db, claimed, outcome, self.settings)
                logger.info(
                    "webhook delivery %s to subscription %s failed (attempt %s): %s",
                    claimed.id,
                    claimed.webhook_id,
                    claimed.attempts + 1,
                    outcome.status_code or outcome.error,
                )
                await self._release([item.id for item in batch.items[done:]])
                return done
            await self._record(delivered)
        except asyncio.CancelledError:
            # The one in flight counts as unsent: it goes again (same webhook-id).
            unsent = [item.id for item in batch.items[done:]]
            await asyncio.shield(self._give_back(delivered, unsent))
            raise
        return done

    async def _record(self, delivered: list[tuple[Claimed, int]]) -> None:
        if delivered:
            async with self.sessions() as db:
                await webhook_sending.record_delivered(db, delivered)
            delivered.clear()

    async def _give_back(self, delivered: list[tuple[Claimed, int]], unsent: list[int]) -> None:
        await self._record(delivered)
        await self._release(unsent)

    async def _release(self, delivery_ids: list[int]) -> None:
        if delivery_ids:
            async with self.sessions() as db:
                await webhook_sending.release(db, delivery_ids)


class InProcessWorker:
    """The webhook worker of a served app process (RUN_WEBHOOK_WORKER), as a task."""

    def __init__(self, worker: WebhookWorker) -> None:
        self.worker = worker
        self.grace = worker.settings.webhook_timeout_seconds + 5
        self.stopping = asyncio.Event()
        self.task = asyncio.create_task(self._run(worker), name="webhook-worker")

    async def _run(self, worker: WebhookWorker) -> None:
        async with worker:
            await worker.run(self.stopping)

    async def stop(self) -> None:
        """Let requests in flight finish (they are bounded by the webhook timeout), then end.
        Anything else (a poll, a dispatch waiting for a lock) is cancelled at once: its
        transaction rolls back and the next worker does it again. A round still sending after
        the grace is cancelled too, and gives back what it had not sent."""
        self.stopping.set()
        try:
            grace = self.grace if self.worker.sending else 0
            await asyncio.wait_for(asyncio.shield(self.task), grace)
        except TimeoutError:
            self.task.cancel()
            # Not waited for beyond a moment: a statement stuck in SQLite's busy wait ends
            # with its thread, not with the task, and the process is ending anyway.
            await asyncio.wait({self.task}, timeout=CANCEL_WAIT_SECONDS)


def start_webhook_worker(app: Any, settings: Settings) -> InProcessWorker | None:
    """The worker of a served app process (`app.state`'s sessions), unless
    RUN_WEBHOOK_WORKER is off."""
    if not settings.run_webhook_worker:
        return None
    worker = WebhookWorker(
        app.state.session_factory,
        app.state.read_session_factory,
        settings,
        on_dispatched=app.state.event_hub.notify,
    )
    return InProcessWorker(worker)
