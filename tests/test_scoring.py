"""The automatic lead score, as a lead created through the service gets it:

- base 50;
- source: REFERRAL +20, WEBSITE +15, FACEBOOK +10, INSTAGRAM +10, WHATSAPP +5, OTHER 0;
- +10 for a non-blank company;
- +10 for a business email (domain not in FREE_EMAIL_DOMAINS);
- +15 when any tag is in HIGH_VALUE_TAGS;
- capped at 100.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings, install_settings
from app.models import LeadSource, User
from app.services import LeadService

FREE_MAIL = "pat@gmail.com"
BUSINESS_MAIL = "pat@acme-industries.com"

Scorer = Callable[..., Awaitable[int]]


@pytest.fixture
def score(db: AsyncSession, superuser: User) -> Scorer:
    """The automatic score of a lead created with `fields` (free-mail email unless given)."""

    async def scored(**fields: Any) -> int:
        data: dict[str, Any] = {"first_name": "Pat", "last_name": "Doe", "email": FREE_MAIL}
        data.update(fields)
        lead = await LeadService.create_lead(db, data, user_id=superuser.id)
        assert lead.score_is_manual is False
        return lead.lead_score

    return scored


def settings_from_environment(monkeypatch: pytest.MonkeyPatch, **env: str) -> None:
    """Put settings read from this environment in force (the conftest's autouse fixture takes
    them out again): the environment's spelling of a list is part of what is tested."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    install_settings(Settings(_env_file=None))


# ------------------------------------------------------------------------------------- base


async def test_a_lead_with_nothing_that_earns_points_scores_the_base_50(score: Scorer) -> None:
    assert await score() == 50


async def test_a_lead_with_only_a_phone_scores_the_base_50(score: Scorer) -> None:
    assert await score(email=None, phone="+1 555 010 1234") == 50


# ----------------------------------------------------------------------------------- source


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (LeadSource.REFERRAL, 70),
        (LeadSource.WEBSITE, 65),
        (LeadSource.FACEBOOK, 60),
        (LeadSource.INSTAGRAM, 60),
        (LeadSource.WHATSAPP, 55),
        (LeadSource.OTHER, 50),
    ],
)
async def test_each_source_adds_its_points(
    score: Scorer, source: LeadSource, expected: int
) -> None:
    assert await score(source=source) == expected


async def test_source_given_as_text_scores_like_the_enum(score: Scorer) -> None:
    assert await score(source="referral") == 70


# ---------------------------------------------------------------------------------- company


async def test_a_company_adds_10(score: Scorer) -> None:
    assert await score(company="Acme Industries") == 60


@pytest.mark.parametrize("company", ["", "   ", None])
async def test_a_blank_company_adds_nothing(score: Scorer, company: str | None) -> None:
    assert await score(company=company) == 50


# ------------------------------------------------------------------------------------ email


async def test_a_business_email_adds_10(score: Scorer) -> None:
    assert await score(email=BUSINESS_MAIL) == 60


@pytest.mark.parametrize(
    "domain",
    [
        "gmail.com",
        "yahoo.com",
        "hotmail.com",
        "outlook.com",
        "live.com",
        "aol.com",
        "icloud.com",
        "protonmail.com",
        "gmx.com",
        "mail.com",
        "yandex.ru",
    ],
)
async def test_a_free_mail_email_adds_nothing(score: Scorer, domain: str) -> None:
    assert await score(email=f"pat@{domain}") == 50


async def test_free_mail_domains_are_recognised_in_any_case(score: Scorer) -> None:
    assert await score(email="Pat@GMAIL.COM") == 50


# ------------------------------------------------------------------------------------- tags


@pytest.mark.parametrize("tag", ["vip", "enterprise", "decision-maker", "high-value"])
async def test_a_high_value_tag_adds_15(score: Scorer, tag: str) -> None:
    assert await score(tags=[tag]) == 65


async def test_high_value_tags_are_recognised_in_any_case(score: Scorer) -> None:
    assert await score(tags=["  VIP "]) == 65


async def test_several_high_value_tags_add_15_only_once(score: Scorer) -> None:
    assert await score(tags=["vip", "enterprise", "decision-maker", "high-value"]) == 65


async def test_other_tags_add_nothing(score: Scorer) -> None:
    assert await score(tags=["newsletter", "cold", "vip-maybe"]) == 50


async def test_one_high_value_tag_among_others_adds_15(score: Scorer) -> None:
    assert await score(tags=["cold", "enterprise"]) == 65


# ----------------------------------------------------------------------------- combinations


async def test_points_add_up(score: Scorer) -> None:
    # 50 + WHATSAPP 5 + company 10 + business email 10
    assert await score(source=LeadSource.WHATSAPP, company="Acme", email=BUSINESS_MAIL) == 75


async def test_everything_with_website_source_reaches_exactly_100(score: Scorer) -> None:
    # 50 + 15 + 10 + 10 + 15
    fields = {"company": "Acme", "email": BUSINESS_MAIL, "tags": ["vip"]}
    assert await score(source=LeadSource.WEBSITE, **fields) == 100


async def test_the_score_is_capped_at_100(score: Scorer) -> None:
    # 50 + 20 + 10 + 10 + 15 = 105
    fields = {"company": "Acme", "email": BUSINESS_MAIL, "tags": ["vip"]}
    assert await score(source=LeadSource.REFERRAL, **fields) == 100


async def test_referral_with_company_and_business_email_scores_90(score: Scorer) -> None:
    assert await score(source=LeadSource.REFERRAL, company="Acme", email=BUSINESS_MAIL) == 90


# ------------------------------------------------------------------------------- settings


async def test_free_email_domains_setting_replaces_the_default_list(
    score: Scorer, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings_from_environment(monkeypatch, FREE_EMAIL_DOMAINS="acme-industries.com,example.org")
    assert await score(email=BUSINESS_MAIL) == 50
    assert await score(email="pat@example.org") == 50
    assert await score(email="pat@gmail.com") == 60


async def test_free_email_domains_setting_is_trimmed_and_lowercased(
    score: Scorer, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings_from_environment(monkeypatch, FREE_EMAIL_DOMAINS=" Acme-Industries.COM , ")
    assert await score(email=BUSINESS_MAIL) == 50


async def test_high_value_tags_setting_replaces_the_default_list(
    score: Scorer, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings_from_environment(monkeypatch, HIGH_VALUE_TAGS="whale,board-member")
    assert await score(tags=["whale"]) == 65
    assert await score(tags=["board-member"]) == 65
    assert await score(tags=["vip"]) == 50


async def test_high_value_tags_setting_is_trimmed_and_lowercased(
    score: Scorer, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings_from_environment(monkeypatch, HIGH_VALUE_TAGS=" Whale ,SHARK")
    assert await score(tags=["shark"]) == 65


async def test_settings_are_used_when_a_lead_is_rescored_on_update(
    db: AsyncSession, superuser: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings_from_environment(monkeypatch, HIGH_VALUE_TAGS="whale")
    lead = await LeadService.create_lead(
        db, {"first_name": "Pat", "last_name": "Doe", "email": FREE_MAIL}, user_id=superuser.id
    )
    assert lead.lead_score == 50
    lead = await LeadService.update_lead(db, lead.id, {"tags": ["whale"]}, user_id=superuser.id)
    assert lead.lead_score == 65
