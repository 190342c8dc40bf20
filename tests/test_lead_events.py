"""Every change to a lead is also a row in `lead_events`, written in the change's transaction
(app/services/lead_events.py): each write path's event and its exact `changes`, the lead's
version counting the changes, nothing left by a change that failed, and a hard delete erasing
the values its events held."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.models import Lead, LeadEvent, User
from app.services import LeadService
from app.services.exceptions import LeadNotFoundException, ValidationException
from tests.helpers import LeadFactory, claims_bearer, sql_statements, uid

LEADS = "/api/v1/leads"


async def events_of(db: AsyncSession, lead_id: int) -> list[LeadEvent]:
    rows = await db.scalars(
        select(LeadEvent)
        .where(LeadEvent.lead_id == lead_id)
        .order_by(LeadEvent.id)
        .execution_options(populate_existing=True)
    )
    return list(rows)


async def events_of_many(db: AsyncSession, lead_ids: list[int]) -> list[LeadEvent]:
    rows = await db.scalars(
        select(LeadEvent)
        .where(LeadEvent.lead_id.in_(lead_ids))
        .order_by(LeadEvent.id)
        .execution_options(populate_existing=True)
    )
    return list(rows)


async def version_of(db: AsyncSession, lead_id: int) -> int:
    return int(
        await db.scalar(
            select(Lead.version).where(Lead.id == lead_id).execution_options(populate_existing=True)
        )
    )


def summary(event: LeadEvent) -> tuple[str, dict[str, Any], str | None, int]:
    return event.type, event.changes, event.note, event.lead_version


# --- the API's hot writes -----------------------------------------------------------------------


async def test_post_leads_records_the_created_event_with_every_field_given(
    client: httpx.AsyncClient, db: AsyncSession, settings: Settings, superuser: User, agent: User
) -> None:
    body = {
        "first_name": "Ada",
        "last_name": "Lovelace",
        "email": "ada@example.com",
        "source": "REFERRAL",
        "assigned_to": uid(agent),
        "estimated_value": 1500.5,
        "notes": "Met at the expo",
    }
    headers = {**claims_bearer(settings, uid(superuser)), "X-Request-ID": "req-create-1"}
    response = await client.post(LEADS, json=body, headers=headers)
    assert response.status_code == 201, response.text
    lead = response.json()
    [event] = await events_of(db, lead["id"])
    assert summary(event) == (
        "lead.created",
        {
            "first_name": {"old": None, "new": "Ada"},
            "last_name": {"old": None, "new": "Lovelace"},
            "email": {"old": None, "new": "ada@example.com"},
            "source": {"old": None, "new": "REFERRAL"},
            "status": {"old": None, "new": "NEW"},
            "assigned_to": {"old": None, "new": uid(agent)},
            "lead_score": {"old": None, "new": lead["lead_score"]},
            "score_is_manual": {"old": None, "new": False},
            "estimated_value": {"old": None, "new": 1500.5},
            "call_attempts": {"old": None, "new": 0},
        },
        "Met at the expo",
        1,
    )
    assert (event.actor_id, event.request_id) == (uid(superuser), "req-create-1")
    assert lead["version"] == 1


async def test_patch_records_the_updated_event_with_old_and_new_values(
    client: httpx.AsyncClient,
    db: AsyncSession,
    settings: Settings,
    make_lead: LeadFactory,
    agent: User,
) -> None:
    lead_id = uid(await make_lead(owner=agent, company="Acme"))
    change = {"company": "Initech", "status": "CONTACTED", "notes": "Called back"}
    headers = {**claims_bearer(settings, uid(agent)), "X-Request-ID": "req-patch-1"}
    response = await client.patch(f"{LEADS}/{lead_id}", json=change, headers=headers)
    assert response.status_code == 200, response.text
    event = (await events_of(db, lead_id))[-1]
    assert summary(event) == (
        "lead.updated",
        {
            "company": {"old": "Acme", "new": "Initech"},
            "status": {"old": "NEW", "new": "CONTACTED"},
        },
        "Called back",
        2,
    )
    assert (event.actor_id, event.request_id) == (uid(agent), "req-patch-1")
    assert response.json()["version"] == 2


async def test_a_patch_that_changes_nothing_records_no_event(
    client: httpx.AsyncClient,
    db: AsyncSession,
    settings: Settings,
    make_lead: LeadFactory,
    agent: User,
) -> None:
    lead_id = uid(await make_lead(owner=agent, company="Acme"))
    before = await events_of(db, lead_id)
    response = await client.patch(
        f"{LEADS}/{lead_id}", json={"company": "Acme"}, headers=claims_bearer(settings, uid(agent))
    )
    assert response.status_code == 200
    assert len(await events_of(db, lead_id)) == len(before)
    assert await version_of(db, lead_id) == 1


async def test_a_refused_patch_records_no_event(
    client: httpx.AsyncClient,
    db: AsyncSession,
    settings: Settings,
    make_lead: LeadFactory,
    agent: User,
) -> None:
    lead_id = uid(await make_lead(owner=agent))
    before = await events_of(db, lead_id)
    response = await client.patch(
        f"{LEADS}/{lead_id}",
        json={"email": None, "phone": None},
        headers=claims_bearer(settings, uid(agent)),
    )
    assert response.status_code == 422
    assert len(await events_of(db, lead_id)) == len(before)


# --- the service's write paths ------------------------------------------------------------------


async def test_each_service_write_records_its_event_and_counts_a_version(
    db: AsyncSession, make_lead: LeadFactory, agent: User
) -> None:
    lead_id = uid(await make_lead(owner=agent, phone="+15550102030"))
    await LeadService.update_lead(db, lead_id, {"job_title": "CTO"}, user_id=agent.id)
    await LeadService.add_lead_note(db, lead_id, "Sent the deck", user_id=agent.id)
    await LeadService.record_call_attempt(db, lead_id, user_id=agent.id, note="Voicemail")
    await LeadService.delete_lead(db, lead_id, user_id=agent.id)
    await LeadService.restore_lead(db, lead_id, user_id=agent.id)

    events = await events_of(db, lead_id)
    assert [(e.type, e.lead_version, e.actor_id) for e in events] == [
        ("lead.created", 1, events[0].actor_id),
        ("lead.updated", 2, agent.id),
        ("lead.note_added", 3, agent.id),
        ("lead.call_recorded", 4, agent.id),
        ("lead.archived", 5, agent.id),
        ("lead.restored", 6, agent.id),
    ]
    assert await version_of(db, lead_id) == 6
    assert events[1].changes == {"job_title": {"old": None, "new": "CTO"}}
    assert (events[2].changes, events[2].note) == ({}, "Sent the deck")
    call = events[3].changes
    assert call["call_attempts"] == {"old": 0, "new": 1}
    assert call["last_contact_date"]["old"] is None
    assert call["last_contact_date"]["new"].endswith("Z")
    assert events[3].note == "Voicemail"
    archived = events[4].changes
    assert archived["status"] == {"old": "NEW", "new": "LOST"}
    assert archived["tags"] == {"old": [], "new": ["archived"]}
    assert archived["archived_at"]["old"] is None
    restored = events[5].changes
    assert restored["status"] == {"old": "LOST", "new": "NEW"}
    assert restored["tags"] == {"old": ["archived"], "new": []}
    assert restored["archived_at"]["new"] is None


async def test_a_failed_service_write_records_no_event(
    db: AsyncSession, make_lead: LeadFactory, agent: User
) -> None:
    lead_id = uid(await make_lead(owner=agent))
    with pytest.raises(ValidationException):
        await LeadService.update_lead(db, lead_id, {"email": "not-an-email"}, user_id=agent.id)
    assert [e.type for e in await events_of(db, lead_id)] == ["lead.created"]
    assert await version_of(db, lead_id) == 1


async def test_bulk_changes_count_a_version_on_every_lead(
    db: AsyncSession, make_lead: LeadFactory, superuser: User, agent: User
) -> None:
    ids = [uid(await make_lead()) for _ in range(3)]
    await LeadService.bulk_update_status(db, ids, "CONTACTED", user_id=superuser.id)
    await LeadService.assign_leads(
        db, ids, agent_user_id=agent.id, assigned_by_user_id=superuser.id
    )
    assert [await version_of(db, i) for i in ids] == [3, 3, 3]


async def test_bulk_status_records_a_status_changed_event_with_each_leads_old_status(
    db: AsyncSession, make_lead: LeadFactory, superuser: User
) -> None:
    new_id = uid(await make_lead())
    qualified_id = uid(await make_lead(status="QUALIFIED"))
    await LeadService.bulk_update_status(
        db, [new_id, qualified_id], "WON", user_id=superuser.id, note="Signed"
    )
    for lead_id, old in ((new_id, "NEW"), (qualified_id, "QUALIFIED")):
        event = (await events_of(db, lead_id))[-1]
        assert summary(event) == (
            "lead.status_changed",
            {"status": {"old": old, "new": "WON"}},
            "Signed",
            2,
        )
        assert event.actor_id == superuser.id


async def test_bulk_status_to_the_status_a_lead_has_records_an_event_without_changes(
    db: AsyncSession, make_lead: LeadFactory, superuser: User
) -> None:
    lead_id = uid(await make_lead(status="WON"))
    await LeadService.bulk_update_status(db, [lead_id], "WON", user_id=superuser.id)
    assert summary((await events_of(db, lead_id))[-1]) == ("lead.status_changed", {}, None, 2)


async def test_bulk_assign_records_an_assigned_event_with_each_leads_old_assignee(
    db: AsyncSession, make_lead: LeadFactory, superuser: User, agent: User, other_agent: User
) -> None:
    unassigned_id = uid(await make_lead())
    others_id = uid(await make_lead(owner=other_agent))
    await LeadService.assign_leads(
        db, [unassigned_id, others_id], agent_user_id=agent.id, assigned_by_user_id=superuser.id
    )
    for lead_id, old in ((unassigned_id, None), (others_id, uid(other_agent))):
        event = (await events_of(db, lead_id))[-1]
        assert summary(event) == (
            "lead.assigned",
            {"assigned_to": {"old": old, "new": uid(agent)}},
            None,
            2,
        )
        assert event.actor_id == superuser.id


async def test_bulk_events_come_through_the_api_with_the_request_id(
    client: httpx.AsyncClient,
    db: AsyncSession,
    settings: Settings,
    make_lead: LeadFactory,
    superuser: User,
) -> None:
    lead_id = uid(await make_lead())
    headers = {**claims_bearer(settings, uid(superuser), superuser=True), "X-Request-ID": "bulk-7"}
    response = await client.post(
        f"{LEADS}/bulk/status", json={"lead_ids": [lead_id], "status": "LOST"}, headers=headers
    )
    assert response.status_code == 200, response.text
    event = (await events_of(db, lead_id))[-1]
    assert (event.type, event.request_id) == ("lead.status_changed", "bulk-7")


@pytest.mark.parametrize("size", [2, 60])
async def test_a_bulk_call_writes_its_events_in_two_statements_whatever_its_size(
    db: AsyncSession, make_lead: LeadFactory, superuser: User, size: int
) -> None:
    ids = [uid(await make_lead()) for _ in range(size)]
    async with sql_statements(db) as statements:
        await LeadService.bulk_update_status(
            db, ids, "CONTACTED", user_id=superuser.id, ids_only=True
        )
    writes = [s for s in statements if s.lstrip().upper().startswith(("INSERT", "UPDATE"))]
    assert len(writes) == 2, writes
    assert writes[0].lstrip().startswith("INSERT INTO lead_events")
    assert writes[1].lstrip().startswith("UPDATE leads")
    changed = [e for e in await events_of_many(db, ids) if e.type == "lead.status_changed"]
    assert len(changed) == size


async def test_a_refused_bulk_call_records_no_event(
    db: AsyncSession, make_lead: LeadFactory, agent: User, other_agent: User
) -> None:
    own_id = uid(await make_lead(owner=agent))
    others_id = uid(await make_lead(owner=other_agent))
    with pytest.raises(LeadNotFoundException):
        await LeadService.bulk_update_status(db, [own_id, others_id], "LOST", user_id=agent.id)
    assert [e.type for e in await events_of_many(db, [own_id, others_id])] == ["lead.created"] * 2
    assert await version_of(db, own_id) == 1


# --- a hard delete ------------------------------------------------------------------------------


async def test_a_hard_delete_erases_the_values_its_events_held_and_records_the_deletion(
    db: AsyncSession, make_lead: LeadFactory, superuser: User
) -> None:
    lead_id = uid(await make_lead(email="secret@example.com", company="Acme"))
    await LeadService.add_lead_note(db, lead_id, "Private detail", user_id=superuser.id)
    await LeadService.update_lead(db, lead_id, {"company": "Initech"}, user_id=superuser.id)
    other_id = uid(await make_lead(email="kept@example.com"))

    await LeadService.delete_lead(db, lead_id, user_id=superuser.id, hard_delete=True)

    events = await events_of(db, lead_id)
    assert [e.type for e in events] == [
        "lead.created",
        "lead.note_added",
        "lead.updated",
        "lead.deleted",
    ]
    created_fields = set(events[0].changes)
    assert "email" in created_fields and "company" in created_fields
    for event in events:
        assert all(v == {"old": None, "new": None} for v in event.changes.values()), event.changes
        assert event.note is None
    assert set(events[2].changes) == {"company"}  # the field names stay
    assert (events[3].lead_version, events[3].actor_id) == (4, superuser.id)
    [kept] = await events_of(db, other_id)  # another lead's events are untouched
    assert kept.changes["email"] == {"old": None, "new": "kept@example.com"}
