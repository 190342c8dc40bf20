"""LeadService.get_lead_statistics on hand-built data sets with exact expected figures."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Lead, LeadSource, LeadStatus, User
from app.services import LeadService
from app.services.exceptions import InactiveUserException, UserNotFoundException
from tests.helpers import LeadFactory

ALL_STATUSES = [
    "NEW",
    "CONTACTED",
    "QUALIFIED",
    "PROPOSAL",
    "NEGOTIATION",
    "WON",
    "LOST",
    "CALLBACK",
]
ALL_SOURCES = ["WEBSITE", "FACEBOOK", "INSTAGRAM", "WHATSAPP", "REFERRAL", "OTHER"]


def by_status(**counts: int) -> dict[str, int]:
    return {status: counts.get(status, 0) for status in ALL_STATUSES}


def by_source(**counts: int) -> dict[str, int]:
    return {source: counts.get(source, 0) for source in ALL_SOURCES}


EMPTY = {
    "total_leads": 0,
    "leads_by_status": by_status(),
    "leads_by_source": by_source(),
    "average_lead_score": 0.0,
    "hot_leads_count": 0,
    "conversion_rate": 0.0,
    "median_days_to_won": None,
}


async def statistics(db: AsyncSession, user: User | None = None) -> dict[str, Any]:
    return await LeadService.get_lead_statistics(db, user_id=user.id if user else None)


@pytest.fixture
async def pipeline(
    db: AsyncSession,
    make_lead: LeadFactory,
    agent: User,
    other_agent: User,
    superuser: User,
) -> None:
    """Six live leads and two archived ones.

    | owner   | score | status    | source    | hot |
    | agent   | 80    | NEW       | WEBSITE   | yes |
    | agent   | 79    | CONTACTED | WEBSITE   | no (score) |
    | agent   | 95    | WON       | REFERRAL  | no (won) |
    | other   | 90    | LOST      | FACEBOOK  | no (lost) |
    | other   | 85    | CALLBACK  | INSTAGRAM | yes |
    | nobody  | 40    | WON       | OTHER     | no |
    | agent   | 99    | archived (was NEW), WHATSAPP        |
    | other   | 100   | WON, archived_at set, WHATSAPP      |
    """
    rows = [
        (agent, 80, LeadStatus.NEW, LeadSource.WEBSITE),
        (agent, 79, LeadStatus.CONTACTED, LeadSource.WEBSITE),
        (agent, 95, LeadStatus.WON, LeadSource.REFERRAL),
        (other_agent, 90, LeadStatus.LOST, LeadSource.FACEBOOK),
        (other_agent, 85, LeadStatus.CALLBACK, LeadSource.INSTAGRAM),
        (None, 40, LeadStatus.WON, LeadSource.OTHER),
    ]
    for owner, score, status, source in rows:
        await make_lead(owner=owner, lead_score=score, status=status, source=source)

    archived = await make_lead(owner=agent, lead_score=99, source=LeadSource.WHATSAPP)
    await LeadService.delete_lead(db, archived.id, superuser.id)
    won_archived = await make_lead(
        owner=other_agent, lead_score=100, status=LeadStatus.WON, source=LeadSource.WHATSAPP
    )
    won_archived.archived_at = datetime(2024, 1, 1, tzinfo=UTC)
    await db.commit()


ALL_VISIBLE = {
    "total_leads": 6,
    "leads_by_status": by_status(NEW=1, CONTACTED=1, WON=2, LOST=1, CALLBACK=1),
    "leads_by_source": by_source(WEBSITE=2, REFERRAL=1, FACEBOOK=1, INSTAGRAM=1, OTHER=1),
    "average_lead_score": 78.17,  # 469 / 6 = 78.1666...
    "hot_leads_count": 2,
    "conversion_rate": 33.33,  # 2 / 6
    "median_days_to_won": 0.0,  # both live WON leads were created WON
}


# ------------------------------------------------------------------------- the whole picture


async def test_statistics_on_a_known_data_set_are_exact(db: AsyncSession, pipeline: None) -> None:
    assert await statistics(db) == ALL_VISIBLE


async def test_statistics_for_a_superuser_cover_every_lead(
    db: AsyncSession, pipeline: None, superuser: User
) -> None:
    assert await statistics(db, superuser) == ALL_VISIBLE


async def test_statistics_for_an_agent_cover_only_their_leads(
    db: AsyncSession, pipeline: None, agent: User
) -> None:
    assert await statistics(db, agent) == {
        "total_leads": 3,
        "leads_by_status": by_status(NEW=1, CONTACTED=1, WON=1),
        "leads_by_source": by_source(WEBSITE=2, REFERRAL=1),
        "average_lead_score": 84.67,  # 254 / 3 = 84.666...
        "hot_leads_count": 1,
        "conversion_rate": 33.33,
        "median_days_to_won": 0.0,
    }


async def test_statistics_for_the_other_agent_cover_only_their_leads(
    db: AsyncSession, pipeline: None, other_agent: User
) -> None:
    assert await statistics(db, other_agent) == {
        "total_leads": 2,
        "leads_by_status": by_status(LOST=1, CALLBACK=1),
        "leads_by_source": by_source(FACEBOOK=1, INSTAGRAM=1),
        "average_lead_score": 87.5,
        "hot_leads_count": 1,
        "conversion_rate": 0.0,
        "median_days_to_won": None,  # their only WON lead is archived
    }


async def test_statistics_for_an_agent_without_leads_are_all_zero(
    db: AsyncSession, pipeline: None, make_user: Any
) -> None:
    newcomer = await make_user()
    assert await statistics(db, newcomer) == EMPTY


async def test_statistics_on_an_empty_database_are_zero(db: AsyncSession) -> None:
    stats = await statistics(db)

    assert stats == EMPTY
    assert isinstance(stats["average_lead_score"], float)
    assert isinstance(stats["conversion_rate"], float)


# ------------------------------------------------------------------------------ each figure


async def test_leads_by_status_lists_every_status_including_zeros(
    db: AsyncSession, make_lead: LeadFactory
) -> None:
    await make_lead(status=LeadStatus.PROPOSAL)
    await make_lead(status=LeadStatus.PROPOSAL)
    await make_lead(status=LeadStatus.NEGOTIATION)

    stats = await statistics(db)

    assert stats["leads_by_status"] == by_status(PROPOSAL=2, NEGOTIATION=1)


async def test_leads_by_source_lists_every_source_including_zeros(
    db: AsyncSession, make_lead: LeadFactory
) -> None:
    await make_lead(source=LeadSource.WHATSAPP)
    await make_lead(source=LeadSource.REFERRAL)
    await make_lead(source=LeadSource.WHATSAPP)

    stats = await statistics(db)

    assert stats["leads_by_source"] == by_source(WHATSAPP=2, REFERRAL=1)


async def test_average_lead_score_is_rounded_to_two_decimals(
    db: AsyncSession, make_lead: LeadFactory
) -> None:
    for score in (50, 50, 51):
        await make_lead(lead_score=score)

    assert (await statistics(db))["average_lead_score"] == 50.33  # 151 / 3 = 50.333...


async def test_average_lead_score_rounds_up_from_the_third_decimal(
    db: AsyncSession, make_lead: LeadFactory
) -> None:
    for score in (50, 51, 51):
        await make_lead(lead_score=score)

    assert (await statistics(db))["average_lead_score"] == 50.67  # 152 / 3 = 50.666...


async def test_hot_leads_count_needs_score_80_an_open_status_and_no_archive(
    db: AsyncSession, make_lead: LeadFactory, superuser: User
) -> None:
    await make_lead(lead_score=80, status=LeadStatus.NEW)  # hot
    await make_lead(lead_score=100, status=LeadStatus.NEGOTIATION)  # hot
    await make_lead(lead_score=79, status=LeadStatus.NEW)  # score too low
    await make_lead(lead_score=95, status=LeadStatus.WON)  # closed
    await make_lead(lead_score=95, status=LeadStatus.LOST)  # closed
    archived = await make_lead(lead_score=95, status=LeadStatus.QUALIFIED)
    await LeadService.delete_lead(db, archived.id, superuser.id)

    assert (await statistics(db))["hot_leads_count"] == 2


async def test_conversion_rate_is_won_over_total_percent_to_two_decimals(
    db: AsyncSession, make_lead: LeadFactory
) -> None:
    await make_lead(status=LeadStatus.WON)
    await make_lead(status=LeadStatus.WON)
    await make_lead(status=LeadStatus.LOST)

    assert (await statistics(db))["conversion_rate"] == 66.67  # 2 / 3 * 100


async def test_conversion_rate_is_100_when_every_lead_is_won(
    db: AsyncSession, make_lead: LeadFactory
) -> None:
    await make_lead(status=LeadStatus.WON)
    await make_lead(status=LeadStatus.WON)

    assert (await statistics(db))["conversion_rate"] == 100.0


async def test_conversion_rate_is_zero_without_won_leads(
    db: AsyncSession, make_lead: LeadFactory
) -> None:
    await make_lead(status=LeadStatus.NEGOTIATION)

    assert (await statistics(db))["conversion_rate"] == 0.0


# --------------------------------------------------------------------------------- archived


async def test_archived_leads_are_left_out_of_every_figure(
    db: AsyncSession, make_lead: LeadFactory, superuser: User
) -> None:
    await make_lead(lead_score=60, status=LeadStatus.CONTACTED, source=LeadSource.FACEBOOK)
    archived = await make_lead(lead_score=90, status=LeadStatus.WON, source=LeadSource.REFERRAL)
    archived.archived_at = datetime(2024, 1, 1, tzinfo=UTC)
    await db.commit()
    soft_deleted = await make_lead(lead_score=85, source=LeadSource.WEBSITE)
    await LeadService.delete_lead(db, soft_deleted.id, superuser.id)

    assert await statistics(db) == {
        "total_leads": 1,
        "leads_by_status": by_status(CONTACTED=1),
        "leads_by_source": by_source(FACEBOOK=1),
        "average_lead_score": 60.0,
        "hot_leads_count": 0,
        "conversion_rate": 0.0,
        "median_days_to_won": None,  # the WON lead is archived
    }


async def test_only_archived_leads_give_zero_statistics(
    db: AsyncSession, make_lead: LeadFactory, superuser: User
) -> None:
    lead = await make_lead(lead_score=90)
    await LeadService.delete_lead(db, lead.id, superuser.id)

    assert await statistics(db) == EMPTY


# ------------------------------------------------------------------------------ acting user


async def test_statistics_for_an_inactive_user_are_refused(
    db: AsyncSession, pipeline: None, inactive_user: User
) -> None:
    with pytest.raises(InactiveUserException):
        await statistics(db, inactive_user)


async def test_statistics_for_an_unknown_user_are_refused(db: AsyncSession, pipeline: None) -> None:
    with pytest.raises(UserNotFoundException):
        await LeadService.get_lead_statistics(db, user_id=987654)


# ------------------------------------------------------------------------ median days to WON


async def won_after(db: AsyncSession, make_lead: LeadFactory, days: float, **fields: Any) -> int:
    """A WON lead whose status began `days` after its creation."""
    lead = await make_lead(status=LeadStatus.WON, **fields)
    created = datetime(2026, 1, 1, tzinfo=UTC)
    await db.execute(
        update(Lead)
        .where(Lead.id == lead.id)
        .values(created_at=created, status_changed_at=created + timedelta(days=days))
    )
    await db.commit()
    return lead.id


async def test_median_days_to_won_is_the_middle_value_of_an_odd_count(
    db: AsyncSession, make_lead: LeadFactory
) -> None:
    for days in (10, 1, 3):
        await won_after(db, make_lead, days)
    await make_lead(status=LeadStatus.NEGOTIATION)  # not WON: not counted
    assert (await statistics(db))["median_days_to_won"] == 3.0


async def test_median_days_to_won_averages_the_two_middle_values_of_an_even_count(
    db: AsyncSession, make_lead: LeadFactory
) -> None:
    for days in (20, 1, 10, 3):
        await won_after(db, make_lead, days)
    assert (await statistics(db))["median_days_to_won"] == 6.5


async def test_median_days_to_won_keeps_fractions_of_a_day(
    db: AsyncSession, make_lead: LeadFactory
) -> None:
    await won_after(db, make_lead, 1.5)
    assert (await statistics(db))["median_days_to_won"] == 1.5


async def test_median_days_to_won_leaves_out_archived_leads_and_other_agents(
    db: AsyncSession, make_lead: LeadFactory, agent: User, other_agent: User
) -> None:
    await won_after(db, make_lead, 2, owner=agent)
    await won_after(db, make_lead, 50, owner=other_agent)
    archived = await won_after(db, make_lead, 90, owner=agent)
    await db.execute(
        update(Lead).where(Lead.id == archived).values(archived_at=datetime(2026, 3, 1, tzinfo=UTC))
    )
    await db.commit()
    assert (await statistics(db, agent))["median_days_to_won"] == 2.0
    assert (await statistics(db))["median_days_to_won"] == 26.0  # 2 and 50
