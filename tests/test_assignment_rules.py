"""Assignment rules through the API (issue 17): made, shown, changed, deleted, and how each
strategy picks the agent of a new lead made with `assignment_rule_id`. Concurrency across
server processes is tests/test_capture_workers.py."""

from __future__ import annotations

from collections.abc import Callable

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import LeadStatus, User
from tests.helpers import LeadFactory, UserFactory, change_user

API = "/api/v1/assignment-rules"
LEADS = "/api/v1/leads"
Headers = Callable[[User], dict[str, str]]
A_LEAD = {"first_name": "A", "last_name": "B", "email": "a@b.example"}


async def make_rule(
    client: httpx.AsyncClient, h: dict[str, str], agents: list[User], **fields: object
) -> dict:
    body = {"name": "Inbound", "strategy": "round_robin", "agent_ids": [a.id for a in agents]}
    response = await client.post(API, json={**body, **fields}, headers=h)
    assert response.status_code == 201, response.text
    return response.json()


async def lead_by_rule(
    client: httpx.AsyncClient, h: dict[str, str], rule_id: int, n: int = 0
) -> dict:
    response = await client.post(
        LEADS,
        json={
            "first_name": "Ada",
            "last_name": f"Lovelace{n}",
            "email": f"ada{n}@example.com",
            "assignment_rule_id": rule_id,
        },
        headers=h,
    )
    assert response.status_code == 201, response.text
    return response.json()


async def test_a_new_rule_answers_where_it_is_and_that_it_can_assign(
    client: httpx.AsyncClient, h: dict[str, str], agent: User, other_agent: User
) -> None:
    response = await client.post(
        API,
        json={"name": "Inbound", "strategy": "least_open", "agent_ids": [agent.id, other_agent.id]},
        headers=h,
    )

    assert response.status_code == 201, response.text
    body = response.json()
    assert response.headers["Location"] == f"{API}/{body['id']}"
    assert (body["strategy"], body["agent_ids"], body["status"]) == (
        "least_open",
        [agent.id, other_agent.id],
        "active",
    )
    assert (await client.get(f"{API}/{body['id']}", headers=h)).json() == body


async def test_a_rule_naming_a_user_that_does_not_exist_is_404_and_not_stored(
    client: httpx.AsyncClient, h: dict[str, str], agent: User
) -> None:
    response = await client.post(
        API,
        json={"name": "X", "strategy": "round_robin", "agent_ids": [agent.id, 99999]},
        headers=h,
    )

    assert response.status_code == 404
    assert response.json()["code"] == "user_not_found"
    assert "99999" in response.json()["detail"]
    assert (await client.get(API, headers=h)).json()["total"] == 0


async def test_a_fixed_rule_must_name_exactly_one_agent(
    client: httpx.AsyncClient, h: dict[str, str], agent: User, other_agent: User
) -> None:
    response = await client.post(
        API,
        json={"name": "X", "strategy": "fixed", "agent_ids": [agent.id, other_agent.id]},
        headers=h,
    )

    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["body", "agent_ids"]


async def test_a_rule_listing_a_user_twice_is_refused(
    client: httpx.AsyncClient, h: dict[str, str], agent: User
) -> None:
    response = await client.post(
        API,
        json={"name": "X", "strategy": "round_robin", "agent_ids": [agent.id, agent.id]},
        headers=h,
    )

    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"][:2] == ["body", "agent_ids"]


async def test_two_rules_cannot_share_a_name(
    client: httpx.AsyncClient, h: dict[str, str], agent: User
) -> None:
    await make_rule(client, h, [agent])

    again = await client.post(
        API, json={"name": "Inbound", "strategy": "fixed", "agent_ids": [agent.id]}, headers=h
    )

    assert again.status_code == 409
    assert "Inbound" in again.json()["detail"]


async def test_round_robin_hands_leads_to_the_agents_in_turn(
    client: httpx.AsyncClient, h: dict[str, str], make_user: UserFactory
) -> None:
    agents = [await make_user() for _ in range(3)]
    rule = await make_rule(client, h, agents)

    owners = [(await lead_by_rule(client, h, rule["id"], n))["assigned_to"] for n in range(7)]

    ids = [a.id for a in agents]
    assert owners == [*ids, *ids, ids[0]]


async def test_round_robin_skips_an_inactive_agent(
    client: httpx.AsyncClient, h: dict[str, str], make_user: UserFactory, db: AsyncSession
) -> None:
    first, second, third = [await make_user() for _ in range(3)]
    rule = await make_rule(client, h, [first, second, third])
    await change_user(db, second.id, is_active=False)

    owners = [(await lead_by_rule(client, h, rule["id"], n))["assigned_to"] for n in range(4)]

    assert owners == [first.id, third.id, first.id, third.id]


async def test_least_open_picks_the_agent_with_the_fewest_open_leads(
    client: httpx.AsyncClient,
    h: dict[str, str],
    make_user: UserFactory,
    make_lead: LeadFactory,
) -> None:
    busy, idle, closer = [await make_user() for _ in range(3)]
    for _ in range(2):
        await make_lead(owner=busy)
    await make_lead(owner=idle)
    # Closed and archived leads are not open: the closer has none that count.
    for status in (LeadStatus.WON, LeadStatus.LOST, LeadStatus.WON):
        await make_lead(owner=closer, status=status)
    archived = await make_lead(owner=closer)
    await client.delete(f"{LEADS}/{archived.id}", headers=h)
    rule = await make_rule(client, h, [busy, idle, closer], strategy="least_open")

    picked = [(await lead_by_rule(client, h, rule["id"], n))["assigned_to"] for n in range(3)]

    # closer (0 open) first; then closer and idle have 1 each: the lower id wins the tie.
    assert picked[0] == closer.id
    assert picked[1] == min(idle.id, closer.id)
    assert picked[2] == max(idle.id, closer.id)


async def test_a_fixed_rule_always_picks_its_agent(
    client: httpx.AsyncClient, h: dict[str, str], agent: User
) -> None:
    rule = await make_rule(client, h, [agent], strategy="fixed")

    owners = {(await lead_by_rule(client, h, rule["id"], n))["assigned_to"] for n in range(3)}

    assert owners == {agent.id}


async def test_with_no_active_agent_the_lead_stays_unassigned_and_the_rule_says_so(
    client: httpx.AsyncClient, h: dict[str, str], agent: User, db: AsyncSession
) -> None:
    rule = await make_rule(client, h, [agent])
    await change_user(db, agent.id, is_active=False)

    lead = await lead_by_rule(client, h, rule["id"])
    shown = (await client.get(f"{API}/{rule['id']}", headers=h)).json()

    assert lead["assigned_to"] is None
    assert "Left unassigned: assignment rule Inbound has no active agent" in lead["notes"]
    assert (shown["status"], shown["active_agent_ids"]) == ("no_active_agent", [])


async def test_an_agent_may_not_create_a_lead_by_a_rule(
    client: httpx.AsyncClient, h: dict[str, str], agent: User, auth_headers: Headers
) -> None:
    rule = await make_rule(client, h, [agent])

    response = await client.post(
        LEADS,
        json={
            **A_LEAD,
            "assignment_rule_id": rule["id"],
        },
        headers=auth_headers(agent),
    )

    assert response.status_code == 403
    assert (await client.get(LEADS, headers=h)).json()["total"] == 0


async def test_a_lead_cannot_name_both_an_assignee_and_a_rule(
    client: httpx.AsyncClient, h: dict[str, str], agent: User
) -> None:
    rule = await make_rule(client, h, [agent])

    response = await client.post(
        LEADS,
        json={
            **A_LEAD,
            "assigned_to": agent.id,
            "assignment_rule_id": rule["id"],
        },
        headers=h,
    )

    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["body", "assignment_rule_id"]


async def test_a_lead_by_a_rule_that_does_not_exist_is_404_and_not_stored(
    client: httpx.AsyncClient, h: dict[str, str]
) -> None:
    response = await client.post(
        LEADS,
        json={
            **A_LEAD,
            "assignment_rule_id": 777,
        },
        headers=h,
    )

    assert response.status_code == 404
    assert response.json()["code"] == "assignment_rule_not_found"
    assert (await client.get(LEADS, headers=h)).json()["total"] == 0


async def test_a_lead_by_a_rule_records_its_assignee_in_the_created_event(
    client: httpx.AsyncClient, h: dict[str, str], agent: User
) -> None:
    rule = await make_rule(client, h, [agent])
    lead = await lead_by_rule(client, h, rule["id"])

    history = (await client.get(f"{LEADS}/{lead['id']}/history", headers=h)).json()

    created = history["items"][-1]
    assert created["type"] == "lead.created"
    assert created["changes"]["assigned_to"] == {"old": None, "new": agent.id}


async def test_changing_the_agents_starts_the_turn_again(
    client: httpx.AsyncClient, h: dict[str, str], make_user: UserFactory
) -> None:
    first, second, third = [await make_user() for _ in range(3)]
    rule = await make_rule(client, h, [first, second])
    await lead_by_rule(client, h, rule["id"], 0)  # first's turn taken

    changed = await client.patch(
        f"{API}/{rule['id']}", json={"agent_ids": [third.id, first.id]}, headers=h
    )
    owner = (await lead_by_rule(client, h, rule["id"], 1))["assigned_to"]

    assert changed.status_code == 200, changed.text
    assert owner == third.id


async def test_a_rule_can_be_deleted(
    client: httpx.AsyncClient, h: dict[str, str], agent: User
) -> None:
    rule = await make_rule(client, h, [agent])

    deleted = await client.delete(f"{API}/{rule['id']}", headers=h)

    assert deleted.status_code == 204
    assert (await client.get(f"{API}/{rule['id']}", headers=h)).status_code == 404


async def test_a_rule_a_capture_form_uses_cannot_be_deleted(
    client: httpx.AsyncClient, h: dict[str, str], agent: User
) -> None:
    rule = await make_rule(client, h, [agent])
    form = await client.post(
        "/api/v1/capture-forms",
        json={"name": "Contact", "assignment_rule_id": rule["id"]},
        headers=h,
    )

    refused = await client.delete(f"{API}/{rule['id']}", headers=h)

    assert refused.status_code == 409
    assert f"capture forms {form.json()['id']}" in refused.json()["detail"]
    assert (await client.get(f"{API}/{rule['id']}", headers=h)).status_code == 200
