"""On PostgreSQL, substring search and tag filters are answered from their GIN indexes, not by
reading the whole table."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Lead
from app.schemas.filters import LeadFilters
from app.services.lead_filters import lead_conditions
from app.services.lead_queries import median_days_to_won
from tests.helpers import postgres_only

pytestmark = postgres_only


async def plan_of(db: AsyncSession, query: Any) -> str:
    compiled = query.compile(bind=db.get_bind())
    params = tuple(compiled.params[name] for name in compiled.positiontup or ())
    conn = await db.connection()
    rows = await conn.exec_driver_sql(f"EXPLAIN {compiled.string}", params)
    return "\n".join(row[0] for row in rows)


ROWS = 60_000


async def fill_leads(db: AsyncSession) -> None:
    """A table big enough that a scan is clearly the expensive plan (inside the test's
    transaction, so it is rolled back afterwards)."""
    await db.execute(
        text(
            """
            INSERT INTO leads (first_name, last_name, email, phone, company, source, status,
                               lead_score, score_is_manual, tags, call_attempts, created_at,
                               updated_at, status_changed_at)
            SELECT 'First' || n, 'Last' || md5(n::text), 'person' || n || '@example.com',
                   '+1555' || lpad(n::text, 7, '0'), 'Company ' || (n % 5000), 'WEBSITE',
                   CASE WHEN n % 16 = 0 THEN 'WON' ELSE 'NEW' END,
                   50, false,
                   ARRAY['tag' || (n % 40), 'tag' || (n % 7 + 100)]::varchar(50)[],
                   0, now(), now(), now() + n * interval '1 minute'
            FROM generate_series(1, :rows) AS n
            """
        ),
        {"rows": ROWS},
    )
    await db.execute(text("ANALYZE leads"))


async def plan_for(db: AsyncSession, **filters: Any) -> str:
    """The plan of the count behind a page's `total`, which must visit every match."""
    where = lead_conditions(LeadFilters.from_python(**filters))
    return await plan_of(db, select(func.count()).select_from(Lead).where(*where))


async def test_search_uses_the_trigram_index(db: AsyncSession) -> None:
    await fill_leads(db)
    plan = await plan_for(db, search="5d41402abc")  # a fragment of one md5 last name
    assert "ix_leads_search_trgm" in plan, plan
    assert "Seq Scan" not in plan, plan


async def test_search_by_phone_digits_typed_with_separators_uses_the_trigram_index(
    db: AsyncSession,
) -> None:
    await fill_leads(db)
    plan = await plan_for(db, search="+1 555 004-21")
    assert "ix_leads_search_trgm" in plan, plan
    assert "Seq Scan" not in plan, plan


async def test_any_of_these_tags_uses_the_tag_index(db: AsyncSession) -> None:
    await fill_leads(db)
    plan = await plan_for(db, tags=["TAG3", "missing-tag"])
    assert "ix_leads_tags_gin" in plan, plan
    assert "Seq Scan" not in plan, plan


async def test_the_median_days_to_won_reads_only_the_won_duration_index(
    db: AsyncSession,
) -> None:
    await fill_leads(db)
    plan = await plan_of(db, select(median_days_to_won(None)))
    assert "Index Only Scan using ix_leads_won_duration on leads" in plan, plan
    assert "Seq Scan" not in plan and "Sort" not in plan, plan


async def test_an_agents_median_days_to_won_reads_their_part_of_the_index(
    db: AsyncSession,
) -> None:
    await fill_leads(db)
    plan = await plan_of(db, select(median_days_to_won(7)))
    assert "ix_leads_won_duration_by_assignee" in plan, plan
    assert "Seq Scan" not in plan and "Sort" not in plan, plan
