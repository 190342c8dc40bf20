"""LeadService.get_leads: filters, search, sorting, pagination, validation and scoping.

Every test builds its own small data set and asserts the exact ids (and, for sorting, the exact
order) the service must return.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Lead, LeadSource, LeadStatus, User
from app.services import LeadService
from app.services.exceptions import (
    InactiveUserException,
    UserNotFoundException,
    ValidationException,
)
from tests.helpers import ON_POSTGRES, LeadFactory

T0 = datetime(2024, 3, 10, 12, 0, tzinfo=UTC)
PIPELINE = list(LeadStatus)  # NEW, CONTACTED, QUALIFIED, PROPOSAL, NEGOTIATION, WON, LOST, CALLBACK


# ------------------------------------------------------------------------------------ helpers


async def set_fields(db: AsyncSession, lead: Lead, **fields: Any) -> Lead:
    """Set columns the service does not let a caller choose (created_at, updated_at, ...)."""
    for name, value in fields.items():
        setattr(lead, name, value)
    await db.commit()
    return lead


async def matching_ids(db: AsyncSession, **filters: Any) -> list[int]:
    """Ids of every lead matching the filters (sorted by id), checking the total agrees."""
    leads, total = await LeadService.get_leads(db, limit=1000, **filters)
    ids = sorted(lead.id for lead in leads)
    assert total == len(ids)
    return ids


async def page_ids(db: AsyncSession, **kwargs: Any) -> tuple[list[int], int]:
    """Ids of one page in the order the service returns them, and the total."""
    leads, total = await LeadService.get_leads(db, **kwargs)
    return [lead.id for lead in leads], total


async def archive(db: AsyncSession, lead: Lead, user: User) -> int:
    lead_id = lead.id
    await LeadService.delete_lead(db, lead_id, user_id=user.id)
    return lead_id


async def insert_plain_leads(db: AsyncSession, count: int, *, prefix: str = "row") -> None:
    """Many leads in one INSERT, for tests that need more rows than the factory makes quickly."""
    now = datetime.now(UTC)
    await db.execute(
        insert(Lead),
        [
            {
                "first_name": f"{prefix}{n}",
                "last_name": "Plain",
                "email": f"{prefix}{n}@example.com",
                "source": LeadSource.OTHER,
                "status": LeadStatus.NEW,
                "lead_score": 50,
                "score_is_manual": True,
                "tags": [],
                "call_attempts": 0,
                "created_at": now,
                "updated_at": now,
            }
            for n in range(count)
        ],
    )
    await db.commit()


def assert_names_field(exc: ValidationException, *fields: str) -> None:
    named = {exc.field, *(loc for error in exc.errors for loc in error.get("loc", []))}
    assert named & set(fields), f"{exc!r} names none of {fields}: {named}"


def expected_order(
    values: dict[int, Any], order: str, key: Callable[[Any], Any] = lambda v: v
) -> list[int]:
    """The order the service must return: by value, NULLs last both ways, ties by id."""
    present = sorted(
        (i for i, v in values.items() if v is not None), key=lambda i: (key(values[i]), i)
    )
    missing = sorted(i for i, v in values.items() if v is None)
    if order == "asc":
        return present + missing
    return present[::-1] + missing[::-1]


# ------------------------------------------------------------------------- status and source


async def test_status_filter_with_one_status_returns_only_that_status(
    db: AsyncSession, make_lead: LeadFactory
) -> None:
    new = await make_lead(status=LeadStatus.NEW)
    await make_lead(status=LeadStatus.CONTACTED)
    await make_lead(status=LeadStatus.WON)
    new2 = await make_lead(status=LeadStatus.NEW)

    assert await matching_ids(db, status=LeadStatus.NEW) == [new.id, new2.id]


async def test_status_filter_with_several_statuses_returns_any_of_them(
    db: AsyncSession, make_lead: LeadFactory
) -> None:
    new = await make_lead(status=LeadStatus.NEW)
    await make_lead(status=LeadStatus.CONTACTED)
    won = await make_lead(status=LeadStatus.WON)
    await make_lead(status=LeadStatus.CALLBACK)

    assert await matching_ids(db, status=[LeadStatus.WON, LeadStatus.NEW]) == [new.id, won.id]


async def test_status_filter_accepts_strings_alone_and_in_a_list(
    db: AsyncSession, make_lead: LeadFactory
) -> None:
    await make_lead(status=LeadStatus.NEW)
    qualified = await make_lead(status=LeadStatus.QUALIFIED)
    lost = await make_lead(status=LeadStatus.LOST)

    assert await matching_ids(db, status="QUALIFIED") == [qualified.id]
    assert await matching_ids(db, status=["QUALIFIED", "LOST"]) == [qualified.id, lost.id]


async def test_source_filter_with_one_source_returns_only_that_source(
    db: AsyncSession, make_lead: LeadFactory
) -> None:
    referral = await make_lead(source=LeadSource.REFERRAL)
    await make_lead(source=LeadSource.WEBSITE)
    await make_lead(source=LeadSource.OTHER)

    assert await matching_ids(db, source=LeadSource.REFERRAL) == [referral.id]


async def test_source_filter_with_several_sources_returns_any_of_them(
    db: AsyncSession, make_lead: LeadFactory
) -> None:
    facebook = await make_lead(source=LeadSource.FACEBOOK)
    await make_lead(source=LeadSource.WEBSITE)
    whatsapp = await make_lead(source=LeadSource.WHATSAPP)
    await make_lead(source=LeadSource.INSTAGRAM)

    found = await matching_ids(db, source=[LeadSource.WHATSAPP, LeadSource.FACEBOOK])
    assert found == [facebook.id, whatsapp.id]


async def test_source_filter_accepts_strings_alone_and_in_a_list(
    db: AsyncSession, make_lead: LeadFactory
) -> None:
    website = await make_lead(source=LeadSource.WEBSITE)
    instagram = await make_lead(source=LeadSource.INSTAGRAM)
    await make_lead(source=LeadSource.OTHER)

    assert await matching_ids(db, source="WEBSITE") == [website.id]
    assert await matching_ids(db, source=["INSTAGRAM", "WEBSITE"]) == [website.id, instagram.id]


# ------------------------------------------------------------------------------- assignment


async def test_assigned_to_filter_returns_only_that_users_leads(
    db: AsyncSession, make_lead: LeadFactory, agent: User, other_agent: User
) -> None:
    mine = await make_lead(owner=agent)
    await make_lead(owner=other_agent)
    await make_lead()  # unassigned
    mine2 = await make_lead(owner=agent)

    assert await matching_ids(db, assigned_to=agent.id) == [mine.id, mine2.id]


# ------------------------------------------------------------------------------- date range


@pytest.fixture
async def day_edges(db: AsyncSession, make_lead: LeadFactory) -> dict[str, int]:
    """Leads created just before, at the start of, at the end of, and just after 2024-03-10."""
    stamps = {
        "before": datetime(2024, 3, 9, 23, 59, 59, 999999, tzinfo=UTC),
        "start": datetime(2024, 3, 10, 0, 0, tzinfo=UTC),
        "end": datetime(2024, 3, 10, 23, 59, 59, 999999, tzinfo=UTC),
        "after": datetime(2024, 3, 11, 0, 0, tzinfo=UTC),
    }
    ids = {}
    for label, stamp in stamps.items():
        lead = await make_lead()
        await set_fields(db, lead, created_at=stamp)
        ids[label] = lead.id
    return ids


async def test_date_range_start_datetime_is_inclusive(
    db: AsyncSession, day_edges: dict[str, int]
) -> None:
    found = await matching_ids(db, date_range_start=datetime(2024, 3, 10, 0, 0, tzinfo=UTC))
    assert found == [day_edges["start"], day_edges["end"], day_edges["after"]]


async def test_date_range_end_datetime_is_inclusive(
    db: AsyncSession, day_edges: dict[str, int]
) -> None:
    found = await matching_ids(
        db, date_range_end=datetime(2024, 3, 10, 23, 59, 59, 999999, tzinfo=UTC)
    )
    assert found == [day_edges["before"], day_edges["start"], day_edges["end"]]


async def test_date_range_start_plain_date_begins_at_utc_midnight(
    db: AsyncSession, day_edges: dict[str, int]
) -> None:
    found = await matching_ids(db, date_range_start=date(2024, 3, 10))
    assert found == [day_edges["start"], day_edges["end"], day_edges["after"]]


async def test_date_range_end_plain_date_covers_the_whole_utc_day(
    db: AsyncSession, day_edges: dict[str, int]
) -> None:
    found = await matching_ids(db, date_range_end=date(2024, 3, 10))
    assert found == [day_edges["before"], day_edges["start"], day_edges["end"]]


async def test_date_range_same_plain_date_at_both_ends_selects_that_day(
    db: AsyncSession, day_edges: dict[str, int]
) -> None:
    found = await matching_ids(
        db, date_range_start=date(2024, 3, 10), date_range_end=date(2024, 3, 10)
    )
    assert found == [day_edges["start"], day_edges["end"]]


async def test_date_range_naive_datetime_is_read_as_utc(
    db: AsyncSession, day_edges: dict[str, int]
) -> None:
    found = await matching_ids(db, date_range_start=datetime(2024, 3, 10, 0, 0))
    assert found == [day_edges["start"], day_edges["end"], day_edges["after"]]


async def test_date_range_with_utc_offset_compares_the_same_instant(
    db: AsyncSession, day_edges: dict[str, int]
) -> None:
    two_hours_east = timezone(timedelta(hours=2))
    # 02:00 at +02:00 is midnight UTC.
    found = await matching_ids(
        db, date_range_start=datetime(2024, 3, 10, 2, 0, tzinfo=two_hours_east)
    )
    assert found == [day_edges["start"], day_edges["end"], day_edges["after"]]


# ------------------------------------------------------------------------------ score range


@pytest.fixture
async def scored(make_lead: LeadFactory) -> dict[int, int]:
    """score -> lead id, for scores 0, 39, 40, 60, 61, 100."""
    return {score: (await make_lead(lead_score=score)).id for score in (0, 39, 40, 60, 61, 100)}


async def test_lead_score_min_is_inclusive(db: AsyncSession, scored: dict[int, int]) -> None:
    assert await matching_ids(db, lead_score_min=40) == [scored[s] for s in (40, 60, 61, 100)]


async def test_lead_score_max_is_inclusive(db: AsyncSession, scored: dict[int, int]) -> None:
    assert await matching_ids(db, lead_score_max=60) == [scored[s] for s in (0, 39, 40, 60)]


async def test_lead_score_min_and_max_together_bound_both_ends(
    db: AsyncSession, scored: dict[int, int]
) -> None:
    found = await matching_ids(db, lead_score_min=40, lead_score_max=60)
    assert found == [scored[40], scored[60]]


async def test_lead_score_min_equal_to_max_selects_exactly_that_score(
    db: AsyncSession, scored: dict[int, int]
) -> None:
    assert await matching_ids(db, lead_score_min=0, lead_score_max=0) == [scored[0]]
    assert await matching_ids(db, lead_score_min=100, lead_score_max=100) == [scored[100]]


# ----------------------------------------------------------------------------------- search


@pytest.fixture
async def people(make_lead: LeadFactory) -> dict[str, int]:
    """Four leads whose names, emails, phones and companies share no searched substring."""
    leads = {
        "alice": await make_lead(
            first_name="Alice",
            last_name="Johnson",
            email="a1@mailbox.org",
            company="Globex",
        ),
        "bruno": await make_lead(
            first_name="Bruno",
            last_name="Smithers",
            email="billing_team@acme-corp.io",
            company="Save 50% Ltd",
        ),
        "carla": await make_lead(
            first_name="Carla",
            last_name="Diaz",
            email=None,
            phone="+1 (555) 010-2030",
            company="Save 500 Ltd",
        ),
        "dmitri": await make_lead(
            first_name="Dmitri",
            last_name="Petrov",
            email="d4@mailbox.org",
            phone="+44 20 7946 0958",
        ),
    }
    return {name: lead.id for name, lead in leads.items()}


async def test_search_matches_first_name_case_insensitively(
    db: AsyncSession, people: dict[str, int]
) -> None:
    assert await matching_ids(db, search="aLiCe") == [people["alice"]]


async def test_search_is_case_insensitive_for_accented_letters(
    db: AsyncSession, make_lead: LeadFactory
) -> None:
    emile = await make_lead(first_name="Émile", last_name="Müller")
    await make_lead(first_name="Emile", last_name="Muller")

    assert await matching_ids(db, search="émile") == [emile.id]
    assert await matching_ids(db, search="MÜLLER") == [emile.id]


async def test_search_matches_a_substring_of_last_name(
    db: AsyncSession, people: dict[str, int]
) -> None:
    assert await matching_ids(db, search="SMITH") == [people["bruno"]]


async def test_search_matches_full_name_first_then_last(
    db: AsyncSession, people: dict[str, int]
) -> None:
    assert await matching_ids(db, search="alice johnson") == [people["alice"]]
    assert await matching_ids(db, search="ce Jo") == [people["alice"]]


async def test_search_matches_email(db: AsyncSession, people: dict[str, int]) -> None:
    assert await matching_ids(db, search="ACME-corp.IO") == [people["bruno"]]


async def test_search_matches_phone_digits(db: AsyncSession, people: dict[str, int]) -> None:
    assert await matching_ids(db, search="5550102030") == [people["carla"]]


@pytest.mark.parametrize("term", ["+1 (555)", "+1 (555) 010", "555 010-20", "(555).010"])
async def test_search_matches_phone_typed_with_separators(
    db: AsyncSession, people: dict[str, int], term: str
) -> None:
    assert await matching_ids(db, search=term) == [people["carla"]]


async def test_search_matches_company(db: AsyncSession, people: dict[str, int]) -> None:
    assert await matching_ids(db, search="gLOBEx") == [people["alice"]]


async def test_search_percent_sign_is_literal(db: AsyncSession, people: dict[str, int]) -> None:
    # As a LIKE wildcard, "50%" would also match "Save 500 Ltd".
    assert await matching_ids(db, search="50%") == [people["bruno"]]
    assert await matching_ids(db, search="%") == [people["bruno"]]


async def test_search_underscore_is_literal(db: AsyncSession, people: dict[str, int]) -> None:
    # As a LIKE wildcard, "_" would match every lead.
    assert await matching_ids(db, search="_") == [people["bruno"]]
    # As a wildcard, "Gl_bex" would match "Globex".
    assert await matching_ids(db, search="Gl_bex") == []


async def test_search_without_a_match_returns_nothing(
    db: AsyncSession, people: dict[str, int]
) -> None:
    assert await matching_ids(db, search="zebra") == []


# -------------------------------------------------------------------------------- hot leads


async def test_hot_leads_only_keeps_score_80_up_open_and_not_archived(
    db: AsyncSession, make_lead: LeadFactory
) -> None:
    hot_new = await make_lead(lead_score=80, status=LeadStatus.NEW)
    await make_lead(lead_score=79, status=LeadStatus.NEW)
    await make_lead(lead_score=100, status=LeadStatus.WON)
    await make_lead(lead_score=95, status=LeadStatus.LOST)
    hot_callback = await make_lead(lead_score=85, status=LeadStatus.CALLBACK)
    archived = await make_lead(lead_score=90, status=LeadStatus.NEW)
    await set_fields(db, archived, archived_at=T0)

    assert await matching_ids(db, is_hot_leads_only=True) == [hot_new.id, hot_callback.id]


async def test_hot_leads_only_leaves_out_archived_even_when_archived_are_included(
    db: AsyncSession, make_lead: LeadFactory
) -> None:
    hot = await make_lead(lead_score=90, status=LeadStatus.NEGOTIATION)
    archived = await make_lead(lead_score=90, status=LeadStatus.NEGOTIATION)
    await set_fields(db, archived, archived_at=T0)

    found = await matching_ids(db, is_hot_leads_only=True, include_archived=True)
    assert found == [hot.id]


# ------------------------------------------------------------------------------------- tags


@pytest.fixture
async def tagged(make_lead: LeadFactory) -> dict[str, int]:
    leads = {
        "vip_hot": await make_lead(tags=["vip", "hot"]),
        "cold": await make_lead(tags=["cold"]),
        "enterprise": await make_lead(tags=["enterprise"]),
        "none": await make_lead(tags=[]),
    }
    return {name: lead.id for name, lead in leads.items()}


async def test_tags_filter_matches_leads_with_any_of_the_tags(
    db: AsyncSession, tagged: dict[str, int]
) -> None:
    found = await matching_ids(db, tags=["enterprise", "vip"])
    assert found == [tagged["vip_hot"], tagged["enterprise"]]


async def test_tags_filter_input_is_case_insensitive_and_trimmed(
    db: AsyncSession, tagged: dict[str, int]
) -> None:
    assert await matching_ids(db, tags=["VIP", " Cold "]) == [tagged["vip_hot"], tagged["cold"]]


async def test_tags_filter_accepts_a_single_tag_string(
    db: AsyncSession, tagged: dict[str, int]
) -> None:
    assert await matching_ids(db, tags="HOT") == [tagged["vip_hot"]]


async def test_tags_filter_with_unknown_tag_matches_nothing(
    db: AsyncSession, tagged: dict[str, int]
) -> None:
    assert await matching_ids(db, tags=["platinum"]) == []


@pytest.mark.parametrize("tag", ["café", 'say "hi"', "back\\slash", "50%_off", "日本"])
async def test_tags_filter_finds_tags_that_json_escapes(
    db: AsyncSession, make_lead: LeadFactory, tag: str
) -> None:
    """SQLite tests the tags' JSON text before `json_each` (app/models/types.py): a tag
    that JSON escapes must still be found, and only where it is."""
    lead = await make_lead(tags=[tag, "x"])
    await make_lead(tags=["cafe", "say hi", "50", "x"])
    assert await matching_ids(db, tags=[tag]) == [lead.id]


@pytest.mark.skipif(ON_POSTGRES, reason="SQLite's JSON text; PostgreSQL stores varchar[]")
async def test_tags_filter_finds_tags_written_by_sqlites_json_functions(
    db: AsyncSession, make_lead: LeadFactory
) -> None:
    """SQL that rewrites tags with SQLite's JSON functions stores non-ASCII text unescaped
    (Python's json escapes it): the filter finds the tag either way."""
    lead = await make_lead(tags=["x"])
    where = {"id": lead.id}
    await db.execute(text("UPDATE leads SET tags = json_array('café', 'x') WHERE id = :id"), where)
    stored = (await db.execute(text("SELECT tags FROM leads WHERE id = :id"), where)).scalar_one()
    assert "café" in stored
    assert await matching_ids(db, tags=["café"]) == [lead.id]


# --------------------------------------------------------------------------------- archived


async def test_archived_leads_are_left_out_by_default(
    db: AsyncSession, make_lead: LeadFactory, superuser: User
) -> None:
    kept = await make_lead()
    await archive(db, await make_lead(), superuser)

    assert await matching_ids(db) == [kept.id]


async def test_include_archived_returns_archived_leads_too(
    db: AsyncSession, make_lead: LeadFactory, superuser: User
) -> None:
    kept = await make_lead()
    archived_id = await archive(db, await make_lead(), superuser)

    assert await matching_ids(db, include_archived=True) == [kept.id, archived_id]


async def test_archived_leads_are_left_out_of_status_filter_matches(
    db: AsyncSession, make_lead: LeadFactory, superuser: User
) -> None:
    lost = await make_lead(status=LeadStatus.LOST)
    archived_id = await archive(db, await make_lead(), superuser)  # archiving sets LOST

    assert await matching_ids(db, status=LeadStatus.LOST) == [lost.id]
    assert await matching_ids(db, status=LeadStatus.LOST, include_archived=True) == [
        lost.id,
        archived_id,
    ]


# --------------------------------------------------------------------------------- combined


async def test_combined_filters_all_apply_together(
    db: AsyncSession, make_lead: LeadFactory, agent: User, other_agent: User, superuser: User
) -> None:
    match: dict[str, Any] = {
        "owner": agent,
        "status": LeadStatus.CONTACTED,
        "source": LeadSource.WEBSITE,
        "lead_score": 85,
        "company": "Acme Robotics",
        "tags": ["vip"],
    }
    hit = await make_lead(**match)
    await set_fields(db, hit, created_at=T0)
    # Each of these is like the hit but misses a filter.
    misses = [
        {**match, "owner": other_agent},
        {**match, "status": LeadStatus.WON},
        {**match, "source": LeadSource.REFERRAL},
        {**match, "lead_score": 70},
        {**match, "company": "Globex"},
        {**match, "tags": ["cold"]},
        {**match},  # created too early
        {**match},  # archived
    ]
    miss_leads = [await make_lead(**fields) for fields in misses]
    for lead in miss_leads[:-2]:
        await set_fields(db, lead, created_at=T0)
    await set_fields(db, miss_leads[-2], created_at=T0 - timedelta(days=2))
    await set_fields(db, miss_leads[-1], created_at=T0)
    await archive(db, miss_leads[-1], superuser)

    found = await matching_ids(
        db,
        status=[LeadStatus.NEW, LeadStatus.CONTACTED],
        source=LeadSource.WEBSITE,
        assigned_to=agent.id,
        date_range_start=date(2024, 3, 9),
        date_range_end=date(2024, 3, 10),
        lead_score_min=80,
        lead_score_max=90,
        search="acme",
        is_hot_leads_only=True,
        tags=["vip", "enterprise"],
    )
    assert found == [hit.id]


async def test_no_filters_return_every_unarchived_lead(
    db: AsyncSession, make_lead: LeadFactory
) -> None:
    ids = [(await make_lead()).id for _ in range(3)]

    assert await matching_ids(db) == ids


# ---------------------------------------------------------------------------------- sorting


async def _sort_fixture_dates(
    db: AsyncSession, make_lead: LeadFactory, column: str
) -> dict[int, Any]:
    values = [T0 + timedelta(hours=2), T0, T0 + timedelta(hours=1), T0, T0 + timedelta(hours=3)]
    result = {}
    for value in values:
        lead = await make_lead()
        await set_fields(db, lead, **{column: value})
        result[lead.id] = value
    return result


async def _sort_fixture_created_at(db: AsyncSession, make_lead: LeadFactory) -> dict[int, Any]:
    return await _sort_fixture_dates(db, make_lead, "created_at")


async def _sort_fixture_updated_at(db: AsyncSession, make_lead: LeadFactory) -> dict[int, Any]:
    return await _sort_fixture_dates(db, make_lead, "updated_at")


async def _sort_fixture_lead_score(db: AsyncSession, make_lead: LeadFactory) -> dict[int, Any]:
    return {(await make_lead(lead_score=s)).id: s for s in (70, 20, 90, 20, 55)}


async def _sort_fixture_last_name(db: AsyncSession, make_lead: LeadFactory) -> dict[int, Any]:
    names = ("Moreno", "Adams", "Zimmer", "Adams", "Keller")
    return {(await make_lead(last_name=n)).id: n for n in names}


async def _sort_fixture_company(db: AsyncSession, make_lead: LeadFactory) -> dict[int, Any]:
    companies = ("Globex", None, "Acme", "Initech", None, "Acme")
    return {(await make_lead(company=c)).id: c for c in companies}


async def _sort_fixture_status(db: AsyncSession, make_lead: LeadFactory) -> dict[int, Any]:
    statuses = (
        LeadStatus.CALLBACK,
        LeadStatus.NEW,
        LeadStatus.WON,
        LeadStatus.CONTACTED,
        LeadStatus.LOST,
        LeadStatus.PROPOSAL,
        LeadStatus.NEW,
        LeadStatus.QUALIFIED,
        LeadStatus.NEGOTIATION,
    )
    return {(await make_lead(status=s)).id: s for s in statuses}


async def _sort_fixture_last_contact_date(
    db: AsyncSession, make_lead: LeadFactory
) -> dict[int, Any]:
    values = (T0 + timedelta(days=1), None, T0, T0 + timedelta(days=1), None)
    return {(await make_lead(last_contact_date=v)).id: v for v in values}


SORT_CASES: dict[str, tuple[Any, Callable[[Any], Any]]] = {
    "created_at": (_sort_fixture_created_at, lambda v: v),
    "updated_at": (_sort_fixture_updated_at, lambda v: v),
    "lead_score": (_sort_fixture_lead_score, lambda v: v),
    "last_name": (_sort_fixture_last_name, lambda v: v),
    "company": (_sort_fixture_company, lambda v: v),
    "status": (_sort_fixture_status, PIPELINE.index),
    "last_contact_date": (_sort_fixture_last_contact_date, lambda v: v),
}


@pytest.mark.parametrize("sort_order", ["asc", "desc"])
@pytest.mark.parametrize("sort_by", list(SORT_CASES))
async def test_sort_by_each_key_gives_exact_order_nulls_last_ties_by_id(
    db: AsyncSession, make_lead: LeadFactory, sort_by: str, sort_order: str
) -> None:
    build, key = SORT_CASES[sort_by]
    values = await build(db, make_lead)

    ids, total = await page_ids(db, sort_by=sort_by, sort_order=sort_order)

    assert total == len(values)
    assert ids == expected_order(values, sort_order, key)


async def test_sort_by_status_follows_the_pipeline_not_the_alphabet(
    db: AsyncSession, make_lead: LeadFactory
) -> None:
    by_status = {s: (await make_lead(status=s)).id for s in reversed(PIPELINE)}

    ids, _ = await page_ids(db, sort_by="status", sort_order="asc")

    assert ids == [by_status[s] for s in PIPELINE]
    assert [s.value for s in PIPELINE] == [
        "NEW",
        "CONTACTED",
        "QUALIFIED",
        "PROPOSAL",
        "NEGOTIATION",
        "WON",
        "LOST",
        "CALLBACK",
    ]


async def test_sort_by_last_contact_date_puts_never_contacted_last_in_both_directions(
    db: AsyncSession, make_lead: LeadFactory
) -> None:
    never = await make_lead()
    early = await make_lead(last_contact_date=T0)
    late = await make_lead(last_contact_date=T0 + timedelta(days=3))

    asc, _ = await page_ids(db, sort_by="last_contact_date", sort_order="asc")
    desc, _ = await page_ids(db, sort_by="last_contact_date", sort_order="desc")

    assert asc == [early.id, late.id, never.id]
    assert desc == [late.id, early.id, never.id]


async def test_default_sort_is_newest_created_first(
    db: AsyncSession, make_lead: LeadFactory
) -> None:
    values = await _sort_fixture_created_at(db, make_lead)

    ids, _ = await page_ids(db)

    assert ids == expected_order(values, "desc")


@pytest.mark.parametrize("sort_by", ["email", "id", "notes", "CREATED_AT", "created_at; --", ""])
async def test_unknown_sort_by_is_refused(
    db: AsyncSession, make_lead: LeadFactory, sort_by: str
) -> None:
    await make_lead()
    with pytest.raises(ValidationException) as caught:
        await LeadService.get_leads(db, sort_by=sort_by)
    assert_names_field(caught.value, "sort_by")


@pytest.mark.parametrize("sort_order", ["up", "ascending", "", "random"])
async def test_unknown_sort_order_is_refused(
    db: AsyncSession, make_lead: LeadFactory, sort_order: str
) -> None:
    await make_lead()
    with pytest.raises(ValidationException) as caught:
        await LeadService.get_leads(db, sort_order=sort_order)
    assert_names_field(caught.value, "sort_order")


# ------------------------------------------------------------------------------- pagination


async def test_skip_zero_returns_the_first_page(db: AsyncSession, make_lead: LeadFactory) -> None:
    ids = [(await make_lead(lead_score=s)).id for s in (10, 20, 30, 40)]

    page, total = await page_ids(db, sort_by="lead_score", sort_order="asc", skip=0, limit=2)

    assert page == ids[:2]
    assert total == 4


async def test_skip_past_the_end_returns_empty_page_with_the_real_total(
    db: AsyncSession, make_lead: LeadFactory
) -> None:
    for _ in range(3):
        await make_lead()

    assert await page_ids(db, skip=3) == ([], 3)
    assert await page_ids(db, skip=50, limit=10) == ([], 3)


async def test_limit_one_returns_one_lead_and_the_full_total(
    db: AsyncSession, make_lead: LeadFactory
) -> None:
    ids = [(await make_lead(lead_score=s)).id for s in (10, 20, 30)]

    assert await page_ids(db, sort_by="lead_score", sort_order="asc", limit=1) == ([ids[0]], 3)
    assert await page_ids(db, sort_by="lead_score", sort_order="asc", limit=1, skip=2) == (
        [ids[2]],
        3,
    )


async def test_limit_1000_is_allowed_and_caps_the_page(db: AsyncSession) -> None:
    await insert_plain_leads(db, 1001)

    leads, total = await LeadService.get_leads(db, limit=1000)

    assert len(leads) == 1000
    assert total == 1001


async def test_default_limit_is_100(db: AsyncSession) -> None:
    await insert_plain_leads(db, 101)

    leads, total = await LeadService.get_leads(db)

    assert len(leads) == 100
    assert total == 101


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"limit": -1}, "limit"),
        ({"skip": -1}, "skip"),
    ],
    ids=["limit-0", "limit-1001", "limit-negative", "skip-negative"],
)
async def test_out_of_range_page_bounds_are_refused(
    db: AsyncSession, make_lead: LeadFactory, kwargs: dict[str, int], field: str
) -> None:
    await make_lead()
    with pytest.raises(ValidationException) as caught:
        await LeadService.get_leads(db, **kwargs)
    assert_names_field(caught.value, field)


async def test_total_counts_every_match_not_just_the_page(
    db: AsyncSession, make_lead: LeadFactory
) -> None:
    for _ in range(7):
        await make_lead(status=LeadStatus.NEW)
    for _ in range(3):
        await make_lead(status=LeadStatus.CONTACTED)

    leads, total = await LeadService.get_leads(db, status=LeadStatus.NEW, limit=2)

    assert len(leads) == 2
    assert {lead.status for lead in leads} == {LeadStatus.NEW}
    assert total == 7


WALK_VALUES: dict[str, tuple[Sequence[Any], Callable[[Any], Any]]] = {
    "lead_score": ((50, 60, 50, 70), lambda v: v),
    "company": (("Acme", None, "Globex", "Acme", None), lambda v: v),
    "status": ((LeadStatus.NEW, LeadStatus.WON, LeadStatus.NEW), PIPELINE.index),
    "created_at": ((T0, T0 + timedelta(hours=1), T0), lambda v: v),
}


@pytest.mark.parametrize("sort_order", ["asc", "desc"])
@pytest.mark.parametrize("sort_by", list(WALK_VALUES))
async def test_walking_pages_over_equal_sort_values_returns_each_lead_exactly_once(
    db: AsyncSession, make_lead: LeadFactory, sort_by: str, sort_order: str
) -> None:
    cycle, key = WALK_VALUES[sort_by]
    values: dict[int, Any] = {}
    for n in range(23):
        value = cycle[n % len(cycle)]
        if sort_by == "created_at":
            lead = await make_lead()
            await set_fields(db, lead, created_at=value)
        else:
            field = "lead_score" if sort_by == "lead_score" else sort_by
            lead = await make_lead(**{field: value})
        values[lead.id] = value

    walked: list[int] = []
    for skip in range(0, 30, 5):
        page, total = await page_ids(db, sort_by=sort_by, sort_order=sort_order, skip=skip, limit=5)
        assert total == 23
        assert len(page) == max(0, min(5, 23 - skip))
        walked.extend(page)

    assert walked == expected_order(values, sort_order, key)
    assert sorted(walked) == sorted(values)


# ------------------------------------------------------------------------- invalid filters


@pytest.mark.parametrize("status", ["DONE", ["NEW", "DONE"], 7])
async def test_unknown_status_is_refused_naming_status(
    db: AsyncSession, make_lead: LeadFactory, status: Any
) -> None:
    await make_lead()
    with pytest.raises(ValidationException) as caught:
        await LeadService.get_leads(db, status=status)
    assert_names_field(caught.value, "status")


@pytest.mark.parametrize("source", ["TWITTER", ["WEBSITE", "TV"]])
async def test_unknown_source_is_refused_naming_source(
    db: AsyncSession, make_lead: LeadFactory, source: Any
) -> None:
    await make_lead()
    with pytest.raises(ValidationException) as caught:
        await LeadService.get_leads(db, source=source)
    assert_names_field(caught.value, "source")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("lead_score_min", -1),
        ("lead_score_min", 101),
        ("lead_score_max", -1),
        ("lead_score_max", 101),
    ],
)
async def test_score_bound_outside_0_to_100_is_refused_naming_it(
    db: AsyncSession, make_lead: LeadFactory, field: str, value: int
) -> None:
    await make_lead()
    with pytest.raises(ValidationException) as caught:
        await LeadService.get_leads(db, **{field: value})
    assert_names_field(caught.value, field)


async def test_score_min_above_max_is_refused(db: AsyncSession, make_lead: LeadFactory) -> None:
    await make_lead()
    with pytest.raises(ValidationException) as caught:
        await LeadService.get_leads(db, lead_score_min=61, lead_score_max=60)
    assert_names_field(caught.value, "lead_score_min", "lead_score_max")


async def test_date_range_start_after_end_is_refused(
    db: AsyncSession, make_lead: LeadFactory
) -> None:
    await make_lead()
    with pytest.raises(ValidationException) as caught:
        await LeadService.get_leads(
            db,
            date_range_start=datetime(2024, 3, 10, 12, 0, 1, tzinfo=UTC),
            date_range_end=datetime(2024, 3, 10, 12, 0, tzinfo=UTC),
        )
    assert_names_field(caught.value, "date_range_start", "date_range_end")


async def test_date_range_start_date_after_end_date_is_refused(
    db: AsyncSession, make_lead: LeadFactory
) -> None:
    await make_lead()
    with pytest.raises(ValidationException) as caught:
        await LeadService.get_leads(
            db, date_range_start=date(2024, 3, 11), date_range_end=date(2024, 3, 10)
        )
    assert_names_field(caught.value, "date_range_start", "date_range_end")


# ---------------------------------------------------------------------------------- scoping


@pytest.fixture
async def owned(make_lead: LeadFactory, agent: User, other_agent: User) -> dict[str, list[int]]:
    return {
        "agent": [(await make_lead(owner=agent)).id, (await make_lead(owner=agent)).id],
        "other": [(await make_lead(owner=other_agent)).id],
        "nobody": [(await make_lead()).id],
    }


async def test_agent_sees_only_leads_assigned_to_them(
    db: AsyncSession, owned: dict[str, list[int]], agent: User
) -> None:
    assert await matching_ids(db, user_id=agent.id) == owned["agent"]


async def test_agent_cannot_widen_their_scope_with_assigned_to(
    db: AsyncSession, owned: dict[str, list[int]], agent: User, other_agent: User
) -> None:
    assert await matching_ids(db, user_id=agent.id, assigned_to=other_agent.id) == []


async def test_superuser_sees_every_lead(
    db: AsyncSession, owned: dict[str, list[int]], superuser: User
) -> None:
    everything = sorted(owned["agent"] + owned["other"] + owned["nobody"])
    assert await matching_ids(db, user_id=superuser.id) == everything


async def test_user_id_none_is_an_unscoped_internal_call(
    db: AsyncSession, owned: dict[str, list[int]]
) -> None:
    everything = sorted(owned["agent"] + owned["other"] + owned["nobody"])
    assert await matching_ids(db, user_id=None) == everything


async def test_inactive_user_is_refused(
    db: AsyncSession, owned: dict[str, list[int]], inactive_user: User
) -> None:
    with pytest.raises(InactiveUserException):
        await LeadService.get_leads(db, user_id=inactive_user.id)


async def test_unknown_user_is_refused(db: AsyncSession, owned: dict[str, list[int]]) -> None:
    with pytest.raises(UserNotFoundException):
        await LeadService.get_leads(db, user_id=987654)


async def test_a_search_with_a_nul_character_is_refused_naming_search(db: AsyncSession) -> None:
    with pytest.raises(ValidationException) as caught:
        await LeadService.get_leads(db, search="a\x00b")
    assert caught.value.field == "search"


async def test_a_date_bound_past_the_last_representable_day_is_refused(db: AsyncSession) -> None:
    with pytest.raises(ValidationException) as caught:
        await LeadService.get_leads(db, date_range_end=date(9999, 12, 31))
    assert caught.value.field == "date_range_end"
