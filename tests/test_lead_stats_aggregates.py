"""The `lead_stats` aggregates stay equal to a fresh GROUP BY over `leads`, whatever writes them.

The triggers (app/models/lead_stats.py, and the migration's frozen copy) are the only thing
keeping the table right, so every test here writes leads some way (service calls, raw SQL,
foreign-key actions, COPY seeding, many writers at once) and compares the table with the truth:
the live leads grouped by (assignee, status, source), computed with the model's own hot-lead
rule (`Lead.is_hot_lead`), not the triggers' SQL.

Most tests run on both databases through the `db` fixture. The concurrent writers, TRUNCATE and
the large COPY seed need committed data or a database of their own: they use a throw-away
PostgreSQL database (dropped at the end), as tests/test_concurrency.py does.
"""

from __future__ import annotations

import asyncio
import random
import re
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from sqlalchemy import case, func, inspect, literal_column, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from app.database import (
    alembic_config,
    create_engine,
    create_session_factory,
    upgrade_database,
)
from app.models import Base, Lead, LeadSource, LeadStats, LeadStatus, User
from app.models.base import MIGRATION_ONLY_TRIGGERS
from app.seed import seed_demo
from app.services import LeadService
from tests.helpers import ON_POSTGRES, PASSWORD_HASH, LeadFactory, UserFactory, postgres_only
from tests.support import own_engine, postgres_url, run_together, throwaway_database

# (assignee or 0, status, source) -> (count, score sum, hot count), all-zero keys left out.
Figures = dict[tuple[int, str, str], tuple[int, int, int]]

STATUSES = list(LeadStatus)
SOURCES = list(LeadSource)
REVISION_BEFORE_LEAD_STATS = "8e41b7c2d903"


# --- the truth and the aggregates ---------------------------------------------------------------


async def truth(db: AsyncSession | AsyncConnection) -> Figures:
    """The figures counted from the leads themselves, the way the statistics used to be."""
    assignee = func.coalesce(Lead.assigned_to, literal_column("0"))
    rows = await db.execute(
        select(
            assignee,
            Lead.status,
            Lead.source,
            func.count(),
            func.sum(Lead.lead_score),
            func.sum(case((Lead.is_hot_lead, 1), else_=0)),
        )
        .where(Lead.archived_at.is_(None))
        .group_by(assignee, Lead.status, Lead.source)
    )
    return {
        (int(assignee), LeadStatus(status).value, LeadSource(source).value): (
            int(count),
            int(scores),
            int(hot),
        )
        for assignee, status, source, count, scores, hot in rows
    }


async def aggregates(db: AsyncSession | AsyncConnection) -> Figures:
    """What `lead_stats` holds (keys whose figures fell to zero may stay; they say nothing)."""
    rows = await db.execute(
        select(
            LeadStats.assignee_id,
            LeadStats.status,
            LeadStats.source,
            LeadStats.lead_count,
            LeadStats.score_sum,
            LeadStats.hot_count,
        )
    )
    return {
        (assignee, status, source): (count, scores, hot)
        for assignee, status, source, count, scores, hot in rows
        if (count, scores, hot) != (0, 0, 0)
    }


async def assert_aggregates_are_true(db: AsyncSession | AsyncConnection, context: str = "") -> None:
    expected, actual = await truth(db), await aggregates(db)
    if actual != expected:
        wrong = {
            key: (actual.get(key), expected.get(key))
            for key in sorted({*actual, *expected})
            if actual.get(key) != expected.get(key)
        }
        pytest.fail(f"lead_stats differs from the leads {context}: (stored, true) {wrong}")


def ratio(part: int, whole: int, scale: int) -> float:
    if not whole:
        return 0.0
    value = Decimal(part) * scale / Decimal(whole)
    return float(value.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def summed(statistics: dict[str, Any]) -> dict[str, Any]:
    """The figures `lead_stats` keeps (the median days to WON is read from the leads)."""
    return {k: v for k, v in statistics.items() if k != "median_days_to_won"}


def expected_statistics(figures: Figures, assignee: int | None = None) -> dict[str, Any]:
    """The statistics dict for everyone (None) or one assignee, from true figures."""
    by_status = {s.value: 0 for s in LeadStatus}
    by_source = {s.value: 0 for s in LeadSource}
    total = scores = hot = 0
    for (owner, status, source), (count, score_sum, hot_count) in figures.items():
        if assignee is not None and owner != assignee:
            continue
        by_status[status] += count
        by_source[source] += count
        total += count
        scores += score_sum
        hot += hot_count
    return {
        "total_leads": total,
        "leads_by_status": by_status,
        "leads_by_source": by_source,
        "average_lead_score": ratio(scores, total, 1),
        "hot_leads_count": hot,
        "conversion_rate": ratio(by_status["WON"], total, 100),
    }


async def lead_ids(db: AsyncSession, *, archived: bool) -> list[int]:
    condition = Lead.archived_at.is_not(None) if archived else Lead.archived_at.is_(None)
    return list(await db.scalars(select(Lead.id).where(condition).order_by(Lead.id)))


# --- service calls ------------------------------------------------------------------------------


async def test_aggregates_equal_a_fresh_group_by_after_a_random_mix_of_service_calls(
    db: AsyncSession,
    make_lead: LeadFactory,
    superuser: User,
    agent: User,
    other_agent: User,
) -> None:
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    owners: list[User | None] = [agent, other_agent, None]
    boss = superuser.id

    def random_lead_fields() -> dict[str, Any]:
        fields: dict[str, Any] = {"status": rng.choice(STATUSES), "source": rng.choice(SOURCES)}
        if rng.random() < 0.7:
            fields["lead_score"] = rng.choice([0, 50, 79, 80, 81, 95, 100])
        return fields

    async def create() -> str:
        owner = rng.choice(owners)
        lead = await make_lead(owner=owner, **random_lead_fields())
        return f"create {lead.id}"

    async def agent_creates() -> str:
        lead = await make_lead(by=agent, **random_lead_fields())
        return f"agent creates {lead.id}"

    async def update(ids: list[int]) -> str:
        lead_id = rng.choice(ids)
        data = {k: v for k, v in random_lead_fields().items() if rng.random() < 0.6}
        if rng.random() < 0.3:
            data["lead_score"] = None  # back to automatic scoring
        if rng.random() < 0.3:
            owner = rng.choice(owners)
            data["assigned_to"] = owner.id if owner else None
        if rng.random() < 0.2:
            data["company"] = rng.choice([None, "Initech", "Acme Corp"])  # re-scores
        await LeadService.update_lead(db, lead_id, data, user_id=boss)
        return f"update {lead_id} {data}"

    async def archive(ids: list[int]) -> str:
        lead_id = rng.choice(ids)
        await LeadService.delete_lead(db, lead_id, boss)
        return f"archive {lead_id}"

    async def restore(ids: list[int]) -> str:
        lead_id = rng.choice(ids)
        await LeadService.restore_lead(db, lead_id, boss)
        return f"restore {lead_id}"

    async def hard_delete(ids: list[int]) -> str:
        lead_id = rng.choice(ids)
        await LeadService.delete_lead(db, lead_id, boss, hard_delete=True)
        return f"hard delete {lead_id}"

    async def bulk_status(ids: list[int]) -> str:
        chosen = rng.sample(ids, min(len(ids), rng.randint(1, 6)))
        status = rng.choice(STATUSES)
        await LeadService.bulk_update_status(db, chosen, status, boss)
        return f"bulk status {chosen} -> {status}"

    async def assign(ids: list[int]) -> str:
        chosen = rng.sample(ids, min(len(ids), rng.randint(1, 6)))
        owner = rng.choice([agent, other_agent])
        await LeadService.assign_leads(db, chosen, owner.id, boss)
        return f"assign {chosen} -> {owner.id}"

    async def note(ids: list[int]) -> str:
        lead_id = rng.choice(ids)
        await LeadService.add_lead_note(db, lead_id, "Spoke to them.", boss)
        return f"note {lead_id}"

    async def call(ids: list[int]) -> str:
        lead_id = rng.choice(ids)
        await LeadService.record_call_attempt(db, lead_id, boss)
        return f"call {lead_id}"

    for _ in range(12):
        await create()
    on_live = [update, update, update, archive, hard_delete, bulk_status, assign, note, call]
    on_archived = [restore, hard_delete]
    done: list[str] = []
    for _ in range(150):
        live = await lead_ids(db, archived=False)
        archived = await lead_ids(db, archived=True)
        choices: list[tuple[Callable[..., Awaitable[str]], list[int] | None]] = [
            (create, None),
            (agent_creates, None),
        ]
        choices += [(op, live) for op in on_live if live]
        choices += [(op, archived) for op in on_archived if archived]
        op, ids = rng.choice(choices)
        done.append(await (op() if ids is None else op(ids)))
        await assert_aggregates_are_true(db, f"(seed {seed}) after: {'; '.join(done[-5:])}")

    kinds = {step.split(" ")[0] for step in done}
    assert {"update", "archive", "restore", "hard", "bulk", "assign"} <= kinds, (seed, kinds)


async def test_statistics_for_an_agent_count_only_their_leads(
    db: AsyncSession,
    make_lead: LeadFactory,
    superuser: User,
    agent: User,
    other_agent: User,
) -> None:
    for owner, status, score in [
        (agent, LeadStatus.NEW, 90),
        (agent, LeadStatus.WON, 60),
        (other_agent, LeadStatus.NEW, 85),
        (other_agent, LeadStatus.QUALIFIED, 40),
        (None, LeadStatus.WON, 99),
    ]:
        await make_lead(owner=owner, status=status, lead_score=score)
    moved = await make_lead(owner=agent, status=LeadStatus.CONTACTED, lead_score=81)
    await LeadService.assign_leads(db, [moved.id], other_agent.id, superuser.id)

    figures = await truth(db)
    mine = await LeadService.get_lead_statistics(db, user_id=agent.id)
    theirs = await LeadService.get_lead_statistics(db, user_id=other_agent.id)
    everyone = await LeadService.get_lead_statistics(db, user_id=superuser.id)

    assert summed(mine) == expected_statistics(figures, agent.id)
    assert (mine["total_leads"], mine["hot_leads_count"]) == (2, 1)
    assert summed(theirs) == expected_statistics(figures, other_agent.id)
    assert (theirs["total_leads"], theirs["hot_leads_count"]) == (3, 2)
    assert summed(everyone) == expected_statistics(figures)
    assert everyone["total_leads"] == 6  # the unassigned lead too


# --- every other write path --------------------------------------------------------------------


async def test_raw_sql_inserts_updates_and_deletes_keep_the_aggregates_right(
    db: AsyncSession, make_lead: LeadFactory, agent: User, other_agent: User
) -> None:
    for n in range(12):
        await make_lead(
            owner=[agent, other_agent, None][n % 3],
            status=STATUSES[n % len(STATUSES)],
            source=SOURCES[n % len(SOURCES)],
            lead_score=50 + 4 * n,
        )
    statements = [
        ("UPDATE leads SET status = 'WON' WHERE lead_score >= 70", {}),
        ("UPDATE leads SET assigned_to = NULL WHERE assigned_to = :a", {"a": agent.id}),
        ("UPDATE leads SET assigned_to = :a WHERE assigned_to IS NULL", {"a": other_agent.id}),
        ("UPDATE leads SET lead_score = 100 - lead_score, source = 'REFERRAL'", {}),
        ("UPDATE leads SET archived_at = updated_at WHERE id % 3 = 0", {}),
        ("UPDATE leads SET status = 'CALLBACK', lead_score = 85 WHERE id % 3 = 0", {}),
        ("UPDATE leads SET archived_at = NULL WHERE id % 2 = 0", {}),
        (
            "INSERT INTO leads (first_name, last_name, email, phone, company, job_title, "
            "source, status, assigned_to, lead_score, score_is_manual, tags, call_attempts, "
            "created_at, updated_at, status_changed_at, archived_at) "
            "SELECT first_name, last_name, email, phone, company, job_title, source, status, "
            "assigned_to, lead_score, score_is_manual, tags, call_attempts, created_at, "
            "updated_at, status_changed_at, archived_at FROM leads",
            {},
        ),
        ("DELETE FROM leads WHERE status = 'WON'", {}),
        ("UPDATE leads SET notes = 'rewritten', call_attempts = call_attempts + 1", {}),
        ("DELETE FROM leads WHERE id % 2 = 1", {}),
    ]
    for statement, params in statements:
        await db.execute(text(statement), params)
        await assert_aggregates_are_true(db, f"after {statement}")
    assert await truth(db), "the statements left no live lead to compare"


async def test_deleting_a_user_moves_their_leads_to_unassigned(
    db: AsyncSession, make_lead: LeadFactory, make_user: UserFactory
) -> None:
    """The foreign key's ON DELETE SET NULL is an UPDATE the triggers see as well."""
    leaving = await make_user()
    for status in (LeadStatus.NEW, LeadStatus.WON, LeadStatus.NEW):
        await make_lead(owner=leaving, status=status, lead_score=90)

    await db.execute(text("DELETE FROM users WHERE id = :id"), {"id": leaving.id})

    await assert_aggregates_are_true(db)
    assert not [key for key in await aggregates(db) if key[0] == leaving.id]
    assert (await aggregates(db))[(0, "NEW", "OTHER")] == (2, 180, 2)


async def test_changes_that_move_no_figure_write_no_aggregate_row(
    db: AsyncSession, make_lead: LeadFactory, superuser: User
) -> None:
    """Notes, calls and other fields leave `lead_stats` untouched: no write, and on PostgreSQL
    no row lock that concurrent writers of the same agent would queue behind."""
    lead = await make_lead(lead_score=90, job_title="CTO")
    postgres = db.get_bind().dialect.name == "postgresql"

    async def stamp() -> Any:
        if postgres:
            rows = await db.execute(text("SELECT xmin::text, * FROM lead_stats ORDER BY 2, 3, 4"))
            return rows.all()
        # SQLite: the rows changed on this connection so far, triggers' writes included.
        return await db.scalar(text("SELECT total_changes()"))

    before = await stamp()
    await LeadService.add_lead_note(db, lead.id, "Left a voicemail.", superuser.id)
    await LeadService.record_call_attempt(db, lead.id, superuser.id)
    await LeadService.update_lead(db, lead.id, {"job_title": "CEO"}, user_id=superuser.id)
    after = await stamp()

    if postgres:
        assert after == before
    else:
        assert after == before + 6  # the three lead rows and their three events, nothing else
    await LeadService.update_lead(db, lead.id, {"lead_score": 50}, user_id=superuser.id)
    assert await stamp() != after  # a real change does write
    await assert_aggregates_are_true(db)


async def test_seeding_demo_leads_keeps_the_aggregates_right(db: AsyncSession) -> None:
    """seed-demo writes with COPY on PostgreSQL and executemany INSERTs on SQLite."""
    inserted, _emails = await seed_demo(db, 300, agents=3, seed=7)

    assert inserted == 300
    await assert_aggregates_are_true(db)
    assert sum(count for count, _, _ in (await aggregates(db)).values()) == 300


@postgres_only
async def test_truncating_the_leads_empties_the_aggregates(
    db: AsyncSession, make_lead: LeadFactory, agent: User
) -> None:
    await make_lead(owner=agent, lead_score=90)
    await make_lead(lead_score=10)

    await db.execute(text("TRUNCATE leads"))

    assert await aggregates(db) == {}
    await make_lead(owner=agent, lead_score=95)
    await assert_aggregates_are_true(db)


# --- the migration ------------------------------------------------------------------------------

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql", marks=postgres_only),
]


@pytest.fixture(params=BACKENDS)
async def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """The URL of an empty database of the test's kind; PostgreSQL ones are dropped after."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / f'stats_{secrets.token_hex(4)}.db'}"
        return
    async with throwaway_database("crm_lead_stats_migration") as name:
        yield postgres_url(name)


async def triggers(conn: AsyncConnection) -> dict[str, str]:
    """Every lead_stats trigger (and on PostgreSQL its function) as SQL, whitespace collapsed."""
    if conn.dialect.name == "postgresql":
        query = (
            "SELECT tgname, pg_get_triggerdef(oid) FROM pg_trigger "
            "WHERE tgrelid = to_regclass('leads') AND NOT tgisinternal "
            "UNION ALL SELECT proname, prosrc FROM pg_proc "
            "WHERE proname = 'lead_stats_apply_changes'"
        )
    else:
        query = "SELECT name, sql FROM sqlite_master WHERE type = 'trigger'"
    rows = await conn.execute(text(query))
    return {name: re.sub(r"\s+", " ", sql).strip() for name, sql in rows}


async def insert_leads_by_sql(conn: AsyncConnection, users: int, leads: int) -> None:
    """Users and leads written without the ORM, as an older version of the app would have."""
    sqlite = conn.dialect.name == "sqlite"
    now = "'2026-01-01 00:00:00.000000'" if sqlite else "now()"
    no_tags = "'[]'" if sqlite else "'{}'"
    first = int(await conn.scalar(text("SELECT coalesce(max(id), 0) FROM users")) or 0) + 1
    for n in range(first, first + users):
        await conn.execute(
            text(
                "INSERT INTO users (email, full_name, hashed_password, is_active, is_superuser, "
                f"created_at, updated_at) VALUES (:email, 'U', :hash, true, false, {now}, {now})"
            ),
            {"email": f"u{n}@example.com", "hash": PASSWORD_HASH},
        )
    user_ids = list(await conn.scalars(text("SELECT id FROM users")))
    rng = random.Random(5)
    for n in range(leads):
        await conn.execute(
            text(
                "INSERT INTO leads (first_name, last_name, email, source, status, assigned_to, "
                "lead_score, score_is_manual, tags, call_attempts, created_at, updated_at, "
                "archived_at) VALUES ('A', 'B', 'a@example.com', :source, :status, :owner, "
                f":score, false, {no_tags}, 0, {now}, {now}, "
                f"CASE WHEN :archived THEN {now} END)"
            ),
            {
                "source": rng.choice(SOURCES).value,
                "status": rng.choice(STATUSES).value,
                "owner": rng.choice([None, *user_ids]),
                "score": rng.randint(0, 100),
                "archived": n % 7 == 0,
            },
        )


async def test_the_migration_backfills_existing_leads_and_its_downgrade_removes_everything(
    empty_database: str,
) -> None:
    engine = create_engine(empty_database)
    try:
        await upgrade_database(engine, REVISION_BEFORE_LEAD_STATS)
        async with engine.begin() as conn:
            await insert_leads_by_sql(conn, users=3, leads=200)

        await upgrade_database(engine)

        async with engine.begin() as conn:
            assert len(await aggregates(conn)) > 10
            await assert_aggregates_are_true(conn, "after the backfill")
            await insert_leads_by_sql(conn, users=0, leads=20)  # the triggers work at once
            await assert_aggregates_are_true(conn, "after inserts")

        url = engine.url.render_as_string(hide_password=False)
        await asyncio.to_thread(command.downgrade, alembic_config(url), REVISION_BEFORE_LEAD_STATS)
        async with engine.begin() as conn:
            assert await triggers(conn) == {}
            tables = await conn.run_sync(lambda sync: inspect(sync).get_table_names())
            assert "lead_stats" not in tables
            await conn.execute(text("UPDATE leads SET status = 'WON'"))  # no trigger left
    finally:
        await engine.dispose()


async def test_the_migration_and_the_models_build_the_same_triggers(
    empty_database: str,
) -> None:
    """The migration carries a frozen copy of the trigger SQL; create_all (the SQLite tests)
    uses the model's. They must not drift apart."""
    migrated = create_engine(empty_database)
    try:
        await upgrade_database(migrated)
        async with migrated.connect() as conn:
            from_migration = await triggers(conn)
        async with migrated.begin() as conn:  # now the same database from the models
            await conn.run_sync(Base.metadata.drop_all)
            await conn.execute(text("DROP TABLE alembic_version"))
            assert await triggers(conn) == {}
            await conn.run_sync(Base.metadata.create_all)
        async with migrated.connect() as conn:
            from_models = await triggers(conn)
    finally:
        await migrated.dispose()

    expected = {"lead_stats_after_insert", "lead_stats_after_update", "lead_stats_after_delete"}
    assert expected <= set(from_migration)
    shared = {k: v for k, v in from_migration.items() if k not in MIGRATION_ONLY_TRIGGERS}
    assert from_models == shared


# --- PostgreSQL: many writers at once, and a large COPY seed ------------------------------------

WRITERS = 24
ROUNDS = 3
AGENTS = 4
CALLS_SECONDS = 120.0


@dataclass
class SharedDatabase:
    url: str
    engine: AsyncEngine
    admin_id: int
    agent_ids: list[int]


@pytest.fixture(scope="module")
async def shared() -> AsyncIterator[SharedDatabase]:
    """A migrated database of this module's own, with a superuser and a few agents."""
    if not ON_POSTGRES:
        pytest.skip("needs TEST_DATABASE_URL (PostgreSQL)")
    async with throwaway_database("crm_lead_stats") as name:
        url = postgres_url(name)
        engine = own_engine(url, pool_size=5)
        try:
            await upgrade_database(engine)
            async with create_session_factory(engine)() as session:
                users = [
                    User(
                        email=f"stats{n}@example.com",
                        full_name=f"Stats {n}",
                        hashed_password=PASSWORD_HASH,
                        is_superuser=n == 0,
                    )
                    for n in range(AGENTS + 1)
                ]
                session.add_all(users)
                await session.commit()
                ids = [user.id for user in users]
            yield SharedDatabase(url, engine, ids[0], ids[1:])
        finally:
            await engine.dispose()


@postgres_only
async def test_concurrent_writers_leave_the_aggregates_exact(shared: SharedDatabase) -> None:
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    admin, agents = shared.admin_id, shared.agent_ids
    sessions = create_session_factory(shared.engine)

    def lead_data(n: int) -> dict[str, Any]:
        return {
            "first_name": "Ada",
            "last_name": f"Writer{n}",
            "email": f"ada{n}@example.com",
            "status": rng.choice(STATUSES),
            "source": rng.choice(SOURCES),
            "lead_score": rng.choice([40, 79, 80, 90]),
        }

    # Leads for the writers to change: a pool the updates, bulk calls and assignments share,
    # and one lead per archiving or deleting writer (an archived lead would make a bulk call
    # touching it fail, rightly).
    async with sessions() as session:
        pool = [
            (
                await LeadService.create_lead(
                    session, {**lead_data(n), "assigned_to": agents[n % AGENTS]}, admin
                )
            ).id
            for n in range(30)
        ]
        own = [
            (await LeadService.create_lead(session, lead_data(100 + n), admin)).id
            for n in range(WRITERS * ROUNDS)
        ]

    def call(i: int) -> Callable[[AsyncSession], Awaitable[Any]]:
        agent = agents[i % AGENTS]
        kind = i % 8
        if kind == 0:  # an agent creates a lead of their own
            data = lead_data(1000 + i)
            return lambda s: LeadService.create_lead(s, data, agent)
        if kind == 1:  # the boss creates one for an agent
            data = {**lead_data(1000 + i), "assigned_to": agent}
            return lambda s: LeadService.create_lead(s, data, admin)
        if kind == 2:
            lead_id = rng.choice(pool)
            data = {
                "status": rng.choice(STATUSES),
                "lead_score": rng.randint(0, 100),
                "assigned_to": rng.choice(agents),
            }
            return lambda s: LeadService.update_lead(s, lead_id, data, admin)
        if kind == 3:
            ids = rng.sample(pool, 6)
            status = rng.choice(STATUSES)
            return lambda s: LeadService.bulk_update_status(s, ids, status, admin)
        if kind == 4:
            ids = rng.sample(pool, 5)
            return lambda s: LeadService.assign_leads(s, ids, agent, admin)
        if kind == 5:
            lead_id = own.pop()
            return lambda s: LeadService.delete_lead(s, lead_id, admin)
        if kind == 6:
            lead_id = own.pop()
            return lambda s: LeadService.delete_lead(s, lead_id, admin, hard_delete=True)
        lead_id = rng.choice(pool)
        return lambda s: LeadService.add_lead_note(s, lead_id, "busy line", admin)

    for round_ in range(ROUNDS):
        results = await run_together(
            shared.url, [call(i) for i in range(WRITERS)], seconds=CALLS_SECONDS
        )

        failed = [f"call {n}: {r!r}" for n, r in enumerate(results) if isinstance(r, Exception)]
        assert not failed, f"seed {seed}, round {round_}: {failed}"
        async with shared.engine.connect() as conn:
            await assert_aggregates_are_true(conn, f"(seed {seed}, round {round_})")

    async with sessions() as session:
        figures = await truth(session)
        for agent in agents:
            stats = await LeadService.get_lead_statistics(session, user_id=agent)
            expected = expected_statistics(figures, agent)
            assert summed(stats) == expected, f"seed {seed}, agent {agent}"
        everyone = await LeadService.get_lead_statistics(session, user_id=admin)
        assert summed(everyone) == expected_statistics(figures), f"seed {seed}"


@postgres_only
async def test_a_large_copy_seed_with_index_rebuild_keeps_the_aggregates_right(
    shared: SharedDatabase,
) -> None:
    """20,000 leads: seed-demo's COPY drops and rebuilds the secondary indexes and VACUUMs;
    the statement-level trigger sees the whole COPY at once."""
    async with create_session_factory(shared.engine)() as session:
        before = await count_leads(session)
        inserted, _emails = await seed_demo(session, 20_000, agents=5, seed=11)

    assert inserted == 20_000
    async with shared.engine.connect() as conn:
        await assert_aggregates_are_true(conn)
        total = sum(count for count, _, _ in (await truth(conn)).values())
        assert total > before


async def count_leads(session: AsyncSession) -> int:
    return int(await session.scalar(select(func.count()).select_from(Lead)) or 0)
