"""`GET /leads/{id}/duplicates` (app/services/duplicate_candidates.py): live leads sharing the
lead's email or phone, or with a first name, last name and company alike its own (pg_trgm's
similarity, case and accents aside), scored and ranked best first, at most 20; an agent is
shown only their own."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Lead, User
from app.models.name_likeness import name_key, similarity
from app.services import LeadService
from tests.helpers import LeadFactory, postgres_only

LEADS = "/api/v1/leads"
Headers = Callable[[User], dict[str, str]]


def url(lead: Lead | int) -> str:
    return f"{LEADS}/{lead if isinstance(lead, int) else lead.id}/duplicates"


async def candidates(client: httpx.AsyncClient, lead: Lead, headers: dict[str, str]) -> list:
    response = await client.get(url(lead), headers=headers)
    assert response.status_code == 200, response.text
    return response.json()["items"]


def summary(items: list) -> list[tuple[int, float, list[str]]]:
    return [(item["lead"]["id"], item["score"], item["matched_on"]) for item in items]


async def test_a_lead_with_the_same_email_in_another_case_is_a_candidate(
    client: httpx.AsyncClient, h: dict[str, str], make_lead: LeadFactory
) -> None:
    lead = await make_lead(first_name="Ada", last_name="Lovelace", email="ada@example.com")
    same = await make_lead(first_name="Bob", last_name="Byron", email="ADA@example.com")
    assert summary(await candidates(client, lead, h)) == [(same.id, 0.9, ["email"])]


async def test_a_lead_with_the_same_phone_written_otherwise_is_a_candidate(
    client: httpx.AsyncClient, h: dict[str, str], make_lead: LeadFactory
) -> None:
    lead = await make_lead(first_name="Ada", last_name="Lovelace", phone="+1 415 555 0100")
    same = await make_lead(first_name="Bob", last_name="Byron", phone="+1 (415) 555-0100")
    await make_lead(first_name="Cyd", last_name="Quist", phone="+14155550199")
    assert summary(await candidates(client, lead, h)) == [(same.id, 0.8, ["phone"])]


async def test_a_name_and_company_alike_case_and_accents_aside_is_a_candidate(
    client: httpx.AsyncClient, h: dict[str, str], make_lead: LeadFactory
) -> None:
    lead = await make_lead(first_name="Zoë", last_name="Müller", company="ACME")
    same = await make_lead(first_name="zoe", last_name="MULLER", company="Acme")
    assert summary(await candidates(client, lead, h)) == [(same.id, 0.7, ["name+company"])]


async def test_a_name_unlike_the_leads_is_no_candidate(
    client: httpx.AsyncClient, h: dict[str, str], make_lead: LeadFactory
) -> None:
    lead = await make_lead(first_name="Michael", last_name="Johnson", company="Acme")
    # similarity 0.43: alike by pg_trgm's default threshold (0.3), not by ours (0.5)
    await make_lead(first_name="Michael", last_name="Williams", company="Acme")
    assert await candidates(client, lead, h) == []


async def test_a_typo_in_the_name_is_still_alike_and_scores_below_an_identical_name(
    client: httpx.AsyncClient, h: dict[str, str], make_lead: LeadFactory
) -> None:
    lead = await make_lead(first_name="Michael", last_name="Johnson", company="Acme")
    typo = await make_lead(first_name="Micheal", last_name="Johnson", company="Acme")
    same = await make_lead(first_name="Michael", last_name="Johnson", company="ACME")
    found = summary(await candidates(client, lead, h))
    assert [row[0] for row in found] == [same.id, typo.id]
    expected = round(
        0.7
        * similarity(
            name_key("Michael", "Johnson", "Acme"), name_key("Micheal", "Johnson", "Acme")
        ),
        3,
    )
    assert found[1] == (typo.id, expected, ["name+company"])
    assert 0 < expected < 0.7


async def test_evidence_adds_up_and_the_best_comes_first(
    client: httpx.AsyncClient, h: dict[str, str], make_lead: LeadFactory
) -> None:
    lead = await make_lead(
        first_name="Ada", last_name="Lovelace", email="ada@example.com", phone="+14155550100"
    )
    by_name = await make_lead(first_name="Ada", last_name="Lovelace", email="x@example.com")
    by_email = await make_lead(first_name="Bob", last_name="Byron", email="ada@example.com")
    by_all = await make_lead(
        first_name="ada", last_name="lovelace", email="Ada@example.com", phone="+14155550100"
    )
    assert summary(await candidates(client, lead, h)) == [
        (by_all.id, 0.994, ["email", "phone", "name+company"]),  # 1 - 0.1 x 0.2 x 0.3
        (by_email.id, 0.9, ["email"]),
        (by_name.id, 0.7, ["name+company"]),
    ]


async def test_the_lead_itself_and_archived_leads_are_no_candidates(
    client: httpx.AsyncClient,
    h: dict[str, str],
    make_lead: LeadFactory,
    db: AsyncSession,
    superuser: User,
) -> None:
    lead = await make_lead(first_name="Ada", last_name="Lovelace", email="ada@example.com")
    gone = await make_lead(first_name="Ada", last_name="Lovelace", email="ada@example.com")
    await LeadService.delete_lead(db, gone.id, user_id=superuser.id)
    assert await candidates(client, lead, h) == []


async def test_at_most_20_are_shown_the_lowest_ids_first_among_equals(
    client: httpx.AsyncClient, h: dict[str, str], make_lead: LeadFactory
) -> None:
    lead = await make_lead(first_name="John", last_name="Smith", email="john@example.com")
    namesakes = [
        await make_lead(first_name="John", last_name="Smith", email=f"j{n}@example.com")
        for n in range(22)
    ]
    found = summary(await candidates(client, lead, h))
    assert [row[0] for row in found] == [n.id for n in namesakes[:20]]
    assert {row[1] for row in found} == {0.7}


async def test_with_20_namesakes_a_lead_sharing_the_email_still_comes_first(
    client: httpx.AsyncClient, h: dict[str, str], make_lead: LeadFactory
) -> None:
    lead = await make_lead(first_name="John", last_name="Smith", email="john@example.com")
    for n in range(20):
        await make_lead(first_name="John", last_name="Smith", email=f"j{n}@example.com")
    typo = await make_lead(first_name="Jonh", last_name="Smith", email="jonh@example.com")
    same_email = await make_lead(first_name="Wu", last_name="Chen", email="john@example.com")
    found = summary(await candidates(client, lead, h))
    assert found[0] == (same_email.id, 0.9, ["email"])
    assert len(found) == 20 and typo.id not in [row[0] for row in found]


async def test_with_few_namesakes_alike_names_fill_the_list_by_likeness(
    client: httpx.AsyncClient, h: dict[str, str], make_lead: LeadFactory
) -> None:
    lead = await make_lead(first_name="Johnathan", last_name="Smithers", company="Initech")
    close = await make_lead(first_name="Jonathan", last_name="Smithers", company="Initech")
    namesake = await make_lead(first_name="Johnathan", last_name="Smithers", company="initech")
    farther = await make_lead(first_name="Jonathan", last_name="Smithers", company="Initrode")
    found = [row[0] for row in summary(await candidates(client, lead, h))]
    assert found == [namesake.id, close.id, farther.id]


async def test_a_renamed_lead_is_found_under_its_new_name(
    client: httpx.AsyncClient, h: dict[str, str], make_lead: LeadFactory
) -> None:
    lead = await make_lead(first_name="Grace", last_name="Hopper", company="Navy")
    other = (await make_lead(first_name="Alan", last_name="Turing", company="NPL")).id
    assert await candidates(client, lead, h) == []
    body = {"first_name": "grace", "last_name": "HOPPER", "company": "navy"}
    renamed = await client.patch(f"{LEADS}/{other}", json=body, headers=h)
    assert renamed.status_code == 200, renamed.text
    assert summary(await candidates(client, lead, h)) == [(other, 0.7, ["name+company"])]


async def test_leads_written_in_bulk_are_candidates_too(
    client: httpx.AsyncClient, h: dict[str, str], make_lead: LeadFactory
) -> None:
    lead = await make_lead(first_name="Ada", last_name="Byron", company="Analytical")
    rows = "first_name,last_name,email,company\n" + "".join(
        f"Ada,Byron,ada{n}@example.com,Analytical\n" for n in range(3)
    )
    imported = await client.post(
        f"{LEADS}/import", content=rows, headers={**h, "Content-Type": "text/csv"}
    )
    assert imported.status_code == 200, imported.text
    assert len(await candidates(client, lead, h)) == 3


# --- who sees what -----------------------------------------------------------------------------


async def test_an_agent_is_shown_only_their_own_leads(
    client: httpx.AsyncClient,
    auth_headers: Headers,
    agent: User,
    other_agent: User,
    make_lead: LeadFactory,
) -> None:
    lead = await make_lead(owner=agent, first_name="Ada", last_name="Lovelace", email="a@x.io")
    own = await make_lead(owner=agent, first_name="Bob", last_name="Byron", email="a@x.io")
    await make_lead(owner=other_agent, first_name="Ada", last_name="Lovelace", email="a@x.io")
    await make_lead(first_name="Ada", last_name="Lovelace", email="a@x.io")  # unassigned
    found = summary(await candidates(client, lead, auth_headers(agent)))
    assert found == [(own.id, 0.9, ["email"])]


async def test_a_superuser_is_shown_every_agents_leads(
    client: httpx.AsyncClient,
    h: dict[str, str],
    agent: User,
    other_agent: User,
    make_lead: LeadFactory,
) -> None:
    lead = await make_lead(owner=agent, first_name="Ada", last_name="Lovelace", email="a@x.io")
    theirs = await make_lead(owner=other_agent, first_name="Bob", last_name="Byron", email="a@x.io")
    assert summary(await candidates(client, lead, h)) == [(theirs.id, 0.9, ["email"])]


async def test_another_agents_lead_is_404_as_if_it_did_not_exist(
    client: httpx.AsyncClient,
    auth_headers: Headers,
    agent: User,
    other_agent: User,
    make_lead: LeadFactory,
) -> None:
    theirs = (await make_lead(owner=other_agent)).id
    refused = await client.get(url(theirs), headers=auth_headers(agent))
    missing = await client.get(url(999_999), headers=auth_headers(agent))
    assert refused.status_code == missing.status_code == 404
    assert refused.json()["detail"] == missing.json()["detail"].replace("999999", str(theirs))


# --- the same measure on both databases --------------------------------------------------------

PAIRS = [
    ("ada lovelace acme", "ada lovelace globex"),
    ("michael johnson", "micheal johnson"),
    ("zoe-ann o'neil 12", "zoe ann oneil"),
    ("", "x"),
    ("a", "a"),
    ("straße", "strasse"),
]


@postgres_only
@pytest.mark.parametrize(("a", "b"), PAIRS)
async def test_the_python_similarity_is_pg_trgms(db: AsyncSession, a: str, b: str) -> None:
    stored = await db.scalar(select(func.similarity(a, b)))
    assert similarity(a, b) == pytest.approx(stored, abs=1e-6)


NAMES = [
    ("Zoë", "Müller", "ACME"),
    ("François", "Dupont-Lefèvre", None),
    ("Łukasz", "Żółć", "Ørsted"),
    ("Søren", "Kierkegaard", "Æble ApS"),
    ("José", "Nuñez", "Straße GmbH"),
]


@postgres_only
@pytest.mark.parametrize(("first", "last", "company"), NAMES)
async def test_the_python_name_key_is_the_sql_functions(
    db: AsyncSession, first: str, last: str, company: str | None
) -> None:
    stored = await db.scalar(select(func.crm_name_key(first, last, company)))
    assert name_key(first, last, company) == stored
