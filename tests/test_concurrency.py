"""Real concurrency: many writers at once, and nothing is lost.

The PostgreSQL tests need committed data that other connections and processes can see, so they
do not use the rolled-back `db` fixture: the module makes its own throw-away database (migrated
by Alembic, dropped WITH (FORCE) at the end) and every writer uses a session of its own. Writers
are released together by a barrier once each holds its own connection, so they really do
collide in the database.

Each history line names the call that wrote it, so the order of the lines in `notes` is the
order the writers committed in; the tests use that order to work out which value must have won
and to check that every writer saw the writes committed before its own (each "before" in a
change line is the previous writer's "after").

The SQLite test runs without PostgreSQL too: a real server on a SQLite file takes 20 writing
requests at once.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import secrets
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import use_settings
from app.database import create_engine, create_session_factory, upgrade_database
from app.main import create_app
from app.models import Lead, LeadEvent, LeadStatus, User
from app.services import LeadService
from app.services.exceptions import ConflictException
from app.services.lead_merges import LeadMerges
from tests.helpers import (
    ON_POSTGRES,
    PASSWORD,
    PASSWORD_HASH,
    TEST_SECRET,
    add_session,
    postgres_only,
    sqlite_suite_only,
    token_for,
)
from tests.support import (
    Server,
    engine_settings,
    own_engine,
    postgres_url,
    run_together,
    server_launcher,
    sqlite_rows,
    throwaway_database,
    wait_for_workers,
)

ADMIN_EMAIL = "chief@concurrency.example.com"
CALLS_SECONDS = 60.0

# A writer's history line: "[2026-11-25 17:52 UTC] user 5: text".
NOTE_LINE = re.compile(r"^\[\d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC\] (?:user \d+|system): (.*)$")


def note_text(line: str) -> str:
    match = NOTE_LINE.match(line)
    assert match, f"not a history line: {line!r}"
    return match.group(1)


def history(notes: str | None) -> list[str]:
    """The texts of a lead's history lines, oldest first."""
    return [note_text(line) for line in (notes or "").splitlines()]


# --- the throw-away PostgreSQL database ---------------------------------------------------------


@dataclass
class ThrowAwayDatabase:
    url: str  # asyncpg URL, password included
    sessions: async_sessionmaker[AsyncSession]
    admin_id: int
    admin_session: int  # a live session of the admin's, for tokens made by the tests


@pytest.fixture(scope="module")
async def pg() -> AsyncIterator[ThrowAwayDatabase]:
    if not ON_POSTGRES:
        pytest.skip("needs TEST_DATABASE_URL (PostgreSQL)")
    async with throwaway_database("crm_concurrency") as name:
        url = postgres_url(name)
        engine = own_engine(url, pool_size=5)
        try:
            await upgrade_database(engine)
            sessions = create_session_factory(engine)
            # The superuser every test acts as; a server started on this database finds it and
            # creates no bootstrap admin of its own, whatever order the tests run in.
            async with sessions() as session:
                admin = User(
                    email=ADMIN_EMAIL,
                    full_name="Chief",
                    hashed_password=PASSWORD_HASH,
                    is_superuser=True,
                )
                session.add(admin)
                await session.commit()
                admin_id = admin.id
                admin_session = await add_session(session, admin_id)
            yield ThrowAwayDatabase(url, sessions, admin_id, admin_session)
        finally:
            await engine.dispose()


async def new_lead(pg: ThrowAwayDatabase, **fields: Any) -> Lead:
    data = {"first_name": "Grace", "last_name": "Hopper", "email": "grace@navy.example.com"}
    data.update(fields)
    async with pg.sessions() as session:
        return await LeadService.create_lead(session, data, user_id=pg.admin_id)


async def read_lead(pg: ThrowAwayDatabase, lead_id: int) -> Lead:
    async with pg.sessions() as session:
        lead = await session.get(Lead, lead_id)
        assert lead is not None
        return lead


def failures(results: list[Any]) -> list[str]:
    return [f"call {n}: {r!r}" for n, r in enumerate(results) if isinstance(r, BaseException)]


# --- 1. concurrent update_lead on one lead ------------------------------------------------------

WRITERS = 50
START = datetime(2030, 1, 1, 9, 0, tzinfo=UTC)
# The field each writer changes (writer i: FIELDS[i % 6]) and the value it sends.
FIELDS: tuple[tuple[str, Callable[[int], Any]], ...] = (
    ("company", lambda i: f"Company {i:02d}"),
    ("job_title", lambda i: f"Title {i:02d}"),
    ("phone", lambda i: f"+1555000{i:04d}"),
    ("probability", lambda i: i / 100),
    ("estimated_value", lambda i: Decimal(f"{1000 + i}.50")),
    ("next_follow_up_date", lambda i: START + timedelta(hours=i)),
)


def writer_note(i: int) -> str:
    return f"writer {i:02d} was here"


def changes(line: str) -> dict[str, tuple[str, str]]:
    """`Updated: a: x → y; b: u → v` as {field: (before, after)}."""
    assert line.startswith("Updated: "), line
    found = {}
    for part in line.removeprefix("Updated: ").split("; "):
        name, values = part.split(": ", 1)
        before, after = values.split(" → ")
        found[name] = (before, after)
    return found


@postgres_only
async def test_concurrent_updates_of_one_lead_lose_no_note_and_last_writer_wins(
    pg: ThrowAwayDatabase,
) -> None:
    lead_id = (await new_lead(pg)).id

    def update(i: int) -> Callable[[AsyncSession], Any]:
        name, value = FIELDS[i % len(FIELDS)]
        data = {"notes": writer_note(i), name: value(i)}
        return lambda session: LeadService.update_lead(session, lead_id, data, user_id=pg.admin_id)

    results = await run_together(pg.url, [update(i) for i in range(WRITERS)], seconds=CALLS_SECONDS)

    assert not failures(results), failures(results)
    lead = await read_lead(pg, lead_id)
    texts = history(lead.notes)
    counts = Counter(texts)
    missing = [i for i in range(WRITERS) if counts[writer_note(i)] != 1]
    assert not missing, f"note lines lost or doubled for writers {missing}:\n{lead.notes}"
    assert len(texts) == 1 + 2 * WRITERS, lead.notes  # "Created", then a change and a note each

    # Commit order, from the order of the note lines; each writer's change line comes just
    # before its note line (one transaction appends both).
    position = {i: texts.index(writer_note(i)) for i in range(WRITERS)}
    order = sorted(range(WRITERS), key=position.__getitem__)
    last_after: dict[str, str] = {}
    for i in order:
        name, _ = FIELDS[i % len(FIELDS)]
        changed = changes(texts[position[i] - 1])
        assert name in changed, f"writer {i} changed {name}: {texts[position[i] - 1]}"
        before, after = changed[name]
        # Every writer saw the value the previous writer of that field committed.
        assert before == last_after.get(name, "(none)"), (
            f"writer {i} overwrote {name} unseen: {before!r} != {last_after.get(name)!r}\n"
            f"{lead.notes}"
        )
        last_after[name] = after
    for index, (name, value) in enumerate(FIELDS):
        writers = [i for i in order if i % len(FIELDS) == index]
        last = writers[-1]
        assert getattr(lead, name) == value(last), (
            f"{name} is {getattr(lead, name)!r}, but writer {last} (the last of {writers}) sent "
            f"{value(last)!r}"
        )


# --- 2. concurrent POST /leads/{id}/notes on a two-worker server --------------------------------


@pytest.fixture
def pg_server(pg: ThrowAwayDatabase, tmp_path: Path) -> Iterator[Server]:
    with server_launcher(wait_until_ready=True) as start:
        server = start(
            tmp_path,
            "--workers",
            "2",
            DATABASE_URL=pg.url,
            ADMIN_EMAIL=ADMIN_EMAIL,
            ADMIN_PASSWORD=PASSWORD,
            SECRET_KEY=TEST_SECRET,
        )
        wait_for_workers(server, 2)
        yield server


@pytest.fixture
def sqlite_server(tmp_path: Path) -> Iterator[Server]:
    if ON_POSTGRES:
        pytest.skip("a SQLite server of its own: run once, by the SQLite suite")
    with server_launcher(wait_until_ready=True) as start:
        yield start(
            tmp_path, ADMIN_EMAIL=ADMIN_EMAIL, ADMIN_PASSWORD=PASSWORD, SECRET_KEY=TEST_SECRET
        )


def http_client(server: Server) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=server.base_url,
        timeout=60.0,
        limits=httpx.Limits(max_connections=25, max_keepalive_connections=25),
    )


async def log_in(client: httpx.AsyncClient) -> dict[str, str]:
    response = await client.post(
        "/api/v1/auth/token", data={"username": ADMIN_EMAIL, "password": PASSWORD}
    )
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def describe(responses: list[httpx.Response], server: Server) -> str:
    bad = [f"{r.request.method} {r.request.url.path}: {r.status_code} {r.text}" for r in responses]
    return "\n".join(bad) + f"\n--- server output\n{server.output()[-4000:]}"


NOTES_BY_HTTP = 50


@postgres_only
async def test_concurrent_notes_through_a_two_worker_server_are_all_kept(
    pg_server: Server,
) -> None:
    async with http_client(pg_server) as client:
        headers = await log_in(client)
        created = await client.post(
            "/api/v1/leads",
            headers=headers,
            json={"first_name": "Alan", "last_name": "Turing", "email": "alan@bletchley.example"},
        )
        assert created.status_code == 201, created.text
        lead_id = created.json()["id"]
        texts = [f"http note {i:02d} of {NOTES_BY_HTTP}" for i in range(NOTES_BY_HTTP)]

        responses = await asyncio.gather(
            *(
                client.post(f"/api/v1/leads/{lead_id}/notes", headers=headers, json={"text": t})
                for t in texts
            )
        )

        bad = [r for r in responses if r.status_code != 200]
        assert not bad, describe(bad, pg_server)
        for text, response in zip(texts, responses, strict=True):
            assert text in history(response.json()["notes"]), response.text
        read = await client.get(f"/api/v1/leads/{lead_id}", headers=headers)
    assert read.status_code == 200, read.text
    counts = Counter(history(read.json()["notes"]))
    lost = [t for t in texts if counts[t] != 1]
    assert not lost, f"lost or doubled: {lost}\n{read.json()['notes']}"
    assert "Traceback" not in pg_server.output(), pg_server.output()


async def concurrent_patches_keep_every_change(client: httpx.AsyncClient, server: Server) -> None:
    """Concurrent PATCHes of one lead, each with a note and a new job title: every note is
    kept once, each change line saw the title the writer before it committed, and the last
    writer's title is the one stored."""
    headers = await log_in(client)
    created = await client.post(
        "/api/v1/leads",
        headers=headers,
        json={"first_name": "Grace", "last_name": "Hopper", "email": "grace@navy.example"},
    )
    assert created.status_code == 201, created.text
    lead_path = f"/api/v1/leads/{created.json()['id']}"
    titles = [f"Title {i:02d}" for i in range(PATCHES_BY_HTTP)]

    responses = await asyncio.gather(
        *(
            client.patch(lead_path, headers=headers, json={"job_title": t, "notes": f"by {t}"})
            for t in titles
        )
    )

    bad = [r for r in responses if r.status_code != 200]
    assert not bad, describe(bad, server)
    read = await client.get(lead_path, headers=headers)
    assert read.status_code == 200, read.text
    texts = history(read.json()["notes"])
    counts = Counter(texts)
    lost = [t for t in titles if counts[f"by {t}"] != 1]
    assert not lost, f"lost or doubled: {lost}\n{read.json()['notes']}"
    seen = "(none)"
    for line in texts[1:]:
        if line.startswith("Updated: "):
            before, after = changes(line)["job_title"]
            assert before == seen, f"a change overwrote {seen!r} unseen:\n{read.json()['notes']}"
            seen = after
    assert read.json()["job_title"] == seen
    assert "Traceback" not in server.output(), server.output()


PATCHES_BY_HTTP = 30


@postgres_only
async def test_concurrent_patches_through_a_two_worker_server_lose_no_change(
    pg_server: Server,
) -> None:
    async with http_client(pg_server) as client:
        await concurrent_patches_keep_every_change(client, pg_server)


async def test_concurrent_patches_through_a_sqlite_server_lose_no_change(
    sqlite_server: Server,
) -> None:
    async with http_client(sqlite_server) as client:
        await concurrent_patches_keep_every_change(client, sqlite_server)


@postgres_only
async def test_concurrent_patches_with_one_if_match_let_exactly_one_through(
    pg: ThrowAwayDatabase, pg_server: Server
) -> None:
    """Twenty clients read the lead once and PATCH it with that ETag at the same moment: the
    check is made on the locked row, so one gets 200 and nineteen get 412, with one event."""
    async with http_client(pg_server) as client:
        headers = await log_in(client)
        created = await client.post(
            "/api/v1/leads",
            headers=headers,
            json={"first_name": "Edsger", "last_name": "Dijkstra", "email": "ewd@example.com"},
        )
        assert created.status_code == 201, created.text
        lead_id, etag = created.json()["id"], created.headers["ETag"]
        conditional = {**headers, "If-Match": etag}
        responses = await asyncio.gather(
            *(
                client.patch(
                    f"/api/v1/leads/{lead_id}", headers=conditional, json={"job_title": f"T{i}"}
                )
                for i in range(20)
            )
        )
    statuses = Counter(r.status_code for r in responses)
    assert statuses == {200: 1, 412: 19}, describe(
        [r for r in responses if r.status_code not in (200, 412)], pg_server
    )
    async with pg.sessions() as session:
        updated = await session.scalar(
            select(func.count()).where(
                LeadEvent.lead_id == lead_id, LeadEvent.type == "lead.updated"
            )
        )
    assert updated == 1
    winner = next(r for r in responses if r.status_code == 200)
    assert winner.headers["ETag"] == f'"{lead_id}-2"'
    assert {r.json()["current_version"] for r in responses if r.status_code == 412} == {2}


async def concurrent_creates_with_one_key_make_one_lead(
    client: httpx.AsyncClient, server: Server, copies: int, email: str
) -> list[httpx.Response]:
    """`copies` POST /leads at once, one Idempotency-Key and one body: one 201 that created
    the lead, the rest its replays (201, `Idempotent-Replayed: true`, the same bytes) or 409
    while it ran."""
    headers = {**await log_in(client), "Idempotency-Key": f"create-{email}"}
    body = {"first_name": "Barbara", "last_name": "Liskov", "email": email}
    responses = await asyncio.gather(
        *(client.post("/api/v1/leads", headers=headers, json=body) for _ in range(copies))
    )
    unexpected = [r for r in responses if r.status_code not in (201, 409)]
    assert not unexpected, describe(unexpected, server)
    created = [r for r in responses if r.status_code == 201]
    firsts = [r for r in created if "Idempotent-Replayed" not in r.headers]
    assert len(firsts) == 1, [dict(r.headers) for r in created]
    assert all(r.content == firsts[0].content for r in created)
    busy = [r for r in responses if r.status_code == 409]
    assert all(r.json()["code"] == "idempotency_in_progress" for r in busy)
    listed = await client.get("/api/v1/leads", params={"search": email}, headers=headers)
    assert listed.json()["total"] == 1, listed.text
    return responses


@postgres_only
async def test_twenty_concurrent_creates_with_one_key_make_one_lead_on_postgres(
    pg_server: Server,
) -> None:
    async with http_client(pg_server) as client:
        await concurrent_creates_with_one_key_make_one_lead(
            client, pg_server, 20, "liskov@pg.example.com"
        )


async def test_five_concurrent_creates_with_one_key_make_one_lead_on_sqlite(
    sqlite_server: Server,
) -> None:
    async with http_client(sqlite_server) as client:
        await concurrent_creates_with_one_key_make_one_lead(
            client, sqlite_server, 5, "liskov@sqlite.example.com"
        )


@postgres_only
async def test_a_repeat_while_the_first_request_runs_gets_409_then_its_answer(
    pg: ThrowAwayDatabase, pg_server: Server
) -> None:
    """The first note waits for a lock another transaction holds on the lead, its key held:
    the repeat is told the first is still running (409); once it finishes, the next repeat
    gets its answer."""
    import asyncpg

    lead_id = (await new_lead(pg, email="inprogress@example.com")).id
    url = make_url(pg.url)
    plain_url = url.set(drivername="postgresql").render_as_string(hide_password=False)
    gate = await asyncpg.connect(plain_url)
    try:
        async with http_client(pg_server) as client:
            headers = {**await log_in(client), "Idempotency-Key": "note-in-progress"}
            path, body = f"/api/v1/leads/{lead_id}/notes", {"text": "Only once"}
            held = gate.transaction()
            await held.start()
            await gate.execute("SELECT id FROM leads WHERE id = $1 FOR UPDATE", lead_id)
            first = asyncio.create_task(client.post(path, headers=headers, json=body))
            watcher = await asyncpg.connect(
                url.set(drivername="postgresql").render_as_string(False)
            )
            try:
                deadline = time.monotonic() + 10
                while not await sessions_waiting_for_a_lock(watcher, str(url.database)):
                    assert time.monotonic() < deadline, "the first request never waited"
                    await asyncio.sleep(0.02)
            finally:
                await watcher.close()
            repeat = await client.post(path, headers=headers, json=body)
            assert repeat.status_code == 409, repeat.text
            assert repeat.json()["code"] == "idempotency_in_progress"
            await held.commit()
            answered = await first
            assert answered.status_code == 200, answered.text
            again = await client.post(path, headers=headers, json=body)
    finally:
        await gate.close()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.content == answered.content
    lead = await read_lead(pg, lead_id)
    assert history(lead.notes).count("Only once") == 1


@postgres_only
async def test_a_first_request_that_failed_with_a_database_error_stores_nothing(
    pg: ThrowAwayDatabase, tmp_path: Path
) -> None:
    """The first note times out in the database (503): its key keeps no answer, so the retry
    runs and adds the note, once."""
    import asyncpg

    lead_id = (await new_lead(pg, email="timedout@example.com")).id
    url = make_url(pg.url)
    gate = await asyncpg.connect(
        url.set(drivername="postgresql").render_as_string(hide_password=False)
    )
    with server_launcher(wait_until_ready=True) as start:
        server = start(
            tmp_path,
            DATABASE_URL=pg.url,
            ADMIN_EMAIL=ADMIN_EMAIL,
            ADMIN_PASSWORD=PASSWORD,
            SECRET_KEY=TEST_SECRET,
            DB_STATEMENT_TIMEOUT_MS="300",
        )
        try:
            async with http_client(server) as client:
                headers = {**await log_in(client), "Idempotency-Key": "note-after-a-fault"}
                path, body = f"/api/v1/leads/{lead_id}/notes", {"text": "Despite the fault"}
                held = gate.transaction()
                await held.start()
                await gate.execute("SELECT id FROM leads WHERE id = $1 FOR UPDATE", lead_id)
                failed = await client.post(path, headers=headers, json=body)
                await held.rollback()
                retried = await client.post(path, headers=headers, json=body)
        finally:
            await gate.close()
    assert failed.status_code == 503, failed.text
    assert retried.status_code == 200, retried.text
    assert "Idempotent-Replayed" not in retried.headers
    lead = await read_lead(pg, lead_id)
    assert history(lead.notes).count("Despite the fault") == 1


@sqlite_suite_only
async def test_a_stored_answer_outlives_a_killed_server(tmp_path: Path) -> None:
    """The answer was acknowledged, then the server was killed (SIGKILL): a new server on the
    same database replays it and creates nothing."""
    body = {"first_name": "Frances", "last_name": "Allen", "email": "allen@example.com"}
    with server_launcher(wait_until_ready=True) as start:
        settings = {"ADMIN_EMAIL": ADMIN_EMAIL, "ADMIN_PASSWORD": PASSWORD}
        first_server = start(tmp_path, SECRET_KEY=TEST_SECRET, **settings)
        async with http_client(first_server) as client:
            headers = {**await log_in(client), "Idempotency-Key": "create-before-the-crash"}
            first = await client.post("/api/v1/leads", headers=headers, json=body)
        assert first.status_code == 201, first.text
        os.killpg(first_server.process.pid, signal.SIGKILL)
        first_server.process.wait(timeout=10)
        second_server = start(tmp_path, SECRET_KEY=TEST_SECRET, **settings)
        async with http_client(second_server) as client:
            again = await client.post("/api/v1/leads", headers=headers, json=body)
            listed = await client.get("/api/v1/leads", headers=headers)
    assert again.headers["Idempotent-Replayed"] == "true", again.text
    assert (again.status_code, again.content) == (201, first.content)
    assert listed.json()["total"] == 1


# --- 3. concurrent bulk status changes and assignments over overlapping ids ---------------------

BULK_LEADS = 300
BULK_CALLS = 12
BULK_SIZE = 100
STATUS_LINE = re.compile(r"^Status (\w+) → (\w+) \(bulk\)$")
ASSIGN_LINE = re.compile(r"^Assigned to user (\d+) \(was (unassigned|user \d+)\)$")


@dataclass
class BulkCall:
    number: int
    ids: list[int]  # in the (random) order given
    status: LeadStatus | None = None  # a status call
    agent_id: int | None = None  # an assign call

    @property
    def marker(self) -> str:
        if self.status is not None:
            return f"bulk status call {self.number:02d}"
        return f"Assigned to user {self.agent_id} (was "

    def run(self, session: AsyncSession, admin_id: int) -> Any:
        if self.status is not None:
            return LeadService.bulk_update_status(
                session, self.ids, self.status, user_id=admin_id, note=self.marker
            )
        assert self.agent_id is not None
        return LeadService.assign_leads(
            session, self.ids, agent_user_id=self.agent_id, assigned_by_user_id=admin_id
        )


@postgres_only
async def test_concurrent_bulk_status_and_assign_leave_one_line_per_call(
    pg: ThrowAwayDatabase,
) -> None:
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    tag = secrets.token_hex(4)
    async with pg.sessions() as session:
        agents = [
            User(
                email=f"agent{n}-{tag}@concurrency.example.com",
                full_name=f"Agent {n}",
                hashed_password=PASSWORD_HASH,
            )
            for n in range(BULK_CALLS // 2)
        ]
        leads = [
            Lead(first_name=f"Bulk{n}", last_name=tag, email=f"bulk{n}-{tag}@example.com")
            for n in range(BULK_LEADS)
        ]
        session.add_all([*agents, *leads])
        await session.commit()
        agent_ids = [agent.id for agent in agents]
        lead_ids = [lead.id for lead in leads]

    calls = []
    for number in range(BULK_CALLS):
        ids = rng.sample(lead_ids, BULK_SIZE)  # a random subset, in random order
        if number % 2 == 0:
            status = rng.choice([s for s in LeadStatus if s is not LeadStatus.NEW])
            calls.append(BulkCall(number, ids, status=status))
        else:
            calls.append(BulkCall(number, ids, agent_id=agent_ids[number // 2]))

    results = await run_together(
        pg.url,
        [lambda s, call=call: call.run(s, pg.admin_id) for call in calls],
        seconds=CALLS_SECONDS,
    )

    assert not failures(results), f"seed {seed}: {failures(results)}"
    for call, result in zip(calls, results, strict=True):
        assert sorted(lead.id for lead in result) == sorted(call.ids), f"seed {seed}"

    async with pg.sessions() as session:
        rows = (
            await session.execute(
                select(Lead.id, Lead.notes, Lead.status, Lead.assigned_to).where(
                    Lead.id.in_(lead_ids)
                )
            )
        ).all()
    assert len(rows) == BULK_LEADS
    problems = []
    for row in rows:
        texts = history(row.notes)
        for call in calls:
            expected = 1 if row.id in call.ids else 0
            found = sum(text.startswith(call.marker) for text in texts)
            if found != expected:
                problems.append(
                    f"lead {row.id}: {found} lines of call {call.number}, not {expected}"
                )
        # Replaying the lines in order must reproduce the row: every call saw the previous one.
        status, assignee = LeadStatus.NEW.value, "unassigned"
        for n, text in enumerate(texts):
            if match := STATUS_LINE.match(text):
                if match.group(1) != status:
                    problems.append(f"lead {row.id}: {text!r} after status {status}")
                status = match.group(2)
                marker = texts[n + 1] if n + 1 < len(texts) else ""
                if not marker.startswith("bulk status call "):
                    problems.append(f"lead {row.id}: {text!r} not followed by its note")
            elif match := ASSIGN_LINE.match(text):
                if match.group(2) != assignee:
                    problems.append(f"lead {row.id}: {text!r} after {assignee}")
                assignee = f"user {match.group(1)}"
        if row.status.value != status:
            problems.append(f"lead {row.id}: status {row.status.value}, its history says {status}")
        actual = f"user {row.assigned_to}" if row.assigned_to is not None else "unassigned"
        if actual != assignee:
            problems.append(f"lead {row.id}: assigned to {actual}, its history says {assignee}")
    assert not problems, f"seed {seed}:\n" + "\n".join(problems[:40])


async def sessions_waiting_for_a_lock(watcher: Any, database: str) -> int:
    return int(
        await watcher.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock'",
            database,
        )
    )


async def bulk_call_racing_a_held_change(
    pg: ThrowAwayDatabase, lead_ids: list[int], held_change: str, held_id: int
) -> Any:
    """Run a bulk status call (ids only) while another transaction holds `held_change` (SQL on
    lead `held_id`) uncommitted; commit that change once the bulk call waits for its lock.
    The call's result, or the exception it raised."""
    import asyncpg

    url = make_url(pg.url)
    plain_url = url.set(drivername="postgresql").render_as_string(hide_password=False)
    gate = await asyncpg.connect(plain_url)
    watcher = await asyncpg.connect(plain_url)
    try:
        held = gate.transaction()
        await held.start()
        await gate.execute(held_change, held_id)

        async def bulk() -> Any:
            async with pg.sessions() as session:
                return await LeadService.bulk_update_status(
                    session, lead_ids, LeadStatus.WON, pg.admin_id, ids_only=True
                )

        call = asyncio.create_task(bulk())
        try:
            deadline = time.monotonic() + 10
            while not await sessions_waiting_for_a_lock(watcher, str(url.database)):
                assert not call.done(), f"the bulk call did not wait: {call.result()!r}"
                assert time.monotonic() < deadline, "the bulk call never waited for the lock"
                await asyncio.sleep(0.02)
        finally:
            await held.commit()
        async with asyncio.timeout(CALLS_SECONDS):
            return (await asyncio.gather(call, return_exceptions=True))[0]
    finally:
        await gate.close()
        await watcher.close()


@postgres_only
async def test_bulk_call_includes_a_lead_restored_while_it_runs(pg: ThrowAwayDatabase) -> None:
    """The lead is archived when the bulk UPDATE runs (so it is left out) and restored, by a
    transaction that commits meanwhile, when the call looks at what was left out: the call
    waits for that transaction and changes the restored lead too, as if it had come after."""
    leads = [await new_lead(pg, email=f"restored{n}@example.com") for n in range(3)]
    ids = sorted(lead.id for lead in leads)
    async with pg.sessions() as session:
        await LeadService.delete_lead(session, ids[1], pg.admin_id)

    result = await bulk_call_racing_a_held_change(
        pg,
        ids,
        "UPDATE leads SET archived_at = NULL, status = status_before_archive, "
        "status_before_archive = NULL WHERE id = $1",
        ids[1],
    )

    assert result == ids
    for lead_id in ids:
        lead = await read_lead(pg, lead_id)
        assert lead.status == LeadStatus.WON
        assert sum(text.endswith("→ WON (bulk)") for text in history(lead.notes)) == 1


@postgres_only
async def test_bulk_call_refuses_a_lead_archived_while_it_waits(pg: ThrowAwayDatabase) -> None:
    """The bulk UPDATE waits for a transaction archiving one of its leads; once that commits,
    the lead no longer qualifies: the call is refused and changes none of the leads."""
    leads = [await new_lead(pg, email=f"archived{n}@example.com") for n in range(3)]
    ids = sorted(lead.id for lead in leads)

    result = await bulk_call_racing_a_held_change(
        pg,
        ids,
        "UPDATE leads SET archived_at = now(), status_before_archive = status, "
        "status = 'LOST' WHERE id = $1",
        ids[2],
    )

    assert isinstance(result, ConflictException), result
    assert str(ids[2]) in str(result)
    for lead_id in ids:
        lead = await read_lead(pg, lead_id)
        assert lead.status != LeadStatus.WON
        assert not any(text.endswith("(bulk)") for text in history(lead.notes))


@postgres_only
async def test_a_bulk_events_old_value_is_the_one_committed_while_the_call_waited(
    pg: ThrowAwayDatabase,
) -> None:
    """Another transaction changes a lead's status and commits while the bulk call waits for
    that lead: the call's event names the status the lead then had, not the one its
    statement's snapshot saw."""
    leads = [await new_lead(pg, email=f"waited{n}@example.com") for n in range(2)]
    ids = sorted(lead.id for lead in leads)

    result = await bulk_call_racing_a_held_change(
        pg, ids, "UPDATE leads SET status = 'QUALIFIED' WHERE id = $1", ids[1]
    )

    assert result == ids
    async with pg.sessions() as session:
        events = (
            await session.scalars(
                select(LeadEvent)
                .where(LeadEvent.lead_id.in_(ids), LeadEvent.type == "lead.status_changed")
                .order_by(LeadEvent.lead_id)
            )
        ).all()
    assert [e.changes["status"]["old"] for e in events] == ["NEW", "QUALIFIED"]


@postgres_only
async def test_a_bulk_call_run_again_after_a_deadlock_leaves_one_event_per_lead(
    pg: ThrowAwayDatabase,
) -> None:
    """A real deadlock: the bulk call locks the first lead and waits for the second, which
    another transaction holds and which then asks for the first. PostgreSQL aborts the bulk
    call (it has waited longest), `@transactional` runs it again, and only that run's events
    and note lines are kept."""
    import asyncpg

    ids = sorted([(await new_lead(pg, email=f"deadlock{n}@example.com")).id for n in range(2)])
    url = make_url(pg.url)
    plain_url = url.set(drivername="postgresql").render_as_string(hide_password=False)
    other = await asyncpg.connect(plain_url)
    watcher = await asyncpg.connect(plain_url)
    lock = "SELECT id FROM leads WHERE id = $1 FOR UPDATE"
    try:
        await other.execute("SET deadlock_timeout = '20s'")  # the bulk call's check runs first
        held = other.transaction()
        await held.start()
        await other.execute(lock, ids[1])

        async def bulk() -> Any:
            async with pg.sessions() as session:
                return await LeadService.bulk_update_status(
                    session, ids, LeadStatus.WON, pg.admin_id, ids_only=True
                )

        call = asyncio.create_task(bulk())
        deadline = time.monotonic() + 10
        while not await sessions_waiting_for_a_lock(watcher, str(url.database)):
            assert not call.done(), f"the bulk call did not wait: {call.result()!r}"
            assert time.monotonic() < deadline, "the bulk call never waited for the lock"
            await asyncio.sleep(0.02)
        await other.execute(lock, ids[0])  # returns once the bulk call is aborted
        await held.commit()
        async with asyncio.timeout(CALLS_SECONDS):
            assert await call == ids
    finally:
        await other.close()
        await watcher.close()

    async with pg.sessions() as session:
        events = (
            await session.scalars(
                select(LeadEvent).where(LeadEvent.lead_id.in_(ids)).order_by(LeadEvent.id)
            )
        ).all()
    changed = [(e.lead_id, e.changes, e.lead_version) for e in events if e.type != "lead.created"]
    assert changed == [(i, {"status": {"old": "NEW", "new": "WON"}}, 2) for i in ids]
    for lead_id in ids:
        lead = await read_lead(pg, lead_id)
        assert lead.version == 2
        assert sum(text.endswith("→ WON (bulk)") for text in history(lead.notes)) == 1


# --- 4. concurrent POST /users with one email ---------------------------------------------------

SAME_EMAIL_REQUESTS = 4


async def waiting_inserts(watcher: Any, database: str) -> int:
    """How many sessions wait for a lock at an INSERT into users. (The watcher is outside any
    transaction: inside one, pg_stat_activity would be a snapshot that never changes.)"""
    return int(
        await watcher.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 "
            "AND wait_event_type = 'Lock' AND query ILIKE 'INSERT INTO users%'",
            database,
        )
    )


async def until_all_wait(watcher: Any, database: str, requests: list[asyncio.Task]) -> str | None:
    """None once every request waits at its INSERT; else what went wrong. (Within the
    statement timeout, after which the waiting INSERTs are cancelled.)"""
    deadline = time.monotonic() + 10
    while await waiting_inserts(watcher, database) < len(requests):
        done = [task for task in requests if task.done()]
        if done:
            return "requests finished before all of them reached their INSERT: " + "; ".join(
                repr(task.exception())
                if task.exception()
                else f"{task.result().status_code} {task.result().text}"
                for task in done
            )
        if time.monotonic() > deadline:
            return "the requests did not all reach their INSERT within 10 s"
        await asyncio.sleep(0.05)
    return None


@postgres_only
async def test_concurrent_user_creations_with_one_email_make_one_user(
    pg: ThrowAwayDatabase,
) -> None:
    """Every request passes the "is the email taken?" check before any of them inserts (the
    users table is held in SHARE ROW EXCLUSIVE mode, which lets reads through and makes inserts
    wait, until all of them wait there): the unique index decides, and the losers must hear
    409 "duplicate", not a 500 or a generic conflict."""
    import asyncpg

    settings = engine_settings(pg.url, pool_size=SAME_EMAIL_REQUESTS + 2)
    with use_settings(settings):
        engine = create_engine(pg.url, settings=settings)
        app = create_app(engine=engine)
        token = token_for(settings, pg.admin_id, session=pg.admin_session)
        headers = {"Authorization": f"Bearer {token}"}
        email = f"twin-{secrets.token_hex(4)}@concurrency.example.com"
        body = {"email": email, "full_name": "Twin", "password": "a long passphrase"}
        url = make_url(pg.url)
        plain_url = url.set(drivername="postgresql").render_as_string(hide_password=False)
        gate = await asyncpg.connect(plain_url)
        watcher = await asyncpg.connect(plain_url)
        try:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://testserver"
            ) as client:
                held = gate.transaction()
                await held.start()
                await gate.execute("LOCK TABLE users IN SHARE ROW EXCLUSIVE MODE")
                requests: list[asyncio.Task] = []
                try:
                    requests = [
                        asyncio.create_task(
                            client.post("/api/v1/users", headers=headers, json=body)
                        )
                        for _ in range(SAME_EMAIL_REQUESTS)
                    ]
                    problem = await until_all_wait(watcher, str(url.database), requests)
                finally:
                    await held.rollback()
                    async with asyncio.timeout(CALLS_SECONDS):
                        outcomes = await asyncio.gather(*requests, return_exceptions=True)
        finally:
            await gate.close()
            await watcher.close()
            await engine.dispose()

    assert problem is None, problem
    assert not failures(outcomes), failures(outcomes)
    responses: list[httpx.Response] = outcomes
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201] + [409] * (SAME_EMAIL_REQUESTS - 1), [
        f"{r.status_code} {r.text}" for r in responses
    ]
    for response in responses:
        if response.status_code == 409:
            assert response.json()["code"] == "duplicate", response.text
    async with pg.sessions() as session:
        count = await session.scalar(select(func.count()).where(User.email == email))
    assert count == 1


# --- 5. SQLite: concurrent writers do not hit "database is locked" ------------------------------

SQLITE_EACH = 10


async def test_sqlite_server_takes_twenty_concurrent_writes(
    sqlite_server: Server, tmp_path: Path
) -> None:
    async with http_client(sqlite_server) as client:
        headers = await log_in(client)
        created = await client.post(
            "/api/v1/leads",
            headers=headers,
            json={"first_name": "Ada", "last_name": "Lovelace", "email": "ada@engine.example"},
        )
        assert created.status_code == 201, created.text
        lead_id = created.json()["id"]
        names = [f"Concurrent{i:02d}" for i in range(SQLITE_EACH)]
        texts = [f"sqlite note {i:02d}" for i in range(SQLITE_EACH)]
        writes = [
            client.post(
                "/api/v1/leads",
                headers=headers,
                json={"first_name": name, "last_name": "Writer", "email": f"{name}@example.com"},
            )
            for name in names
        ] + [
            client.post(f"/api/v1/leads/{lead_id}/notes", headers=headers, json={"text": text})
            for text in texts
        ]
        rng = random.Random()
        rng.shuffle(writes)

        responses = await asyncio.gather(*writes)

    bad = [r for r in responses if not 200 <= r.status_code < 300]
    assert not bad, describe(bad, sqlite_server)
    output = sqlite_server.output()
    assert "database is locked" not in output, output
    assert "Traceback" not in output, output

    database = tmp_path / "crm.db"
    stored = {row[0] for row in sqlite_rows(database, "SELECT first_name FROM leads")}
    assert stored == {"Ada", *names}
    [(notes,)] = sqlite_rows(database, f"SELECT notes FROM leads WHERE id = {int(lead_id)}")
    counts = Counter(history(notes))
    lost = [t for t in texts if counts[t] != 1]
    assert not lost, f"lost or doubled: {lost}\n{notes}"


# --- merges racing for the same lead ------------------------------------------------------------


def merging(survivor: int, merged: list[int], admin_id: int) -> Callable[[AsyncSession], Any]:
    return lambda session: LeadMerges.merge(session, survivor, merged, user_id=admin_id)


@postgres_only
async def test_concurrent_merges_of_one_lead_let_exactly_one_take_it(
    pg: ThrowAwayDatabase,
) -> None:
    shared = (await new_lead(pg, email="shared@merge.example.com")).id
    survivors = [(await new_lead(pg, email=f"s{n}@merge.example.com")).id for n in range(8)]

    calls = [merging(survivor, [shared], pg.admin_id) for survivor in survivors]
    results = await run_together(pg.url, calls, seconds=CALLS_SECONDS)

    won = [s for s, r in zip(survivors, results, strict=True) if not isinstance(r, BaseException)]
    assert len(won) == 1, results
    refused = [r for r in results if isinstance(r, BaseException)]
    assert all(isinstance(r, ConflictException) for r in refused), refused
    assert (await read_lead(pg, shared)).merged_into_id == won[0]
    for survivor in survivors:
        if survivor not in won:
            assert (await read_lead(pg, survivor)).version == 1


@postgres_only
async def test_two_leads_merged_into_each_other_at_once_end_as_one_merge(
    pg: ThrowAwayDatabase,
) -> None:
    """Both calls lock the two leads in id order, so they queue instead of deadlocking, and
    the second finds its other lead archived by the first."""
    a = (await new_lead(pg, email="a@cross.example.com")).id
    b = (await new_lead(pg, email="b@cross.example.com")).id

    calls = [merging(a, [b], pg.admin_id), merging(b, [a], pg.admin_id)]
    results = await run_together(pg.url, calls, seconds=CALLS_SECONDS)

    assert sum(not isinstance(r, BaseException) for r in results) == 1, results
    assert sum(isinstance(r, ConflictException) for r in results) == 1, results
    merged_into = {(await read_lead(pg, i)).merged_into_id for i in (a, b)}
    assert merged_into in ({None, a}, {None, b})
