"""A lead's history over HTTP (app/services/lead_history.py): its events newest first, paged by
cursor and filtered by type and field; the time it spent in each status; and
`status_changed_at`, which every write that changes the status sets."""

from __future__ import annotations

from datetime import UTC, datetime
from itertools import pairwise
from typing import Any

import httpx
import pytest
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.models import Lead, LeadEvent, LeadEventType, User
from app.services import LeadService
from app.services.lead_events import event_values, record
from tests.helpers import LeadFactory, claims_bearer, uid

LEADS = "/api/v1/leads"


def parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def history(
    client: httpx.AsyncClient, lead_id: int, headers: dict[str, str], **params: Any
) -> httpx.Response:
    return await client.get(f"{LEADS}/{lead_id}/history", params=params, headers=headers)


async def lead_row(db: AsyncSession, lead_id: int) -> Lead:
    lead = await db.scalar(
        select(Lead).where(Lead.id == lead_id).execution_options(populate_existing=True)
    )
    assert lead is not None
    return lead


@pytest.fixture
async def busy_lead(db: AsyncSession, make_lead: LeadFactory, agent: User, superuser: User) -> int:
    """The agent's lead with five events: created (by the superuser), updated, noted, called,
    bulk status changed."""
    lead_id = uid(await make_lead(owner=agent))
    await LeadService.update_lead(db, lead_id, {"status": "CONTACTED"}, user_id=agent.id)
    await LeadService.add_lead_note(db, lead_id, "Wants a demo", user_id=agent.id)
    await LeadService.record_call_attempt(db, lead_id, user_id=agent.id)
    await LeadService.bulk_update_status(db, [lead_id], "QUALIFIED", user_id=superuser.id)
    return lead_id


# --- the events -----------------------------------------------------------------------------


async def test_history_lists_the_events_newest_first_with_actor_changes_and_version(
    client: httpx.AsyncClient,
    settings: Settings,
    busy_lead: int,
    agent: User,
    superuser: User,
) -> None:
    response = await history(client, busy_lead, claims_bearer(settings, uid(agent)))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["next_cursor"] is None
    items = body["items"]
    assert [(e["type"], e["lead_version"]) for e in items] == [
        ("lead.status_changed", 5),
        ("lead.call_recorded", 4),
        ("lead.note_added", 3),
        ("lead.updated", 2),
        ("lead.created", 1),
    ]
    # The agent sees who acted on their lead, the superuser included.
    assert items[0]["actor"] == {"id": uid(superuser), "full_name": superuser.full_name}
    assert items[1]["actor"] == {"id": uid(agent), "full_name": agent.full_name}
    assert items[0]["changes"] == {"status": {"old": "CONTACTED", "new": "QUALIFIED"}}
    assert items[3]["changes"] == {"status": {"old": "NEW", "new": "CONTACTED"}}
    assert (items[2]["note"], items[2]["changes"]) == ("Wants a demo", {})
    assert items[0]["id"] > items[1]["id"]
    assert parse(items[0]["occurred_at"]) >= parse(items[-1]["occurred_at"])


async def test_history_pages_by_cursor_without_gaps_or_repeats(
    client: httpx.AsyncClient, h: dict[str, str], busy_lead: int
) -> None:
    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        body = (await history(client, busy_lead, h, **params)).json()
        seen += [e["lead_version"] for e in body["items"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == [5, 4, 3, 2, 1]
    assert pages == 3


async def test_history_filters_by_type(
    client: httpx.AsyncClient, h: dict[str, str], busy_lead: int
) -> None:
    notes = await history(client, busy_lead, h, type="lead.note_added")
    assert [e["note"] for e in notes.json()["items"]] == ["Wants a demo"]
    two = await client.get(
        f"{LEADS}/{busy_lead}/history?type=lead.created&type=lead.call_recorded", headers=h
    )
    assert [e["type"] for e in two.json()["items"]] == ["lead.call_recorded", "lead.created"]


async def test_history_filters_by_the_field_an_event_changed(
    client: httpx.AsyncClient, h: dict[str, str], busy_lead: int
) -> None:
    response = await history(client, busy_lead, h, field="status")
    assert [e["type"] for e in response.json()["items"]] == [
        "lead.status_changed",
        "lead.updated",
        "lead.created",
    ]
    calls = await history(client, busy_lead, h, field="call_attempts")
    assert [e["type"] for e in calls.json()["items"]] == ["lead.call_recorded", "lead.created"]


async def test_a_cursor_followed_with_other_filters_gets_422(
    client: httpx.AsyncClient, h: dict[str, str], busy_lead: int
) -> None:
    cursor = (await history(client, busy_lead, h, limit=1)).json()["next_cursor"]
    response = await history(client, busy_lead, h, limit=1, cursor=cursor, field="status")
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["loc"] == ["query", "cursor"]


@pytest.mark.parametrize(
    "params",
    [
        {"cursor": "not-a-cursor"},
        {"type": "lead.exploded"},
        {"field": "password"},
        {"limit": 0},
        {"colour": "red"},
    ],
)
async def test_a_bad_history_query_gets_422_naming_the_parameter(
    client: httpx.AsyncClient, h: dict[str, str], busy_lead: int, params: dict[str, Any]
) -> None:
    response = await history(client, busy_lead, h, **params)
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["loc"][:2] == ["query", next(iter(params))]


async def test_an_event_by_no_user_has_a_null_actor(
    client: httpx.AsyncClient, db: AsyncSession, h: dict[str, str], make_lead: LeadFactory
) -> None:
    lead_id = uid(await make_lead())
    record(db, event_values(LeadEventType.UPDATED, lead_id, None, 2, assigned_to=None, changes={}))
    await db.commit()
    [newest, _] = (await history(client, lead_id, h)).json()["items"]
    assert newest["actor"] is None


async def test_another_agents_lead_has_no_history_for_an_agent(
    client: httpx.AsyncClient,
    settings: Settings,
    make_lead: LeadFactory,
    agent: User,
    other_agent: User,
) -> None:
    lead_id = uid(await make_lead(owner=other_agent))
    headers = claims_bearer(settings, uid(agent))
    for path in ("history", "history/status"):
        response = await client.get(f"{LEADS}/{lead_id}/{path}", headers=headers)
        assert response.status_code == 404, response.text
        assert response.json()["code"] == "lead_not_found"


async def test_a_missing_lead_has_no_history(client: httpx.AsyncClient, h: dict[str, str]) -> None:
    assert (await history(client, 999_999, h)).status_code == 404


# --- time in status -----------------------------------------------------------------------------


async def test_status_history_lists_each_status_with_its_span(
    client: httpx.AsyncClient,
    db: AsyncSession,
    h: dict[str, str],
    busy_lead: int,
    superuser: User,
) -> None:
    await LeadService.delete_lead(db, busy_lead, user_id=superuser.id)  # LOST
    await LeadService.restore_lead(db, busy_lead, user_id=superuser.id)  # QUALIFIED again
    response = await client.get(f"{LEADS}/{busy_lead}/history/status", headers=h)
    assert response.status_code == 200, response.text
    periods = response.json()["items"]
    assert [p["status"] for p in periods] == ["NEW", "CONTACTED", "QUALIFIED", "LOST", "QUALIFIED"]
    for earlier, later in pairwise(periods):
        assert earlier["left_at"] == later["entered_at"]
        span = parse(earlier["left_at"]) - parse(earlier["entered_at"])
        assert earlier["seconds"] == pytest.approx(span.total_seconds(), abs=0.001)
    assert periods[-1]["left_at"] is None
    assert periods[-1]["seconds"] >= 0
    lead = await lead_row(db, busy_lead)
    assert parse(periods[-1]["entered_at"]) == lead.status_changed_at


async def test_status_history_of_a_lead_from_before_events_starts_at_its_creation(
    client: httpx.AsyncClient,
    db: AsyncSession,
    h: dict[str, str],
    make_lead: LeadFactory,
    superuser: User,
) -> None:
    lead_id = uid(await make_lead())
    await LeadService.update_lead(db, lead_id, {"status": "WON"}, user_id=superuser.id)
    await db.execute(
        delete(LeadEvent).where(LeadEvent.lead_id == lead_id, LeadEvent.type == "lead.created")
    )
    await db.commit()
    lead = await lead_row(db, lead_id)
    periods = (await client.get(f"{LEADS}/{lead_id}/history/status", headers=h)).json()["items"]
    assert [p["status"] for p in periods] == ["NEW", "WON"]
    assert parse(periods[0]["entered_at"]) == lead.created_at


async def test_status_history_without_any_event_is_the_current_status(
    client: httpx.AsyncClient,
    db: AsyncSession,
    h: dict[str, str],
    make_lead: LeadFactory,
) -> None:
    lead_id = uid(await make_lead(status="PROPOSAL"))
    await db.execute(delete(LeadEvent).where(LeadEvent.lead_id == lead_id))
    await db.commit()
    [period] = (await client.get(f"{LEADS}/{lead_id}/history/status", headers=h)).json()["items"]
    assert (period["status"], period["left_at"]) == ("PROPOSAL", None)


# --- status_changed_at --------------------------------------------------------------------------


async def test_a_new_lead_has_had_its_status_since_its_creation(
    client: httpx.AsyncClient, h: dict[str, str]
) -> None:
    created = await client.post(
        LEADS, json={"first_name": "A", "last_name": "B", "phone": "+15550100"}, headers=h
    )
    body = created.json()
    assert body["status_changed_at"] == body["created_at"]


async def test_a_patch_that_changes_the_status_sets_status_changed_at(
    client: httpx.AsyncClient, h: dict[str, str], make_lead: LeadFactory
) -> None:
    lead_id = uid(await make_lead())
    response = await client.patch(f"{LEADS}/{lead_id}", json={"status": "WON"}, headers=h)
    body = response.json()
    assert body["status_changed_at"] == body["updated_at"] != body["created_at"]


async def test_a_patch_of_other_fields_keeps_status_changed_at(
    client: httpx.AsyncClient, h: dict[str, str], make_lead: LeadFactory
) -> None:
    lead_id = uid(await make_lead())
    response = await client.patch(f"{LEADS}/{lead_id}", json={"company": "Initech"}, headers=h)
    body = response.json()
    assert body["status_changed_at"] == body["created_at"] != body["updated_at"]


async def test_archive_restore_and_bulk_status_set_status_changed_at(
    db: AsyncSession, make_lead: LeadFactory, superuser: User
) -> None:
    lead_id = uid(await make_lead())
    marks = [(await lead_row(db, lead_id)).status_changed_at]
    await LeadService.delete_lead(db, lead_id, user_id=superuser.id)
    marks.append((await lead_row(db, lead_id)).status_changed_at)
    await LeadService.restore_lead(db, lead_id, user_id=superuser.id)
    marks.append((await lead_row(db, lead_id)).status_changed_at)
    await LeadService.bulk_update_status(db, [lead_id], "WON", user_id=superuser.id)
    lead = await lead_row(db, lead_id)
    marks.append(lead.status_changed_at)
    assert marks == sorted(marks) and len(set(marks)) == 4
    assert lead.status_changed_at == lead.updated_at


async def test_a_bulk_status_a_lead_already_has_keeps_status_changed_at(
    db: AsyncSession, make_lead: LeadFactory, superuser: User
) -> None:
    lead_id = uid(await make_lead(status="WON"))
    before = (await lead_row(db, lead_id)).status_changed_at
    await LeadService.bulk_update_status(db, [lead_id], "WON", user_id=superuser.id)
    lead = await lead_row(db, lead_id)
    assert lead.status_changed_at == before != lead.updated_at


async def test_a_lead_inserted_without_status_changed_at_has_had_its_status_since_creation(
    db: AsyncSession,
) -> None:
    created = datetime(2025, 5, 6, 7, 8, 9, tzinfo=UTC)
    lead = Lead(first_name="Old", last_name="Row", phone="+15550199", created_at=created)
    db.add(lead)
    await db.commit()
    assert (await lead_row(db, lead.id)).status_changed_at == created
