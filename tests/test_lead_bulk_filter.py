"""Bulk changes by filter (issue 17): `POST /leads/bulk/status` and `/bulk/assign` with `filter`
instead of `lead_ids`: a dry run counts, a real call must name that count (`expected_count`),
and changes exactly the leads matched, all or nothing, noted and recorded as with ids."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import use_settings
from app.models import Lead, LeadEvent, LeadStatus, User
from app.schemas.filters import LeadFilters
from app.services import LeadService
from app.services.exceptions import MatchCountChangedException
from tests.helpers import LeadFactory, insert_leads, make_settings, sql_statements, stamp

API = "/api/v1"
LEADS = Lead.__table__
WEBINAR = {"tags": ["webinar"]}


async def state(db: AsyncSession) -> list[tuple[Any, ...]]:
    """Every lead's status, assignee, notes and version, and the events' count."""
    rows = await db.execute(
        select(
            LEADS.c.id, LEADS.c.status, LEADS.c.assigned_to, LEADS.c.notes, LEADS.c.version
        ).order_by(LEADS.c.id)
    )
    events = list(await db.scalars(select(LeadEvent.id)))
    return [*(tuple(row) for row in rows), ("events", len(events))]


async def lead(db: AsyncSession, lead_id: int) -> Any:
    return (await db.execute(select(LEADS).where(LEADS.c.id == lead_id))).mappings().one()


@pytest.fixture
async def webinar(
    db: AsyncSession, make_lead: LeadFactory, agent: User, other_agent: User, superuser: User
) -> dict[str, int]:
    """Ids of leads tagged webinar (the agent's two, the other agent's one, an archived one)
    and of one that is not."""
    leads = {
        "mine": (await make_lead(owner=agent, tags=["webinar"])).id,
        "mine2": (await make_lead(owner=agent, tags=["webinar"], status=LeadStatus.CONTACTED)).id,
        "theirs": (await make_lead(owner=other_agent, tags=["webinar"])).id,
        "archived": (await make_lead(owner=agent, tags=["webinar"])).id,
        "bystander": (await make_lead(owner=agent, tags=["fair"])).id,
    }
    await LeadService.delete_lead(db, leads["archived"], superuser.id)
    return leads


async def set_status(
    client: httpx.AsyncClient, headers: dict[str, str], **body: Any
) -> httpx.Response:
    body = {"filter": WEBINAR, "status": "QUALIFIED", **body}
    return await client.post(f"{API}/leads/bulk/status", json=body, headers=headers)


async def test_a_dry_run_answers_how_many_leads_match_and_changes_nothing(
    client: httpx.AsyncClient, db: AsyncSession, h: dict[str, str], webinar: dict[str, int]
) -> None:
    before = await state(db)

    response = await set_status(client, h, dry_run=True)

    assert response.status_code == 200, response.text
    assert response.json() == {"matched": 3}  # mine, mine2, theirs: the archived one is not
    assert await state(db) == before


async def test_a_call_with_the_previewed_count_changes_exactly_the_matched_leads(
    client: httpx.AsyncClient,
    db: AsyncSession,
    h: dict[str, str],
    webinar: dict[str, int],
    superuser: User,
) -> None:
    matched = ["mine", "mine2", "theirs"]
    before = {name: await lead(db, webinar[name]) for name in webinar}

    response = await set_status(client, h, expected_count=3, note="Webinar follow-up")

    assert response.status_code == 200, response.text
    ids = sorted(webinar[name] for name in matched)
    assert response.json() == {"updated_count": 3, "lead_ids": ids}
    for name in matched:
        old, new = before[name], await lead(db, webinar[name])
        at = stamp(new["updated_at"])
        assert new["status"] == LeadStatus.QUALIFIED
        assert new["version"] == old["version"] + 1
        assert new["notes"] == (
            f"{old['notes']}\n"
            f"{at} user {superuser.id}: Status {old['status'].value} → QUALIFIED (bulk)\n"
            f"{at} user {superuser.id}: Webinar follow-up"
        )
        event = await db.scalar(
            select(LeadEvent)
            .where(LeadEvent.lead_id == webinar[name])
            .order_by(LeadEvent.id.desc())
        )
        assert event is not None
        assert (event.type, event.note) == ("lead.status_changed", "Webinar follow-up")
        assert event.changes == {"status": {"old": old["status"].value, "new": "QUALIFIED"}}
    for name in ("archived", "bystander"):
        assert await lead(db, webinar[name]) == before[name]


async def test_a_stale_expected_count_is_409_with_the_count_now_and_changes_nothing(
    client: httpx.AsyncClient,
    db: AsyncSession,
    h: dict[str, str],
    webinar: dict[str, int],
    make_lead: LeadFactory,
) -> None:
    preview = (await set_status(client, h, dry_run=True)).json()
    await make_lead(tags=["webinar"])  # the filter's match grew since the preview
    before = await state(db)

    response = await set_status(client, h, expected_count=preview["matched"])

    assert response.status_code == 409, response.text
    assert response.json()["code"] == "match_count_changed"
    assert response.json()["matched"] == 4
    assert "4" in response.json()["detail"]
    assert await state(db) == before


async def test_an_agents_filter_changes_only_their_own_leads(
    client: httpx.AsyncClient,
    db: AsyncSession,
    auth_headers: Any,
    agent: User,
    webinar: dict[str, int],
) -> None:
    theirs = await lead(db, webinar["theirs"])
    preview = await set_status(client, auth_headers(agent), dry_run=True)

    response = await set_status(client, auth_headers(agent), expected_count=2)

    assert preview.json() == {"matched": 2}
    assert response.status_code == 200, response.text
    assert response.json()["lead_ids"] == sorted([webinar["mine"], webinar["mine2"]])
    assert await lead(db, webinar["theirs"]) == theirs


async def test_more_matches_than_bulk_max_ids_are_refused_naming_the_filter(
    client: httpx.AsyncClient, db: AsyncSession, h: dict[str, str], webinar: dict[str, int]
) -> None:
    before = await state(db)
    with use_settings(make_settings(bulk_max_ids=2)):
        preview = await set_status(client, h, dry_run=True)
        response = await set_status(client, h, expected_count=3)

    assert preview.json() == {"matched": 3}  # a dry run still counts them
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["loc"] == ["body", "filter"]
    assert "narrow" in response.json()["detail"]
    assert await state(db) == before


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"lead_ids": [1], "filter": WEBINAR, "expected_count": 1}, ["body", "lead_ids"]),
        ({}, ["body", "lead_ids"]),
        ({"filter": WEBINAR}, ["body", "expected_count"]),
        (
            {"filter": {"include_archived": True}, "dry_run": True},
            ["body", "filter", "include_archived"],
        ),
        ({"lead_ids": [1], "dry_run": True}, ["body", "dry_run"]),
        ({"lead_ids": [1], "expected_count": 1}, ["body", "expected_count"]),
        (
            {"filter": {"lead_score_min": "50"}, "dry_run": True},
            ["body", "filter", "lead_score_min"],
        ),
        ({"filter": WEBINAR, "expected_count": True}, ["body", "expected_count"]),
    ],
    ids=[
        "both",
        "neither",
        "filter_without_expected_count",
        "include_archived",
        "dry_run_with_ids",
        "expected_count_with_ids",
        "filter_value_of_another_json_type",
        "expected_count_not_a_number",
    ],
)
async def test_a_bad_selection_is_422_naming_the_field_and_changes_nothing(
    client: httpx.AsyncClient,
    db: AsyncSession,
    h: dict[str, str],
    webinar: dict[str, int],
    body: dict[str, Any],
    loc: list[str],
) -> None:
    before = await state(db)

    response = await client.post(
        f"{API}/leads/bulk/status", json={"status": "QUALIFIED", **body}, headers=h
    )

    assert response.status_code == 422, response.text
    assert [error["loc"][: len(loc)] for error in response.json()["errors"]] == [loc]
    assert await state(db) == before


async def test_assign_by_filter_assigns_exactly_the_matched_leads_noting_who_had_them(
    client: httpx.AsyncClient,
    db: AsyncSession,
    h: dict[str, str],
    webinar: dict[str, int],
    agent: User,
    other_agent: User,
    superuser: User,
) -> None:
    body = {"filter": {**WEBINAR, "assigned_to": agent.id}, "agent_user_id": other_agent.id}
    preview = await client.post(
        f"{API}/leads/bulk/assign", json={**body, "dry_run": True}, headers=h
    )
    old = await lead(db, webinar["mine"])

    response = await client.post(
        f"{API}/leads/bulk/assign", json={**body, "expected_count": 2}, headers=h
    )

    assert preview.json() == {"matched": 2}
    assert response.status_code == 200, response.text
    assert response.json()["lead_ids"] == sorted([webinar["mine"], webinar["mine2"]])
    new = await lead(db, webinar["mine"])
    assert new["assigned_to"] == other_agent.id
    assert new["notes"] == (
        f"{old['notes']}\n{stamp(new['updated_at'])} user {superuser.id}: "
        f"Assigned to user {other_agent.id} (was user {agent.id})"
    )
    event = await db.scalar(
        select(LeadEvent).where(LeadEvent.lead_id == webinar["mine"]).order_by(LeadEvent.id.desc())
    )
    assert event is not None and event.type == "lead.assigned"
    assert (await lead(db, webinar["bystander"]))["assigned_to"] == agent.id


async def test_a_repeated_idempotency_key_replays_the_first_answer(
    client: httpx.AsyncClient, db: AsyncSession, h: dict[str, str], webinar: dict[str, int]
) -> None:
    headers = {**h, "Idempotency-Key": "webinar-qualify-1"}
    first = await set_status(client, headers, expected_count=3)
    after = await state(db)

    again = await set_status(client, headers, expected_count=3)

    assert again.status_code == 200
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert await state(db) == after


async def test_a_change_by_filter_sends_the_same_statements_for_5_or_300_leads(
    db: AsyncSession, make_lead: LeadFactory, superuser: User
) -> None:
    few = await insert_leads(db, 5, prefix="few")
    many = await insert_leads(db, 300, prefix="many")
    by_few = LeadFilters(search="few")
    by_many = LeadFilters(search="many")

    async with sql_statements(db) as for_few:
        done_few = await LeadService.bulk_update_status_by_filter(
            db, by_few, "WON", superuser.id, expected_count=5
        )
    async with sql_statements(db) as for_many:
        done_many = await LeadService.bulk_update_status_by_filter(
            db, by_many, "WON", superuser.id, expected_count=300
        )

    assert (done_few, done_many) == (few, many)
    assert len(for_many) == len(for_few), for_many
    assert sum(s.lstrip().upper().startswith("UPDATE") for s in for_many) == 1


async def test_the_service_refuses_a_stale_count_with_the_count_now(
    db: AsyncSession, webinar: dict[str, int], superuser: User
) -> None:
    before = await state(db)

    with pytest.raises(MatchCountChangedException) as refused:
        await LeadService.assign_leads_by_filter(
            db, LeadFilters(tags=["webinar"]), superuser.id, superuser.id, expected_count=2
        )

    assert refused.value.matched == 3
    assert await state(db) == before
