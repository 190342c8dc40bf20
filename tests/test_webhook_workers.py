"""Webhook workers as the processes they run as (`python -m app worker`), against a database
of the test's own and a real receiver on 127.0.0.1: a worker killed with SIGKILL in the middle
of a delivery loses nothing, one stopped with SIGTERM finishes what it was sending, two
workers on PostgreSQL send each of 2,000 events once, and `python -m app` delivers by itself
(its in-process worker: the zero-configuration setup)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.config import Settings, use_settings
from app.database import upgrade_database
from app.main import create_app
from app.models import Lead, WebhookDelivery
from app.seed import seed_demo
from tests.helpers import client_of, committed_user, make_settings, postgres_only
from tests.support import (
    Receiver,
    committed_database,
    own_engine,
    receiver,
    server_launcher,
    start_worker,
    stop,
)

API = "/api/v1"
WAIT_SECONDS = 60.0
TIMEOUT = "2"  # WEBHOOK_TIMEOUT_SECONDS of the workers: a lease of 2 x 2 + 5 = 9 s


@pytest.fixture
def settings() -> Settings:
    with use_settings(make_settings(webhook_allow_private_networks=True)) as installed:
        yield installed


@contextlib.asynccontextmanager
async def world(tmp_path: Path, settings: Settings) -> AsyncIterator[tuple]:
    """A migrated database (its URL and engine), a superuser's headers, an API client."""
    async with committed_database(tmp_path, "crm_workers") as url:
        engine = own_engine(url, pool_size=4)
        try:
            await upgrade_database(engine)
            headers, _ = await committed_user(
                engine, settings, superuser=True, email="admin@crm.example"
            )
            async with client_of(create_app(engine=engine)) as client:
                yield url, engine, headers, client
        finally:
            await engine.dispose()


def spawn_worker(url: str, tmp_path: Path) -> subprocess.Popen[bytes]:
    return start_worker(
        url,
        tmp_path,
        WEBHOOK_ALLOW_PRIVATE_NETWORKS="true",
        WEBHOOK_TIMEOUT_SECONDS=TIMEOUT,
        WEBHOOK_POLL_SECONDS="0.05",
    )


async def until(condition: Callable[[], Awaitable[bool] | bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"not within {WAIT_SECONDS:g}s: {what}")


async def subscribe(client: httpx.AsyncClient, headers: dict, hook: Receiver) -> None:
    made = await client.post(
        f"{API}/webhooks", json={"url": hook.url, "event_types": ["*"]}, headers=headers
    )
    assert made.status_code == 201, made.text


def delivered(engine: AsyncEngine, count: int) -> Callable[[], Awaitable[bool]]:
    """A condition for `until`: exactly `count` deliveries are recorded delivered."""

    async def check() -> bool:
        async with AsyncSession(engine) as session:
            query = select(func.count()).where(WebhookDelivery.status == "delivered")
            return int(await session.scalar(query) or 0) == count

    return check


async def test_a_worker_killed_during_a_delivery_loses_nothing(
    tmp_path: Path, settings: Settings
) -> None:
    async with world(tmp_path, settings) as (url, engine, headers, client), receiver() as hook:
        await subscribe(client, headers, hook)
        hook.hold = asyncio.Event()  # the first request is taken in and never answered
        created = await client.post(
            f"{API}/leads",
            json={"first_name": "Ada", "last_name": "L", "email": "ada@example.com"},
            headers=headers,
        )
        assert created.status_code == 201
        first = spawn_worker(url, tmp_path)
        try:
            await until(lambda: len(hook.received) == 1, "the first worker sends")
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=10)
        finally:
            stop(first)
        hook.hold.set()
        hook.hold = None

        second = spawn_worker(url, tmp_path)
        try:
            await until(lambda: len(hook.received) == 2, "the second worker sends it again")
            await until(delivered(engine, 1), "the delivery is recorded")
        finally:
            stop(second)

    ids = hook.ids()
    assert ids[0] == ids[1]
    assert hook.bodies()[1]["type"] == "lead.created"


@postgres_only
async def test_two_workers_deliver_each_of_2000_events_exactly_once(
    tmp_path: Path, settings: Settings
) -> None:
    async with world(tmp_path, settings) as (url, engine, headers, client), receiver() as hook:
        await subscribe(client, headers, hook)
        async with AsyncSession(engine) as session:
            await seed_demo(session, 2000, agents=2)
            lead_ids = list(await session.scalars(select(Lead.id).order_by(Lead.id)))
        moved = await client.post(
            f"{API}/leads/bulk/status",
            json={"lead_ids": lead_ids, "status": "QUALIFIED"},
            headers=headers,
        )
        assert moved.status_code == 200, moved.text
        async with engine.connect() as conn:
            events = await conn.scalar(text("SELECT count(*) FROM lead_events"))
        assert events == 2000

        workers = [spawn_worker(url, tmp_path) for _ in range(2)]
        try:
            await until(lambda: len(hook.received) >= 2000, "2,000 deliveries arrive")
            await until(delivered(engine, 2000), "all 2,000 are recorded delivered")
            await asyncio.sleep(1)  # time for a duplicate to show up, if one were coming
        finally:
            for worker in workers:
                stop(worker)

    counts = Counter(hook.ids())
    assert len(counts) == 2000
    assert max(counts.values()) == 1
    assert [int(i) for i in hook.ids()] == sorted(int(i) for i in hook.ids())


@postgres_only
async def test_a_batch_slower_than_its_lease_is_not_taken_over_and_sent_twice(
    tmp_path: Path, settings: Settings
) -> None:
    """With WEBHOOK_TIMEOUT_SECONDS=1 a claim leases its batch for 2 x 1 + 5 = 7 s; 30 answers
    of 0.4 s each take 12. The sending worker renews the lease as it goes, so the second
    worker, polling all along, never finds the rest of the batch free."""
    async with world(tmp_path, settings) as (url, engine, headers, client), receiver() as hook:
        await subscribe(client, headers, hook)
        hook.delay = 0.4
        async with AsyncSession(engine) as session:
            await seed_demo(session, 30, agents=1)
            lead_ids = list(await session.scalars(select(Lead.id).order_by(Lead.id)))
        moved = await client.post(  # 30 events, one subscription: one batch
            f"{API}/leads/bulk/status",
            json={"lead_ids": lead_ids, "status": "QUALIFIED"},
            headers=headers,
        )
        assert moved.status_code == 200, moved.text
        workers = [
            start_worker(
                url,
                tmp_path,
                WEBHOOK_ALLOW_PRIVATE_NETWORKS="true",
                WEBHOOK_TIMEOUT_SECONDS="1",
                WEBHOOK_POLL_SECONDS="0.05",
            )
            for _ in range(2)
        ]
        try:
            await until(delivered(engine, 30), "all 30 are recorded delivered")
            await asyncio.sleep(1)  # time for a duplicate to show up, if one were coming
        finally:
            for worker in workers:
                stop(worker)

    counts = Counter(hook.ids())
    assert len(counts) == 30
    assert max(counts.values()) == 1, counts


async def test_a_worker_stopped_with_sigterm_finishes_what_it_was_sending(
    tmp_path: Path, settings: Settings
) -> None:
    """The receiver never answers: the worker waits out WEBHOOK_TIMEOUT_SECONDS, records the
    attempt, and exits 0, holding nothing (another worker may take the retry at once)."""
    async with world(tmp_path, settings) as (url, engine, headers, client), receiver() as hook:
        await subscribe(client, headers, hook)
        hook.hold = asyncio.Event()
        await client.post(
            f"{API}/leads",
            json={"first_name": "Ada", "last_name": "L", "email": "ada@example.com"},
            headers=headers,
        )
        worker = spawn_worker(url, tmp_path)
        try:
            await until(lambda: len(hook.received) == 1, "the worker sends")
            worker.send_signal(signal.SIGTERM)
            await until(lambda: worker.poll() is not None, "the worker exits")
        finally:
            stop(worker)
        async with AsyncSession(engine) as session:
            [row] = (await session.scalars(select(WebhookDelivery))).all()

    assert worker.returncode == 0
    assert (row.status, row.attempts, row.lease_until) == ("pending", 1, None)
    assert row.last_error == f"no answer within {TIMEOUT} s"


async def test_python_m_app_delivers_by_itself(tmp_path: Path, settings: Settings) -> None:
    """No worker process: the served app's own worker (RUN_WEBHOOK_WORKER, on by default)
    delivers, on the zero-configuration SQLite file."""
    admin = {"ADMIN_EMAIL": "admin@crm.example", "ADMIN_PASSWORD": "served-admin-passphrase"}
    async with receiver() as hook:
        with server_launcher(wait_until_ready=True) as launch:
            server = launch(
                tmp_path,
                WEBHOOK_ALLOW_PRIVATE_NETWORKS="true",
                WEBHOOK_POLL_SECONDS="0.05",
                **admin,
            )
            async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as client:
                login = await client.post(
                    f"{API}/auth/token",
                    data={"username": admin["ADMIN_EMAIL"], "password": admin["ADMIN_PASSWORD"]},
                )
                headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
                await subscribe(client, headers, hook)
                created = await client.post(
                    f"{API}/leads",
                    json={"first_name": "Ada", "last_name": "L", "email": "ada@example.com"},
                    headers=headers,
                )
                assert created.status_code == 201, created.text
                await until(lambda: len(hook.received) == 1, "the served app delivers")

    assert hook.bodies()[0]["data"]["lead_id"] == created.json()["id"]
