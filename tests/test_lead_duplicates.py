"""Duplicate leads (issue 16): `POST /leads` refuses a lead whose email or phone a live lead
the caller may see has (409 `duplicate` naming them), unless `?on_duplicate=allow`; an agent
is only ever told of their own leads; `LeadService.create_lead` allows them, as the reference
design's does, unless told otherwise."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Lead, User
from app.services import LeadService
from app.services.exceptions import DuplicateLeadException
from app.services.lead_duplicates import OnDuplicate
from tests.helpers import LeadFactory

LEADS = "/api/v1/leads"
Headers = Callable[[User], dict[str, str]]


def new_lead(**fields: str) -> dict[str, str]:
    return {"first_name": "Ada", "last_name": "Lovelace", **fields}


async def count(db: AsyncSession) -> int:
    return int(await db.scalar(select(func.count()).select_from(Lead)) or 0)


async def test_a_lead_with_a_known_email_in_another_case_is_409_naming_it(
    client: httpx.AsyncClient, h: dict[str, str], make_lead: LeadFactory, db: AsyncSession
) -> None:
    known = await make_lead(email="ada@example.com")
    refused = await client.post(LEADS, json=new_lead(email="ADA@Example.com"), headers=h)
    assert refused.status_code == 409, refused.text
    body = refused.json()
    assert body["code"] == "duplicate"
    assert body["duplicates"] == [{"id": known.id, "matched_on": ["email"]}]
    assert "on_duplicate=allow" in body["detail"]
    assert await count(db) == 1


async def test_a_lead_with_a_known_phone_is_409_matched_on_phone(
    client: httpx.AsyncClient, h: dict[str, str], make_lead: LeadFactory
) -> None:
    known = await make_lead(email="a@example.com", phone="+1 (415) 555-0100")
    sent = new_lead(email="b@example.com", phone="+14155550100")
    refused = await client.post(LEADS, json=sent, headers=h)
    assert refused.status_code == 409
    assert refused.json()["duplicates"] == [{"id": known.id, "matched_on": ["phone"]}]


async def test_every_duplicate_is_named_with_what_matched(
    client: httpx.AsyncClient, h: dict[str, str], make_lead: LeadFactory
) -> None:
    both = await make_lead(email="ada@example.com", phone="+14155550100")
    by_phone = await make_lead(email="other@example.com", phone="+14155550100")
    sent = new_lead(email="ada@example.com", phone="+14155550100")
    refused = await client.post(LEADS, json=sent, headers=h)
    assert refused.json()["duplicates"] == [
        {"id": both.id, "matched_on": ["email", "phone"]},
        {"id": by_phone.id, "matched_on": ["phone"]},
    ]


async def test_on_duplicate_allow_creates_it_anyway(
    client: httpx.AsyncClient, h: dict[str, str], make_lead: LeadFactory, db: AsyncSession
) -> None:
    await make_lead(email="ada@example.com")
    sent = await client.post(
        LEADS, json=new_lead(email="ada@example.com"), params={"on_duplicate": "allow"}, headers=h
    )
    assert sent.status_code == 201, sent.text
    assert await count(db) == 2


async def test_an_archived_lead_is_no_duplicate(
    client: httpx.AsyncClient,
    h: dict[str, str],
    make_lead: LeadFactory,
    superuser: User,
    db: AsyncSession,
) -> None:
    old = await make_lead(email="ada@example.com")
    await LeadService.delete_lead(db, old.id, user_id=superuser.id)
    sent = await client.post(LEADS, json=new_lead(email="ada@example.com"), headers=h)
    assert sent.status_code == 201, sent.text


async def test_an_agent_is_refused_for_their_own_lead(
    client: httpx.AsyncClient, auth_headers: Headers, agent: User, make_lead: LeadFactory
) -> None:
    own = await make_lead(owner=agent, email="ada@example.com")
    refused = await client.post(
        LEADS, json=new_lead(email="ada@example.com"), headers=auth_headers(agent)
    )
    assert refused.status_code == 409
    assert refused.json()["duplicates"] == [{"id": own.id, "matched_on": ["email"]}]


async def test_another_agents_lead_is_not_revealed_and_the_create_goes_ahead(
    client: httpx.AsyncClient,
    auth_headers: Headers,
    agent: User,
    other_agent: User,
    make_lead: LeadFactory,
) -> None:
    await make_lead(owner=other_agent, email="ada@example.com")
    sent = await client.post(
        LEADS, json=new_lead(email="ada@example.com"), headers=auth_headers(agent)
    )
    assert sent.status_code == 201, sent.text


async def test_a_superuser_is_told_of_any_agents_lead(
    client: httpx.AsyncClient, h: dict[str, str], other_agent: User, make_lead: LeadFactory
) -> None:
    theirs = await make_lead(owner=other_agent, email="ada@example.com")
    refused = await client.post(LEADS, json=new_lead(email="ada@example.com"), headers=h)
    assert refused.json()["duplicates"] == [{"id": theirs.id, "matched_on": ["email"]}]


async def test_the_service_allows_duplicates_as_the_reference_does(
    db: AsyncSession, superuser: User, make_lead: LeadFactory
) -> None:
    await make_lead(email="ada@example.com")
    again = await LeadService.create_lead(
        db, new_lead(email="ada@example.com"), user_id=superuser.id
    )
    assert again.id is not None and await count(db) == 2


async def test_the_service_refuses_them_when_asked(
    db: AsyncSession, superuser: User, make_lead: LeadFactory
) -> None:
    known_id = (await make_lead(email="ada@example.com")).id  # the refusal's rollback expires it
    with pytest.raises(DuplicateLeadException) as refused:
        await LeadService.create_lead(
            db,
            new_lead(email="ada@example.com"),
            user_id=superuser.id,
            on_duplicate=OnDuplicate.REJECT,
        )
    assert refused.value.duplicates == [{"id": known_id, "matched_on": ["email"]}]


async def test_a_retry_of_a_created_lead_is_replayed_not_refused_as_its_duplicate(
    client: httpx.AsyncClient, h: dict[str, str], db: AsyncSession
) -> None:
    keyed = {**h, "Idempotency-Key": "create-ada-once"}
    first = await client.post(LEADS, json=new_lead(email="ada@example.com"), headers=keyed)
    again = await client.post(LEADS, json=new_lead(email="ada@example.com"), headers=keyed)
    assert first.status_code == again.status_code == 201, again.text
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert await count(db) == 1


async def test_a_duplicate_sent_with_a_new_key_is_still_refused(
    client: httpx.AsyncClient, h: dict[str, str], make_lead: LeadFactory, db: AsyncSession
) -> None:
    known = await make_lead(email="ada@example.com")
    keyed = {**h, "Idempotency-Key": "a-fresh-key"}
    refused = await client.post(LEADS, json=new_lead(email="ada@example.com"), headers=keyed)
    assert refused.status_code == 409
    assert refused.json()["duplicates"] == [{"id": known.id, "matched_on": ["email"]}]
    assert await count(db) == 1
