"""Background CSV imports (issue 16) against a database of the test's own, where every
transaction commits for real: a file over IMPORT_SYNC_MAX_ROWS answers 202 and a worker
imports it, its progress polled to the end; a worker killed with SIGKILL mid-import is taken
over (on_error=skip: from the first chunk not committed; on_error=abort: nothing was written,
and the next worker writes it whole)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.config import Settings, use_settings
from app.database import create_session_factory, upgrade_database
from app.main import create_app
from app.models import Lead, LeadEvent, LeadImport
from app.workers.imports import ImportWorker
from tests.helpers import client_of, committed_user, leads_csv, make_settings
from tests.support import committed_database, own_engine, start_worker, stop

IMPORT = "/api/v1/leads/import"
CSV = {"Content-Type": "text/csv"}
WAIT_SECONDS = 120.0
LEASE = "2"  # IMPORT_LEASE_SECONDS of the workers started here


@pytest.fixture
def settings() -> Settings:
    with use_settings(make_settings(import_sync_max_rows=100)) as installed:
        yield installed


@contextlib.asynccontextmanager
async def world(tmp_path: Path, settings: Settings) -> AsyncIterator[tuple]:
    """A migrated database (URL, engine), an agent's headers, an API client (no worker)."""
    async with committed_database(tmp_path, "crm_imports") as url:
        engine = own_engine(url, pool_size=4)
        try:
            await upgrade_database(engine)
            headers, _ = await committed_user(
                engine, settings, superuser=False, email="agent@crm.example"
            )
            async with client_of(create_app(engine=engine)) as client:
                yield url, engine, headers, client
        finally:
            await engine.dispose()


async def queue(client: httpx.AsyncClient, headers: dict, body: bytes, **params: Any) -> str:
    sent = await client.post(IMPORT, content=body, headers={**headers, **CSV}, params=params)
    assert sent.status_code == 202, sent.text
    return sent.headers["Location"]


async def poll(client: httpx.AsyncClient, headers: dict, location: str) -> dict[str, Any]:
    answer = await client.get(location, headers=headers)
    assert answer.status_code == 200, answer.text
    return answer.json()


async def until_status(
    client: httpx.AsyncClient, headers: dict, location: str, check: Any, what: str
) -> dict[str, Any]:
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        job = await poll(client, headers, location)
        if check(job):
            return job
        await asyncio.sleep(0.02)
    raise AssertionError(f"not within {WAIT_SECONDS:g}s: {what}")


async def lead_numbers(engine: AsyncEngine) -> list[str]:
    async with AsyncSession(engine) as session:
        return list(await session.scalars(select(Lead.email)))


def spawn_worker(url: str, tmp_path: Path) -> subprocess.Popen[bytes]:
    return start_worker(
        url,
        tmp_path,
        IMPORT_LEASE_SECONDS=LEASE,
        IMPORT_POLL_SECONDS="0.05",
    )


def kill(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)


async def test_a_50000_row_file_runs_in_the_background_with_progress_to_the_end(
    tmp_path: Path, settings: Settings
) -> None:
    async with world(tmp_path, settings) as (_, engine, headers, client):
        location = await queue(client, headers, leads_csv(50_000), on_error="skip")
        assert (await poll(client, headers, location))["status"] == "queued"
        worker = ImportWorker(create_session_factory(engine), settings)
        running = asyncio.create_task(worker.run_once())
        seen = []
        job = await poll(client, headers, location)
        while job["report"] is None:
            seen.append((job["status"], job["processed_rows"]))
            await asyncio.sleep(0.02)
            job = await poll(client, headers, location)
        assert await running
        emails = await lead_numbers(engine)

    progress = [rows for _, rows in seen]
    assert progress == sorted(progress)
    assert any(0 < rows < 50_000 for rows in progress), seen[:5]
    assert job["status"] == "done" and job["processed_rows"] == job["total_rows"] == 50_000
    report = job["report"]
    assert (report["created"], report["skipped"], report["errors"]) == (50_000, 0, [])
    assert len(set(emails)) == len(emails) == 50_000


async def test_every_lead_of_a_background_import_has_its_event_naming_it(
    tmp_path: Path, settings: Settings
) -> None:
    async with world(tmp_path, settings) as (_, engine, headers, client):
        location = await queue(client, headers, leads_csv(250))
        assert await ImportWorker(create_session_factory(engine), settings).run_once()
        job = await poll(client, headers, location)
        async with AsyncSession(engine) as session:
            named = await session.scalar(
                select(func.count()).where(LeadEvent.import_id == job["import_id"])
            )
            kept = await session.scalar(select(LeadImport.content))
    assert (job["status"], job["report"]["created"], named) == ("done", 250, 250)
    assert kept is None  # the file goes once the import has ended


async def test_a_background_abort_import_with_a_bad_row_writes_nothing(
    tmp_path: Path, settings: Settings
) -> None:
    async with world(tmp_path, settings) as (_, engine, headers, client):
        location = await queue(client, headers, leads_csv(2500, bad_rows=frozenset({2400})))
        assert await ImportWorker(create_session_factory(engine), settings).run_once()
        job = await poll(client, headers, location)
        assert await lead_numbers(engine) == []
    assert job["status"] == "aborted"
    errors = job["report"]["errors"]
    assert [(e["row"], e["column"], e["value"]) for e in errors] == [
        (2400, "E-mail", "not-an-email")
    ]
    assert (job["report"]["created"], job["report"]["skipped"]) == (0, 1)


async def test_a_worker_killed_during_a_skip_import_is_resumed_where_it_stopped(
    tmp_path: Path, settings: Settings
) -> None:
    bad = frozenset({10, 4000, 9000})
    async with world(tmp_path, settings) as (url, engine, headers, client):
        location = await queue(client, headers, leads_csv(12_000, bad_rows=bad), on_error="skip")
        first = spawn_worker(url, tmp_path)
        try:
            at_kill = await until_status(
                client, headers, location, lambda j: j["processed_rows"] >= 3000, "a chunk in"
            )
            kill(first)
        finally:
            stop(first)
        assert at_kill["report"] is None  # killed mid-import
        second = spawn_worker(url, tmp_path)
        try:
            job = await until_status(
                client, headers, location, lambda j: j["report"] is not None, "the import ends"
            )
        finally:
            stop(second)
        emails = await lead_numbers(engine)
        async with AsyncSession(engine) as session:
            attempts = await session.scalar(select(LeadImport.attempts))

    assert job["status"] == "done" and attempts == 2
    assert len(emails) == len(set(emails)) == 12_000 - len(bad)  # none lost, none twice
    assert job["report"]["created"] == 12_000 - len(bad)
    assert sorted(error["row"] for error in job["report"]["errors"]) == sorted(bad)


async def test_a_worker_killed_while_an_abort_import_is_written_leaves_nothing_half_applied(
    tmp_path: Path, settings: Settings
) -> None:
    async with world(tmp_path, settings) as (url, engine, headers, client):
        location = await queue(client, headers, leads_csv(12_000))
        first = spawn_worker(url, tmp_path)
        try:
            await until_status(
                client, headers, location, lambda j: j["status"] == "checking", "checking"
            )
            checking = time.monotonic()
            await until_status(
                client, headers, location, lambda j: j["status"] == "writing", "checked"
            )
            # Writing checks every row again and stores it: it takes longer than checking did.
            # Most of that time in, a worker committing chunk by chunk would have committed some.
            await asyncio.sleep(0.8 * (time.monotonic() - checking))
            kill(first)
        finally:
            stop(first)
        killed = await poll(client, headers, location)
        after_kill = await lead_numbers(engine)
        second = spawn_worker(url, tmp_path)
        try:
            job = await until_status(
                client, headers, location, lambda j: j["report"] is not None, "the import ends"
            )
        finally:
            stop(second)
        emails = await lead_numbers(engine)

    assert killed["status"] == "writing"  # the kill came while the rows were being written
    assert after_kill == []
    assert job["status"] == "done" and job["report"]["created"] == 12_000
    assert len(set(emails)) == len(emails) == 12_000


async def test_an_import_whose_workers_kept_dying_is_marked_failed_not_run_again(
    tmp_path: Path, settings: Settings
) -> None:
    async with world(tmp_path, settings) as (_, engine, headers, client):
        location = await queue(client, headers, leads_csv(150))
        async with AsyncSession(engine) as session:  # three claims, each run out
            await session.execute(update(LeadImport).values(attempts=3, locked_until=None))
            await session.commit()
        assert not await ImportWorker(create_session_factory(engine), settings).run_once()
        job = await poll(client, headers, location)
        emails = await lead_numbers(engine)
    assert (job["status"], job["error"]) == ("failed", "stopped 3 times without finishing")
    assert job["report"]["created"] == 0 and emails == []


async def test_a_worker_stopped_gracefully_gives_its_import_back_at_once(
    tmp_path: Path, settings: Settings
) -> None:
    async with world(tmp_path, settings) as (url, engine, headers, client):
        location = await queue(client, headers, leads_csv(12_000), on_error="skip")
        first = spawn_worker(url, tmp_path)
        try:
            await until_status(
                client, headers, location, lambda j: j["processed_rows"] > 0, "a chunk in"
            )
        finally:
            stop(first)  # SIGTERM
        async with AsyncSession(engine) as session:
            held_until = await session.scalar(select(LeadImport.locked_until))
    assert held_until is None  # the next worker need not wait for the lease to run out
