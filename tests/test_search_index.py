"""Search stays right as leads change. On SQLite it is answered from the FTS5 trigram index
`leads_search` (app/models/lead_search.py), which triggers on `leads` keep up to date; on
PostgreSQL the same searches use pg_trgm. Every behaviour here holds on both."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import delete, inspect, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.database import alembic_config, create_engine, create_session_factory, upgrade_database
from app.models import Lead
from app.schemas.filters import LeadFilters
from app.services import LeadService
from app.services.lead_filters import lead_conditions
from tests.helpers import ON_POSTGRES, LeadFactory, postgres_only
from tests.support import postgres_url, throwaway_database

REVISION_BEFORE_SEARCH_INDEX = "5c2e8f1a9d47"


async def found(db: AsyncSession, term: str) -> list[int]:
    """Ids of the leads `search=term` finds (sorted), checking the total agrees."""
    leads, total = await LeadService.get_leads(db, limit=1000, search=term)
    assert total == len(leads)
    return sorted(lead.id for lead in leads)


async def test_a_renamed_lead_is_found_by_its_new_name_and_not_its_old_one(
    db: AsyncSession, make_lead: LeadFactory
) -> None:
    lead = await make_lead(first_name="Ophelia", last_name="Marsh")

    await db.execute(update(Lead).where(Lead.id == lead.id).values(first_name="Octavia"))

    assert await found(db, "octavia marsh") == [lead.id]
    assert await found(db, "ophelia") == []


async def test_a_lead_whose_email_is_removed_is_no_longer_found_by_it(
    db: AsyncSession, make_lead: LeadFactory
) -> None:
    lead = await make_lead(email="quill@inkwell.example", phone="+15550009999")

    await db.execute(update(Lead).where(Lead.id == lead.id).values(email=None))

    assert await found(db, "inkwell") == []
    assert await found(db, "5550009999") == [lead.id]


async def test_a_change_outside_the_searched_fields_leaves_the_lead_found_once(
    db: AsyncSession, make_lead: LeadFactory
) -> None:
    lead = await make_lead(first_name="Perpetua")

    await db.execute(update(Lead).where(Lead.id == lead.id).values(notes="called", call_attempts=1))

    assert await found(db, "perpetua") == [lead.id]


async def test_a_two_letter_term_matches_inside_any_field(
    db: AsyncSession, make_lead: LeadFactory
) -> None:
    # Too short for a trigram: SQLite answers it by reading the leads, with the same result.
    lead = await make_lead(first_name="Qzora")
    await make_lead(first_name="Zack")

    assert await found(db, "QZ") == [lead.id]


async def test_a_double_quote_in_the_term_matches_literally(
    db: AsyncSession, make_lead: LeadFactory
) -> None:
    lead = await make_lead(company='Say "Hello" Ltd')

    assert await found(db, 'say "hello"') == [lead.id]
    assert await found(db, '"hello" ltd') == [lead.id]
    assert await found(db, 'say "hellx') == []


@pytest.mark.parametrize("term", ["wren OR zzz", "wre*", "wren NOT finch", "first_name: wren"])
async def test_full_text_query_syntax_in_a_term_is_literal_text(
    db: AsyncSession, make_lead: LeadFactory, term: str
) -> None:
    await make_lead(first_name="Wren", last_name="Finch")

    assert await found(db, term) == []


@pytest.mark.skipif(ON_POSTGRES, reason="SQLite's index (PostgreSQL: test_postgres_indexes.py)")
async def test_on_sqlite_search_reads_the_trigram_index_not_every_lead(db: AsyncSession) -> None:
    query = select(Lead.id).where(*lead_conditions(LeadFilters.from_python(search="marsh")))
    compiled = query.compile(bind=db.get_bind())
    params = tuple(compiled.params[name] for name in compiled.positiontup or ())
    conn = await db.connection()
    rows = await conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled.string}", params)
    plan = [row[3] for row in rows]

    assert any(line.startswith("SCAN leads_search VIRTUAL TABLE") for line in plan), plan
    assert not any(line.split()[:2] == ["SCAN", "leads"] for line in plan), plan


@pytest.mark.skipif(ON_POSTGRES, reason="SQLite's index")
async def test_on_sqlite_a_deleted_lead_leaves_nothing_in_the_index(
    db: AsyncSession, make_lead: LeadFactory
) -> None:
    # Ids are never reused (AUTOINCREMENT), so a stale entry would find nothing; it would only
    # grow the index for ever. Hence the index itself is asked.
    lead = await make_lead(company="Vanishing Acts Ltd")
    indexed = text("SELECT count(*) FROM leads_search WHERE leads_search MATCH '\"vanishing\"'")
    assert await db.scalar(indexed) == 1

    await db.execute(delete(Lead).where(Lead.id == lead.id))

    assert await db.scalar(indexed) == 0


# --- the migration ------------------------------------------------------------------------------

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql", marks=postgres_only),
]


@pytest.fixture(params=BACKENDS)
async def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / f'search_{secrets.token_hex(4)}.db'}"
        return
    async with throwaway_database("crm_search_index_migration") as name:
        yield postgres_url(name)


async def insert_lead_by_sql(session: AsyncSession, first_name: str) -> int:
    sqlite = session.get_bind().dialect.name == "sqlite"
    now = "'2026-01-01 00:00:00.000000'" if sqlite else "now()"
    no_tags = "'[]'" if sqlite else "'{}'"
    result = await session.execute(
        text(
            "INSERT INTO leads (first_name, last_name, email, source, status, lead_score, "
            "score_is_manual, tags, call_attempts, created_at, updated_at) VALUES "
            f"(:first, 'Oldrow', 'old@example.com', 'WEBSITE', 'NEW', 10, false, {no_tags}, 0, "
            f"{now}, {now}) RETURNING id"
        ),
        {"first": first_name},
    )
    return int(result.scalar_one())


async def test_leads_written_before_the_migration_are_found_after_it(
    empty_database: str,
) -> None:
    engine = create_engine(empty_database)
    try:
        await upgrade_database(engine, REVISION_BEFORE_SEARCH_INDEX)
        sessions = create_session_factory(engine)
        async with sessions() as session, session.begin():
            old = await insert_lead_by_sql(session, "Barnaby")

        await upgrade_database(engine)

        async with sessions() as session, session.begin():
            new = await insert_lead_by_sql(session, "Barnabas")
            assert await found(session, "barnab") == [old, new]
    finally:
        await engine.dispose()


async def test_the_downgrade_removes_the_index_and_its_triggers(empty_database: str) -> None:
    engine = create_engine(empty_database)
    try:
        await upgrade_database(engine)
        url = engine.url.render_as_string(hide_password=False)
        await asyncio.to_thread(
            command.downgrade, alembic_config(url), REVISION_BEFORE_SEARCH_INDEX
        )
        async with engine.connect() as conn:
            tables = await conn.run_sync(lambda sync: inspect(sync).get_table_names())
            assert not [name for name in tables if name.startswith("leads_search")]
            if conn.dialect.name == "sqlite":
                triggers = await conn.execute(
                    text("SELECT name FROM sqlite_master WHERE name LIKE 'leads_search%'")
                )
                assert triggers.all() == []
    finally:
        await engine.dispose()
