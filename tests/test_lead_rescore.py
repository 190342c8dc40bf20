"""Rescoring (issue 17): `automatic_score_sql` gives what `explain_lead_score` gives, on the real
database, and `POST /leads/rescore` changes exactly the automatic scores the rules now put
otherwise, with a note line, an event and a new version each, in a fixed number of
statements."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import use_settings
from app.models import Lead, LeadEvent, LeadSource, LeadStatus, User
from app.services import LeadService
from app.services.lead_rescore import LeadRescore
from app.services.scoring import automatic_score_sql, explain_lead_score
from tests.helpers import LeadFactory, make_settings, sql_statements, stamp

API = "/api/v1"
LEADS = Lead.__table__

# The rules a test switches to: "gold" becomes a high-value tag, so leads tagged gold are worth
# 15 more than when they were scored.
GOLD_IS_HIGH_VALUE = {"high_value_tags": "gold"}

AWKWARD_EMAILS = [
    "ann@ACME.COM",  # upper case business domain
    "ann@GMail.Com",  # upper case free domain
    " ann@gmail.com ",  # spaces around
    "ann@ gmail.com",  # a space after the @
    "ann@gmail.com\t",  # a tab
    "ann@\u00a0gmail.com",  # a no-break space (str.strip() removes it)
    "ann@yahoo.com",
    "ann@gmail.com@acme.com",  # the last @ counts
    "ann@acme.com@gmail.com",
    "ann%@gmail.com",  # LIKE's wildcard in the local part
    "no-at-sign.example.com",
    "ann@",  # an empty domain is no free one
    "@gmail.com",
    "",
    None,
]
AWKWARD_COMPANIES = ["Acme", None, "", "   ", "\u00a0\t", " x "]
AWKWARD_TAGS = [[], ["vip"], ["other"], ["other", "enterprise"], ["gold"], ["vip", "gold"]]


def scoring_rows() -> list[dict[str, Any]]:
    """Every line of the points table (6 sources x company x business email x high-value tag:
    48 rows), then awkward emails, companies and tags."""
    rows = [
        {"source": source, "company": company, "email": email, "tags": tags}
        for source, company, email, tags in itertools.product(
            LeadSource,
            ["Acme", None],
            ["ann@acme.com", "ann@gmail.com"],
            [["vip"], ["other"]],
        )
    ]
    assert len(rows) == 48
    for email, company, tags in itertools.product(AWKWARD_EMAILS, AWKWARD_COMPANIES, AWKWARD_TAGS):
        rows.append(
            {"source": LeadSource.WEBSITE, "company": company, "email": email, "tags": tags}
        )
    return rows


async def insert_raw(db: AsyncSession, rows: list[dict[str, Any]]) -> list[int]:
    """The rows as stored values, as they are (no model validation: spaces stay), each with a
    phone so that a lead without an email may be stored; their ids in order."""
    now = datetime.now(UTC)
    ids = []
    for n, row in enumerate(rows):
        values = {
            "first_name": f"Raw{n}",
            "last_name": "Scored",
            "phone": f"+1555{n:07d}",
            "status": LeadStatus.NEW,
            "lead_score": 0,
            "score_is_manual": False,
            "call_attempts": 0,
            "created_at": now,
            "updated_at": now,
            **row,
        }
        ids.append(await db.scalar(insert(LEADS).values(values).returning(LEADS.c.id)))
    await db.commit()
    return ids


@pytest.mark.parametrize(
    "rules",
    [
        {},
        {"high_value_tags": "gold,other", "free_email_domains": "acme.com"},
        {"high_value_tags": "", "free_email_domains": ""},
    ],
    ids=["default_rules", "other_rules", "no_lists"],
)
async def test_the_sql_score_is_explain_lead_scores_for_every_line_of_the_table(
    db: AsyncSession, rules: dict[str, str]
) -> None:
    rows = scoring_rows()
    ids = await insert_raw(db, rows)
    with use_settings(make_settings(**rules)) as settings:
        scored = dict(
            (await db.execute(select(LEADS.c.id, automatic_score_sql()).order_by(LEADS.c.id))).all()
        )
        expected = [explain_lead_score(**row, settings=settings).score for row in rows]

    mismatches = [
        (row, scored[lead_id], want)
        for row, lead_id, want in zip(rows, ids, expected, strict=True)
        if scored[lead_id] != want
    ]
    assert mismatches == []
    assert {0, 100} & set(expected) or len(set(expected)) > 5  # the table really varies


# ---------------------------------------------------------------------------- the endpoint


async def scores(db: AsyncSession, *leads: Any) -> list[int]:
    rows = await db.execute(
        select(LEADS.c.id, LEADS.c.lead_score).where(LEADS.c.id.in_([lead.id for lead in leads]))
    )
    by_id = dict(rows.all())
    return [by_id[lead.id] for lead in leads]


async def state(db: AsyncSession) -> list[tuple[Any, ...]]:
    """Every lead's score, notes, version and updated_at, and the events' count."""
    rows = await db.execute(
        select(LEADS.c.id, LEADS.c.lead_score, LEADS.c.notes, LEADS.c.version).order_by(LEADS.c.id)
    )
    events = await db.scalars(select(LeadEvent.id).order_by(LeadEvent.id))
    return [*(tuple(row) for row in rows), ("events", len(list(events)))]


@pytest.fixture
async def gold_leads(
    db: AsyncSession, make_lead: LeadFactory, agent: User, superuser: User
) -> dict[str, int]:
    """Ids of leads scored under the default rules: gold ones (one with a manual score, one
    archived), and one tagged other."""
    leads = {
        "gold": (await make_lead(owner=agent, company="Acme", tags=["gold"])).id,  # 60
        "manual": (await make_lead(owner=agent, tags=["gold"], lead_score=30)).id,
        "plain": (await make_lead(owner=agent, tags=["other"])).id,  # 50
        "web_gold": (await make_lead(source=LeadSource.WEBSITE, tags=["gold"])).id,  # 65
        "archived": (await make_lead(tags=["gold"])).id,  # 50
    }
    await LeadService.delete_lead(db, leads["archived"], superuser.id)
    return leads


async def score_of(db: AsyncSession, lead_id: int) -> int:
    return int(await db.scalar(select(LEADS.c.lead_score).where(LEADS.c.id == lead_id)) or 0)


async def rescore(
    client: httpx.AsyncClient, headers: dict[str, str], body: dict[str, Any] | None = None
) -> httpx.Response:
    with use_settings(make_settings(**GOLD_IS_HIGH_VALUE)):
        return await client.post(f"{API}/leads/rescore", json=body or {}, headers=headers)


async def test_rescore_changes_the_automatic_scores_the_rules_now_put_otherwise(
    client: httpx.AsyncClient, db: AsyncSession, h: dict[str, str], gold_leads: dict[str, int]
) -> None:
    response = await rescore(client, h)

    assert response.status_code == 200, response.text
    assert response.json() == {
        "matched": 4,
        "changed": 2,
        "remaining": 0,
    }  # live: gold, manual, plain, web_gold
    assert await score_of(db, gold_leads["gold"]) == 75
    assert await score_of(db, gold_leads["web_gold"]) == 80
    assert await score_of(db, gold_leads["plain"]) == 50


async def test_rescore_leaves_manual_scores_alone(
    client: httpx.AsyncClient, db: AsyncSession, h: dict[str, str], gold_leads: dict[str, int]
) -> None:
    before = await state(db)

    await rescore(client, h)

    assert await score_of(db, gold_leads["manual"]) == 30
    manual = [row for row in before if row[0] == gold_leads["manual"]]
    assert [row for row in await state(db) if row[0] == gold_leads["manual"]] == manual


async def test_rescore_leaves_archived_leads_alone(
    client: httpx.AsyncClient, db: AsyncSession, h: dict[str, str], gold_leads: dict[str, int]
) -> None:
    await rescore(client, h)

    assert await score_of(db, gold_leads["archived"]) == 50


async def test_rescore_notes_each_change_and_records_its_event_and_version(
    client: httpx.AsyncClient,
    db: AsyncSession,
    h: dict[str, str],
    gold_leads: dict[str, int],
    superuser: User,
) -> None:
    lead_id = gold_leads["gold"]
    old = (await db.execute(select(LEADS).where(LEADS.c.id == lead_id))).mappings().one()

    await rescore(client, h)

    new = (await db.execute(select(LEADS).where(LEADS.c.id == lead_id))).mappings().one()
    line = f"{stamp(new['updated_at'])} user {superuser.id}: Score 60 → 75 (rescore)"
    assert new["notes"] == f"{old['notes']}\n{line}"
    assert new["version"] == old["version"] + 1
    assert new["updated_at"] > old["updated_at"]
    events = (
        await db.execute(
            select(LeadEvent).where(LeadEvent.lead_id == lead_id).order_by(LeadEvent.id)
        )
    ).scalars()
    last = list(events)[-1]
    assert (last.type, last.actor_id, last.lead_version) == (
        "lead.updated",
        superuser.id,
        new["version"],
    )
    assert last.changes == {"lead_score": {"old": 60, "new": 75}}
    unchanged = await db.scalars(
        select(LeadEvent.type).where(LeadEvent.lead_id == gold_leads["plain"])
    )
    assert list(unchanged) == ["lead.created"]


async def test_rescore_dry_run_changes_nothing_and_reports_the_same_counts(
    client: httpx.AsyncClient, db: AsyncSession, h: dict[str, str], gold_leads: dict[str, int]
) -> None:
    before = await state(db)

    preview = await rescore(client, h, {"dry_run": True})

    assert preview.status_code == 200, preview.text
    assert await state(db) == before
    assert (
        (await rescore(client, h)).json()
        == preview.json()
        == {"matched": 4, "changed": 2, "remaining": 0}
    )


async def test_rescore_a_second_time_changes_nothing(
    client: httpx.AsyncClient, db: AsyncSession, h: dict[str, str], gold_leads: dict[str, int]
) -> None:
    await rescore(client, h)
    after = await state(db)

    again = await rescore(client, h)

    assert again.json() == {"matched": 4, "changed": 0, "remaining": 0}
    assert await state(db) == after


async def test_rescore_changes_only_the_leads_the_filter_selects(
    client: httpx.AsyncClient, db: AsyncSession, h: dict[str, str], gold_leads: dict[str, int]
) -> None:
    response = await rescore(client, h, {"filter": {"source": ["WEBSITE"]}})

    assert response.json() == {"matched": 1, "changed": 1, "remaining": 0}
    assert await score_of(db, gold_leads["web_gold"]) == 80
    assert await score_of(db, gold_leads["gold"]) == 60


async def test_rescore_refuses_include_archived_naming_it(
    client: httpx.AsyncClient, db: AsyncSession, h: dict[str, str], gold_leads: dict[str, int]
) -> None:
    before = await state(db)

    response = await rescore(client, h, {"filter": {"include_archived": True}})

    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["loc"] == ["body", "filter", "include_archived"]
    assert await state(db) == before


async def test_rescore_refuses_a_filter_of_the_wrong_json_types(
    client: httpx.AsyncClient, h: dict[str, str]
) -> None:
    response = await rescore(client, h, {"filter": {"lead_score_min": "50"}})

    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["loc"][:3] == ["body", "filter", "lead_score_min"]


async def test_an_agent_may_not_rescore(
    client: httpx.AsyncClient,
    db: AsyncSession,
    auth_headers: Any,
    agent: User,
    gold_leads: dict[str, int],
) -> None:
    before = await state(db)

    response = await rescore(client, auth_headers(agent))

    assert response.status_code == 403, response.text
    assert response.json()["code"] == "permission_denied"
    assert await state(db) == before


async def stale_leads(db: AsyncSession, count: int, prefix: str) -> list[int]:
    """`count` automatically scored leads whose stored score (0) the rules put otherwise."""
    return await insert_raw(
        db,
        [
            {"source": LeadSource.REFERRAL, "company": None, "email": f"{prefix}{n}@acme.com"}
            for n in range(count)
        ],
    )


async def test_rescore_sends_the_same_statements_for_5_or_300_leads(
    db: AsyncSession, superuser: User
) -> None:
    few = await stale_leads(db, 5, "few")
    async with sql_statements(db) as for_few:
        done_few = await LeadRescore.rescore(db, superuser.id)
    await stale_leads(db, 300, "many")
    async with sql_statements(db) as for_many:
        done_many = await LeadRescore.rescore(db, superuser.id)

    assert (done_few.changed, done_many.changed) == (len(few), 300)
    # the user, the counts, the events' INSERT and the UPDATE (and no more for more leads)
    assert len(work(for_many)) == len(work(for_few)) == 4, for_many
    assert sum(s.lstrip().upper().startswith("UPDATE") for s in for_many) == 1


async def test_one_call_rescores_at_most_bulk_max_ids_leads_lowest_ids_first(
    db: AsyncSession, superuser: User
) -> None:
    stale = await stale_leads(db, 5, "capped")

    with use_settings(make_settings(bulk_max_ids=2)):
        preview = await LeadRescore.rescore(db, superuser.id, dry_run=True)
        calls = [await LeadRescore.rescore(db, superuser.id) for _ in range(3)]
        done = [await score_of(db, lead_id) for lead_id in stale]

    assert (preview.changed, preview.remaining) == (2, 3)
    assert [(c.changed, c.remaining) for c in calls] == [(2, 3), (2, 1), (1, 0)]
    assert done == [80] * 5  # 50 + REFERRAL 20 + a business email 10


async def test_a_capped_call_changes_the_lowest_ids_and_leaves_the_rest(
    db: AsyncSession, superuser: User
) -> None:
    stale = await stale_leads(db, 4, "lowest")

    with use_settings(make_settings(bulk_max_ids=3)):
        await LeadRescore.rescore(db, superuser.id)

    assert [await score_of(db, lead_id) for lead_id in stale] == [80, 80, 80, 0]


def work(statements: list[str]) -> list[str]:
    """The statements but the transaction's own (BEGIN, SAVEPOINT, RELEASE, COMMIT)."""
    bookkeeping = ("BEGIN", "SAVEPOINT", "RELEASE", "COMMIT")
    return [s for s in statements if not s.lstrip().upper().startswith(bookkeeping)]
