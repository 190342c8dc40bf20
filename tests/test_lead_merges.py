"""`POST /leads/{id}/merge` and `/unmerge` (app/services/lead_merges.py): duplicates folded into
one lead in one transaction, and brought back exactly as they were."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Lead, LeadEvent, User
from app.services import LeadService
from tests.helpers import LeadFactory

LEADS = "/api/v1/leads"
Headers = Callable[[User], dict[str, str]]
# What an unmerge may change besides giving every field back: it is a change of its own.
BOOKKEEPING = {"version", "updated_at", "days_since_created", "days_since_last_contact"}


def merge(lead_id: int) -> str:
    return f"{LEADS}/{lead_id}/merge"


def unmerge(lead_id: int) -> str:
    return f"{LEADS}/{lead_id}/unmerge"


async def read(client: httpx.AsyncClient, lead_id: int, h: dict[str, str]) -> dict[str, Any]:
    response = await client.get(f"{LEADS}/{lead_id}", headers=h)
    assert response.status_code == 200, response.text
    return response.json()


def fields_of(lead: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in lead.items() if name not in BOOKKEEPING}


async def set_columns(db: AsyncSession, lead_id: int, **values: Any) -> None:
    await db.execute(update(Lead).where(Lead.id == lead_id).values(**values))
    await db.commit()


async def events_of(db: AsyncSession, lead_id: int) -> list[str]:
    rows = await db.scalars(
        select(LeadEvent.type).where(LeadEvent.lead_id == lead_id).order_by(LeadEvent.id)
    )
    return list(rows)


async def test_the_survivor_keeps_its_own_values_and_fills_its_gaps_from_the_first_merged(
    client: httpx.AsyncClient, h: dict[str, str], make_lead: LeadFactory
) -> None:
    survivor = (await make_lead(first_name="Ada", last_name="Lovelace", email="ada@x.io")).id
    first = (await make_lead(first_name="A.", last_name="L.", email="a@y.io", job_title="CTO")).id
    second = (await make_lead(first_name="Ada", last_name="L", company="Acme", job_title="CEO")).id
    response = await client.post(merge(survivor), json={"merge_ids": [first, second]}, headers=h)
    assert response.status_code == 200, response.text
    lead = response.json()["lead"]
    assert (lead["first_name"], lead["last_name"], lead["email"]) == ("Ada", "Lovelace", "ada@x.io")
    assert (lead["job_title"], lead["company"]) == ("CTO", "Acme")


async def test_fields_takes_each_named_field_from_the_named_lead(
    client: httpx.AsyncClient, h: dict[str, str], make_lead: LeadFactory
) -> None:
    survivor = (await make_lead(email="old@x.io", company="Old Co")).id
    other = (await make_lead(email="new@x.io", company="New Co")).id
    body = {"merge_ids": [other], "fields": {"email": other}}
    lead = (await client.post(merge(survivor), json=body, headers=h)).json()["lead"]
    assert (lead["email"], lead["company"]) == ("new@x.io", "Old Co")


async def test_tags_are_united_calls_added_and_the_latest_contact_kept(
    client: httpx.AsyncClient, h: dict[str, str], make_lead: LeadFactory, db: AsyncSession
) -> None:
    survivor = (await make_lead(tags=["vip", "hot"])).id
    other = (await make_lead(tags=["hot", "expo"])).id
    early, late = datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 5, 1, 12, 30, tzinfo=UTC)
    await set_columns(db, survivor, call_attempts=2, last_contact_date=early)
    await set_columns(db, other, call_attempts=3, last_contact_date=late)
    lead = (await client.post(merge(survivor), json={"merge_ids": [other]}, headers=h)).json()
    lead = lead["lead"]
    assert lead["tags"] == ["vip", "hot", "expo"]
    assert lead["call_attempts"] == 5
    assert lead["last_contact_date"] == "2026-05-01T12:30:00Z"


async def test_notes_are_interleaved_in_time_order_with_a_merge_line(
    client: httpx.AsyncClient, h: dict[str, str], make_lead: LeadFactory, db: AsyncSession
) -> None:
    survivor = (await make_lead()).id
    other = (await make_lead()).id
    await set_columns(
        db,
        survivor,
        notes="[2026-01-01 09:00 UTC] user 1: first\n[2026-03-01 09:00 UTC] user 1: third",
    )
    await set_columns(
        db,
        other,
        notes="[2026-02-01 09:00 UTC] user 2: second\nstill the second\n"
        "[2026-04-01 09:00 UTC] user 2: fourth",
    )
    lead = (await client.post(merge(survivor), json={"merge_ids": [other]}, headers=h)).json()
    lines = lead["lead"]["notes"].splitlines()
    assert [line.split(": ", 1)[-1] for line in lines[:-1]] == [
        "first",
        "second",
        "still the second",
        "third",
        "fourth",
    ]
    assert lines[-1].endswith(f": Merged lead {other} into this one")


async def test_merged_leads_are_archived_with_merged_into_id_and_keep_their_status(
    client: httpx.AsyncClient, h: dict[str, str], make_lead: LeadFactory, db: AsyncSession
) -> None:
    survivor = (await make_lead()).id
    other = (await make_lead(status="QUALIFIED")).id
    body = (await client.post(merge(survivor), json={"merge_ids": [other]}, headers=h)).json()
    [merged] = body["merged"]
    assert merged["id"] == other and merged["merged_into_id"] == survivor
    assert merged["archived_at"] is not None and merged["status"] == "QUALIFIED"
    assert merged["notes"].endswith(f": Merged into lead {survivor}")
    assert body["lead"]["merged_into_id"] is None and body["lead"]["archived_at"] is None


async def test_every_lead_of_a_merge_gets_a_merged_event(
    client: httpx.AsyncClient, h: dict[str, str], make_lead: LeadFactory, db: AsyncSession
) -> None:
    survivor, one, two = [(await make_lead()).id for _ in range(3)]
    await client.post(merge(survivor), json={"merge_ids": [one, two]}, headers=h)
    for lead_id in (survivor, one, two):
        assert (await events_of(db, lead_id))[-1] == "lead.merged"
    event = await db.scalar(
        select(LeadEvent).where(LeadEvent.lead_id == survivor).order_by(LeadEvent.id.desc())
    )
    assert event is not None and event.changes["merged_ids"] == {"old": None, "new": [one, two]}


async def test_an_automatic_score_is_computed_again_and_a_manual_one_kept(
    client: httpx.AsyncClient, h: dict[str, str], make_lead: LeadFactory
) -> None:
    auto = await make_lead(email="a@gmail.com")
    manual = await make_lead(email="m@gmail.com", lead_score=7)
    auto_id, auto_score, manual_id = auto.id, auto.lead_score, manual.id
    rich = (await make_lead(company="Acme", source="REFERRAL")).id
    rich2 = (await make_lead(company="Acme", source="REFERRAL")).id
    scored = (await client.post(merge(auto_id), json={"merge_ids": [rich]}, headers=h)).json()
    kept = (await client.post(merge(manual_id), json={"merge_ids": [rich2]}, headers=h)).json()
    assert scored["lead"]["lead_score"] > auto_score
    assert kept["lead"]["lead_score"] == 7


# --- unmerge -----------------------------------------------------------------------------------


async def test_merge_then_unmerge_leaves_every_lead_exactly_as_before(
    client: httpx.AsyncClient, h: dict[str, str], make_lead: LeadFactory, db: AsyncSession
) -> None:
    survivor = (await make_lead(first_name="Ada", phone="+14155550100", tags=["vip"])).id
    one = (
        await make_lead(
            company="Acme",
            job_title="CTO",
            status="CONTACTED",
            estimated_value=1234.5,
            probability=0.25,
            tags=["hot", "vip"],
        )
    ).id
    two = (await make_lead(email=None, phone="+14155550199", source="REFERRAL")).id
    await set_columns(
        db, two, call_attempts=4, last_contact_date=datetime(2026, 6, 1, 8, 5, 7, 123456, UTC)
    )
    await set_columns(db, one, next_follow_up_date=datetime(2026, 12, 24, 9, 0, tzinfo=UTC))
    before = {i: await read(client, i, h) for i in (survivor, one, two)}
    body = {"merge_ids": [one, two], "fields": {"status": one, "email": one, "source": two}}
    merged = await client.post(merge(survivor), json=body, headers=h)
    assert merged.status_code == 200, merged.text
    assert fields_of(merged.json()["lead"]) != fields_of(before[survivor])
    undone = await client.post(unmerge(survivor), headers=h)
    assert undone.status_code == 200, undone.text
    assert [lead["id"] for lead in undone.json()["merged"]] == [one, two]
    for lead_id, was in before.items():
        now = await read(client, lead_id, h)
        assert fields_of(now) == fields_of(was), lead_id
        assert now["version"] == was["version"] + 2  # the merge, and its undoing
        assert (await events_of(db, lead_id))[-2:] == ["lead.merged", "lead.unmerged"]


async def test_an_unmerge_after_the_survivor_changed_is_409_naming_the_change(
    client: httpx.AsyncClient, h: dict[str, str], make_lead: LeadFactory
) -> None:
    survivor, other = (await make_lead()).id, (await make_lead()).id
    await client.post(merge(survivor), json={"merge_ids": [other]}, headers=h)
    await client.post(f"{LEADS}/{survivor}/notes", json={"text": "Called."}, headers=h)
    before = await read(client, survivor, h)
    refused = await client.post(unmerge(survivor), headers=h)
    assert refused.status_code == 409, refused.text
    assert refused.json()["code"] == "conflict"
    assert "lead.note_added" in refused.json()["detail"]
    assert await read(client, survivor, h) == before
    assert (await read(client, other, h))["merged_into_id"] == survivor


async def test_an_unmerge_with_nothing_merged_is_409(
    client: httpx.AsyncClient, h: dict[str, str], make_lead: LeadFactory
) -> None:
    lead = (await make_lead()).id
    refused = await client.post(unmerge(lead), headers=h)
    assert refused.status_code == 409
    assert "Nothing was merged" in refused.json()["detail"]


async def test_a_second_unmerge_is_409(
    client: httpx.AsyncClient, h: dict[str, str], make_lead: LeadFactory
) -> None:
    survivor, other = (await make_lead()).id, (await make_lead()).id
    await client.post(merge(survivor), json={"merge_ids": [other]}, headers=h)
    assert (await client.post(unmerge(survivor), headers=h)).status_code == 200
    assert (await client.post(unmerge(survivor), headers=h)).status_code == 409


async def test_a_merged_lead_cannot_be_restored_on_its_own(
    client: httpx.AsyncClient, h: dict[str, str], make_lead: LeadFactory
) -> None:
    survivor, other = (await make_lead()).id, (await make_lead()).id
    await client.post(merge(survivor), json={"merge_ids": [other]}, headers=h)
    refused = await client.post(f"{LEADS}/{other}/restore", headers=h)
    assert refused.status_code == 409
    assert f"/leads/{survivor}/unmerge" in refused.json()["detail"]


async def test_a_hard_deleted_survivor_frees_its_merged_leads(
    client: httpx.AsyncClient, h: dict[str, str], make_lead: LeadFactory
) -> None:
    survivor, other = (await make_lead()).id, (await make_lead()).id
    await client.post(merge(survivor), json={"merge_ids": [other]}, headers=h)
    deleted = await client.delete(f"{LEADS}/{survivor}", params={"hard_delete": "true"}, headers=h)
    assert deleted.status_code == 204, deleted.text
    assert (await read(client, other, h))["merged_into_id"] is None
    assert (await client.post(f"{LEADS}/{other}/restore", headers=h)).status_code == 200


# --- refusals change nothing -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"merge_ids": []}, ["body", "merge_ids"]),
        ({"merge_ids": ["SELF"]}, ["body", "merge_ids"]),
        ({"merge_ids": ["OTHER", "OTHER"]}, ["body", "merge_ids"]),
        ({"merge_ids": ["OTHER"], "fields": {"email": 999_999}}, ["body", "fields", "email"]),
        ({"merge_ids": ["OTHER"], "fields": {"notes": "OTHER"}}, ["body", "fields", "notes"]),
        (
            {"merge_ids": ["OTHER"], "fields": {"email": "SELF", "phone": "OTHER"}},
            ["body", "fields"],
        ),
    ],
    ids=["none", "itself", "twice", "field_from_elsewhere", "unmergeable_field", "no_contact"],
)
async def test_a_bad_merge_is_422_at_the_field_and_changes_nothing(
    client: httpx.AsyncClient,
    h: dict[str, str],
    make_lead: LeadFactory,
    body: dict[str, Any],
    loc: list[str],
) -> None:
    survivor = (await make_lead(email=None, phone="+14155550100")).id
    other = (await make_lead(email="o@x.io")).id  # and no phone
    ids = {"SELF": survivor, "OTHER": other}
    sent = _replace(body, ids)
    before = [await read(client, i, h) for i in (survivor, other)]
    refused = await client.post(merge(survivor), json=sent, headers=h)
    assert refused.status_code == 422, refused.text
    assert refused.json()["errors"][0]["loc"][: len(loc)] == loc
    assert [await read(client, i, h) for i in (survivor, other)] == before


def _replace(value: Any, ids: dict[str, int]) -> Any:
    if isinstance(value, dict):
        return {key: _replace(item, ids) for key, item in value.items()}
    if isinstance(value, list):
        return [_replace(item, ids) for item in value]
    return ids.get(value, value) if isinstance(value, str) else value


async def test_merging_an_archived_lead_is_409_and_changes_nothing(
    client: httpx.AsyncClient,
    h: dict[str, str],
    make_lead: LeadFactory,
    db: AsyncSession,
    superuser: User,
) -> None:
    survivor, live, gone = [(await make_lead()).id for _ in range(3)]
    await LeadService.delete_lead(db, gone, user_id=superuser.id)
    before = await read(client, survivor, h)
    refused = await client.post(merge(survivor), json={"merge_ids": [live, gone]}, headers=h)
    assert refused.status_code == 409
    assert await read(client, survivor, h) == before
    assert (await read(client, live, h))["archived_at"] is None


# --- who may merge -----------------------------------------------------------------------------


async def test_an_agent_may_merge_their_own_leads(
    client: httpx.AsyncClient, auth_headers: Headers, agent: User, make_lead: LeadFactory
) -> None:
    survivor = (await make_lead(owner=agent)).id
    other = (await make_lead(owner=agent)).id
    headers = auth_headers(agent)
    assert (
        await client.post(merge(survivor), json={"merge_ids": [other]}, headers=headers)
    ).status_code == 200
    assert (await client.post(unmerge(survivor), headers=headers)).status_code == 200


async def test_an_agent_merging_another_agents_lead_is_404_and_nothing_changes(
    client: httpx.AsyncClient,
    auth_headers: Headers,
    h: dict[str, str],
    agent: User,
    other_agent: User,
    make_lead: LeadFactory,
) -> None:
    survivor = (await make_lead(owner=agent)).id
    theirs = (await make_lead(owner=other_agent)).id
    before = [await read(client, i, h) for i in (survivor, theirs)]
    refused = await client.post(
        merge(survivor), json={"merge_ids": [theirs]}, headers=auth_headers(agent)
    )
    assert refused.status_code == 404
    assert [await read(client, i, h) for i in (survivor, theirs)] == before


async def test_a_superuser_may_merge_leads_of_different_agents(
    client: httpx.AsyncClient,
    h: dict[str, str],
    agent: User,
    other_agent: User,
    make_lead: LeadFactory,
) -> None:
    survivor = (await make_lead(owner=agent)).id
    theirs = (await make_lead(owner=other_agent)).id
    merged = await client.post(merge(survivor), json={"merge_ids": [theirs]}, headers=h)
    assert merged.status_code == 200, merged.text
    assert merged.json()["merged"][0]["assigned_to"] == other_agent.id


@pytest.mark.parametrize(
    "body",
    [
        '{"merge_ids": [2], "fields": {"\\udaed\\udf73": 2}}',
        '{"merge_ids": [2], "fields": {"email\\u0000": 2}}',
        '{"merge_ids": [-1], "fields": {"": [{"N": "\\udaed"}, true], "\\u00a7": {}}}',
    ],
    ids=["lone_surrogate_key", "nul_key", "nested_junk"],
)
async def test_a_hostile_fields_object_is_422_not_500(
    client: httpx.AsyncClient, h: dict[str, str], make_lead: LeadFactory, body: str
) -> None:
    lead = (await make_lead()).id
    sent = await client.post(
        merge(lead), content=body, headers={**h, "Content-Type": "application/json"}
    )
    assert sent.status_code == 422, sent.text
    assert sent.json()["errors"], sent.text
