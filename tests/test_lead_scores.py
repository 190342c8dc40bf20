"""`GET /leads/{id}/score` (app/services/lead_scores.py): the lines of the points table that
apply to a lead, adding up to its automatic score, and the version of the rules."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import httpx
import pytest

from app.config import use_settings
from app.models import LeadSource, User
from app.services.scoring import BASE_SCORE, MAX_SCORE, scoring_version
from tests.helpers import LeadFactory, make_settings

LEADS = "/api/v1/leads"
Headers = Callable[[User], dict[str, str]]
COMBINATIONS = list(
    itertools.product(list(LeadSource), (False, True), (False, True), (False, True))
)


async def score_of(client: httpx.AsyncClient, lead_id: int, h: dict[str, str]) -> dict:
    response = await client.get(f"{LEADS}/{lead_id}/score", headers=h)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.parametrize(
    ("source", "company", "business", "valuable"),
    COMBINATIONS,
    ids=[f"{s.value}-{c:d}{b:d}{v:d}" for s, c, b, v in COMBINATIONS],
)
async def test_the_factors_add_up_to_the_score_for_every_combination(
    client: httpx.AsyncClient,
    h: dict[str, str],
    make_lead: LeadFactory,
    source: LeadSource,
    company: bool,
    business: bool,
    valuable: bool,
) -> None:
    lead = await make_lead(
        source=source,
        company="Acme" if company else None,
        email="ada@acme.com" if business else "ada@gmail.com",
        tags=["vip", "hot"] if valuable else ["hot"],
    )
    lead_id, stored = lead.id, lead.lead_score
    body = await score_of(client, lead_id, h)
    total = body["base"] + sum(factor["points"] for factor in body["factors"])
    assert body["base"] == BASE_SCORE
    assert body["score"] == body["automatic_score"] == stored == min(total, MAX_SCORE)
    assert body["capped"] is (total > MAX_SCORE)
    names = [factor["factor"] for factor in body["factors"]]
    expected = ["source"] + ["company"] * company + ["business_email"] * business
    assert names == expected + ["high_value_tag"] * valuable


async def test_each_factor_says_what_it_applied_to(
    client: httpx.AsyncClient, h: dict[str, str], make_lead: LeadFactory
) -> None:
    lead = await make_lead(
        source="REFERRAL", company="Acme", email="ada@acme.com", tags=["hot", "VIP"]
    )
    body = await score_of(client, lead.id, h)
    assert body["factors"] == [
        {"factor": "source", "value": "REFERRAL", "points": 20},
        {"factor": "company", "value": None, "points": 10},
        {"factor": "business_email", "value": "acme.com", "points": 10},
        {"factor": "high_value_tag", "value": "vip", "points": 15},
    ]
    assert (body["score"], body["capped"], body["is_manual"]) == (100, True, False)


async def test_a_manual_score_is_shown_as_stored_beside_the_automatic_one(
    client: httpx.AsyncClient, h: dict[str, str], make_lead: LeadFactory
) -> None:
    lead = await make_lead(source="WEBSITE", email="ada@gmail.com", lead_score=7)
    body = await score_of(client, lead.id, h)
    assert (body["score"], body["is_manual"], body["automatic_score"]) == (7, True, 65)


async def test_the_version_names_the_rules_in_force(
    client: httpx.AsyncClient, h: dict[str, str], make_lead: LeadFactory
) -> None:
    lead_id = (await make_lead(tags=["gold"])).id
    before = await score_of(client, lead_id, h)
    with use_settings(make_settings(high_value_tags=("gold",))):
        after = await score_of(client, lead_id, h)
        assert after["version"] == scoring_version()
    assert before["version"] != after["version"]
    assert [f["factor"] for f in after["factors"]][-1] == "high_value_tag"
    assert after["automatic_score"] == before["automatic_score"] + 15


async def test_another_agents_lead_is_404(
    client: httpx.AsyncClient,
    auth_headers: Headers,
    agent: User,
    other_agent: User,
    make_lead: LeadFactory,
) -> None:
    own = (await make_lead(owner=agent)).id
    theirs = (await make_lead(owner=other_agent)).id
    assert (await client.get(f"{LEADS}/{own}/score", headers=auth_headers(agent))).is_success
    refused = await client.get(f"{LEADS}/{theirs}/score", headers=auth_headers(agent))
    assert refused.status_code == 404
