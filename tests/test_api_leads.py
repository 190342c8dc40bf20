"""The leads API over HTTP, and the health checks: each endpoint's success path, with the exact
response a client gets (status, headers, every field of the lead, ISO 8601 datetimes in UTC).

Requests run through the real app against the test's database; "nothing changed" checks read
the rows back with fresh queries.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.database import create_engine
from app.main import create_app
from app.models import Lead, User
from app.services import LeadService
from tests.helpers import LeadFactory, count_rows, uid

LEADS = "/api/v1/leads"
DERIVED_FIELDS = {"days_since_created", "days_since_last_contact", "is_hot_lead"}
BOOKKEEPING = {"archive_added_tag"}  # a column the API does not show
LEAD_FIELDS = set(Lead.__table__.columns.keys()) - BOOKKEEPING | DERIVED_FIELDS
DATETIME_FIELDS = (
    "created_at",
    "updated_at",
    "last_contact_date",
    "next_follow_up_date",
    "archived_at",
)
NOTE_LINE = re.compile(r"^\[\d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC\] user (\d+): (.*)$")


# ---------------------------------------------------------------------------------- helpers


def parse_utc(value: str) -> datetime:
    """An API datetime: ISO 8601 with an explicit UTC offset ("Z" or "+00:00")."""
    assert isinstance(value, str), value
    assert value.endswith(("Z", "+00:00")), f"{value!r} has no UTC offset"
    parsed = datetime.fromisoformat(value)
    assert parsed.utcoffset() == timedelta(0), value
    return parsed


def assert_lead(body: Any) -> dict[str, Any]:
    """A lead as the API returns it: every model field plus the derived ones, nothing else,
    and every datetime in ISO 8601 with a UTC offset."""
    assert isinstance(body, dict)
    assert set(body) == LEAD_FIELDS
    for name in DATETIME_FIELDS:
        if body[name] is not None:
            parse_utc(body[name])
    assert isinstance(body["days_since_created"], int)
    assert body["days_since_last_contact"] is None or isinstance(
        body["days_since_last_contact"], int
    )
    assert isinstance(body["is_hot_lead"], bool)
    return body


def last_note(body: dict[str, Any]) -> tuple[int, str]:
    """(author id, text) of the lead's newest note line."""
    match = NOTE_LINE.match(body["notes"].split("\n")[-1])
    assert match, body["notes"]
    return int(match.group(1)), match.group(2)


def ids(body: dict[str, Any]) -> list[int]:
    return [item["id"] for item in body["items"]]


async def stored_row(db: AsyncSession, lead_id: int) -> dict[str, Any] | None:
    row = (
        (await db.execute(text("SELECT * FROM leads WHERE id = :id"), {"id": lead_id}))
        .mappings()
        .first()
    )
    return dict(row) if row is not None else None


async def stored_lead(db: AsyncSession, lead_id: int) -> Lead:
    lead = await db.scalar(
        select(Lead).where(Lead.id == lead_id).execution_options(populate_existing=True)
    )
    assert lead is not None
    return lead


async def set_created_at(db: AsyncSession, lead_id: int, when: datetime) -> None:
    await db.execute(update(Lead).where(Lead.id == lead_id).values(created_at=when))
    await db.commit()


@pytest.fixture(autouse=True)
def _no_password_hash_in_any_response(client: httpx.AsyncClient) -> None:
    async def check(response: httpx.Response) -> None:
        await response.aread()
        assert "hashed_password" not in response.text
        assert "$argon2" not in response.text

    client.event_hooks["response"].append(check)


# ------------------------------------------------------------------------------------ health


async def test_health_answers_200_ok(client: httpx.AsyncClient) -> None:
    response = await client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readiness_answers_200_when_the_database_answers(client: httpx.AsyncClient) -> None:
    response = await client.get("/health/ready")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok"}


async def test_readiness_answers_503_with_a_reason_when_the_database_is_unreachable(
    tmp_path: Any, settings: Settings
) -> None:
    unreachable = create_engine(f"sqlite+aiosqlite:///{tmp_path}/missing/dir/crm.db")
    transport = httpx.ASGITransport(app=create_app(engine=unreachable))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            response = await client.get("/health/ready")
    finally:
        await unreachable.dispose()
    assert response.status_code == 503
    body = response.json()
    assert set(body) == {"detail", "code"}
    assert body["code"] == "database_unavailable"
    assert body["detail"].startswith("The database is not reachable")


# ------------------------------------------------------------------------------------- list


async def test_list_answers_a_page_envelope_of_full_leads(
    client: httpx.AsyncClient, h: dict[str, str], make_lead: LeadFactory
) -> None:
    first = uid(await make_lead())
    second = uid(await make_lead())
    response = await client.get(LEADS, headers=h)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"items", "total", "total_is_exact", "skip", "limit", "next_cursor"}
    assert (body["total"], body["skip"], body["limit"]) == (2, 0, 100)
    assert (body["total_is_exact"], body["next_cursor"]) == (True, None)
    assert ids(body) == [second, first]  # newest first by default
    for item in body["items"]:
        assert_lead(item)


async def test_list_filters_by_repeated_status(
    client: httpx.AsyncClient, h: dict[str, str], make_lead: LeadFactory
) -> None:
    new = uid(await make_lead(status="NEW"))
    await make_lead(status="CONTACTED")
    won = uid(await make_lead(status="WON"))
    response = await client.get(f"{LEADS}?status=NEW&status=WON&sort_by=created_at", headers=h)
    assert response.status_code == 200
    assert sorted(ids(response.json())) == [new, won]
    assert response.json()["total"] == 2


async def test_list_filters_by_repeated_source(
    client: httpx.AsyncClient, h: dict[str, str], make_lead: LeadFactory
) -> None:
    web = uid(await make_lead(source="WEBSITE"))
    referral = uid(await make_lead(source="REFERRAL"))
    await make_lead(source="FACEBOOK")
    response = await client.get(f"{LEADS}?source=WEBSITE&source=REFERRAL", headers=h)
    assert response.status_code == 200
    assert sorted(ids(response.json())) == [web, referral]


async def test_list_filters_by_repeated_tags_matching_any(
    client: httpx.AsyncClient, h: dict[str, str], make_lead: LeadFactory
) -> None:
    vip = uid(await make_lead(tags=["vip"]))
    enterprise = uid(await make_lead(tags=["enterprise", "renewal"]))
    await make_lead(tags=["cold"])
    await make_lead()
    response = await client.get(f"{LEADS}?tags=vip&tags=enterprise", headers=h)
    assert response.status_code == 200
    assert sorted(ids(response.json())) == [vip, enterprise]


async def test_list_filters_by_assignee(
    client: httpx.AsyncClient,
    h: dict[str, str],
    make_lead: LeadFactory,
    agent: User,
    other_agent: User,
) -> None:
    await make_lead(owner=agent)
    theirs = uid(await make_lead(owner=other_agent))
    await make_lead()
    response = await client.get(LEADS, params={"assigned_to": uid(other_agent)}, headers=h)
    assert response.status_code == 200
    assert ids(response.json()) == [theirs]


async def test_list_filters_by_a_date_range_given_as_whole_days(
    client: httpx.AsyncClient, h: dict[str, str], make_lead: LeadFactory, db: AsyncSession
) -> None:
    before, first_day, last_day, after = [uid(await make_lead()) for _ in range(4)]
    await set_created_at(db, before, datetime(2026, 1, 9, 23, 59, tzinfo=UTC))
    await set_created_at(db, first_day, datetime(2026, 1, 10, 0, 0, tzinfo=UTC))
    await set_created_at(db, last_day, datetime(2026, 1, 15, 23, 59, tzinfo=UTC))
    await set_created_at(db, after, datetime(2026, 1, 16, 0, 0, tzinfo=UTC))
    response = await client.get(
        LEADS, params={"date_range_start": "2026-01-10", "date_range_end": "2026-01-15"}, headers=h
    )
    assert response.status_code == 200
    assert sorted(ids(response.json())) == [first_day, last_day]


async def test_list_filters_by_a_date_range_given_as_datetimes_with_offsets(
    client: httpx.AsyncClient, h: dict[str, str], make_lead: LeadFactory, db: AsyncSession
) -> None:
    early, inside, at_end, late = [uid(await make_lead()) for _ in range(4)]
    await set_created_at(db, early, datetime(2026, 1, 10, 8, 59, tzinfo=UTC))
    await set_created_at(db, inside, datetime(2026, 1, 10, 9, 0, tzinfo=UTC))
    await set_created_at(db, at_end, datetime(2026, 1, 15, 12, 0, tzinfo=UTC))
    await set_created_at(db, late, datetime(2026, 1, 15, 12, 0, 1, tzinfo=UTC))
    response = await client.get(
        LEADS,
        params={
            # 10:00 at +01:00 is 09:00 UTC; the end is inclusive to the second.
            "date_range_start": "2026-01-10T10:00:00+01:00",
            "date_range_end": "2026-01-15T12:00:00Z",
        },
        headers=h,
    )
    assert response.status_code == 200
    assert sorted(ids(response.json())) == [inside, at_end]


async def test_list_filters_by_score_range(
    client: httpx.AsyncClient, h: dict[str, str], make_lead: LeadFactory
) -> None:
    await make_lead(lead_score=39)
    low = uid(await make_lead(lead_score=40))
    high = uid(await make_lead(lead_score=60))
    await make_lead(lead_score=61)
    response = await client.get(f"{LEADS}?lead_score_min=40&lead_score_max=60", headers=h)
    assert response.status_code == 200
    assert sorted(ids(response.json())) == [low, high]


async def test_list_search_matches_any_text_field_ignoring_case(
    client: httpx.AsyncClient, h: dict[str, str], make_lead: LeadFactory
) -> None:
    by_company = uid(await make_lead(company="Acme Corp"))
    by_name = uid(await make_lead(last_name="Acmeson"))
    by_email = uid(await make_lead(email="buyer@acme.io"))
    await make_lead(company="Globex")
    response = await client.get(LEADS, params={"search": "ACME"}, headers=h)
    assert response.status_code == 200
    assert sorted(ids(response.json())) == [by_company, by_name, by_email]


async def test_list_hot_leads_only(
    client: httpx.AsyncClient, h: dict[str, str], make_lead: LeadFactory
) -> None:
    hot = uid(await make_lead(lead_score=80))
    await make_lead(lead_score=79)
    await make_lead(lead_score=95, status="WON")  # closed leads are never hot
    response = await client.get(f"{LEADS}?is_hot_leads_only=true", headers=h)
    assert response.status_code == 200
    body = response.json()
    assert ids(body) == [hot]
    assert body["items"][0]["is_hot_lead"] is True


async def test_list_leaves_out_archived_leads_unless_asked(
    client: httpx.AsyncClient,
    h: dict[str, str],
    make_lead: LeadFactory,
    db: AsyncSession,
    superuser: User,
) -> None:
    kept = uid(await make_lead())
    archived = uid(await make_lead())
    await LeadService.delete_lead(db, archived, user_id=uid(superuser))
    default = await client.get(LEADS, headers=h)
    assert ids(default.json()) == [kept]
    included = await client.get(f"{LEADS}?include_archived=true", headers=h)
    assert included.status_code == 200
    assert sorted(ids(included.json())) == [kept, archived]
    assert included.json()["total"] == 2


async def test_list_pages_with_skip_and_limit(
    client: httpx.AsyncClient, h: dict[str, str], make_lead: LeadFactory
) -> None:
    by_score = [uid(await make_lead(lead_score=score)) for score in (10, 20, 30, 40, 50)]
    response = await client.get(
        f"{LEADS}?sort_by=lead_score&sort_order=asc&skip=1&limit=2", headers=h
    )
    assert response.status_code == 200
    body = response.json()
    assert ids(body) == by_score[1:3]
    assert (body["total"], body["skip"], body["limit"]) == (5, 1, 2)


async def test_list_applies_every_filter_at_once(
    client: httpx.AsyncClient,
    h: dict[str, str],
    make_lead: LeadFactory,
    agent: User,
    db: AsyncSession,
) -> None:
    wanted = uid(
        await make_lead(
            owner=agent,
            status="QUALIFIED",
            source="REFERRAL",
            tags=["vip"],
            lead_score=85,
            company="Acme",
        )
    )
    near_miss = uid(
        await make_lead(owner=agent, status="QUALIFIED", source="REFERRAL", lead_score=85)
    )
    await set_created_at(db, wanted, datetime(2026, 3, 5, 12, 0, tzinfo=UTC))
    await set_created_at(db, near_miss, datetime(2026, 3, 5, 12, 0, tzinfo=UTC))
    params: list[tuple[str, str | int]] = [
        ("status", "QUALIFIED"),
        ("status", "NEW"),
        ("source", "REFERRAL"),
        ("source", "WEBSITE"),
        ("tags", "vip"),
        ("tags", "enterprise"),
        ("assigned_to", uid(agent)),
        ("date_range_start", "2026-03-05"),
        ("date_range_end", "2026-03-05T23:59:59+00:00"),
        ("lead_score_min", 80),
        ("lead_score_max", 90),
        ("search", "acme"),
        ("is_hot_leads_only", "true"),
        ("include_archived", "true"),
        ("skip", 0),
        ("limit", 10),
        ("sort_by", "lead_score"),
        ("sort_order", "asc"),
    ]
    response = await client.get(LEADS, params=params, headers=h)
    assert response.status_code == 200
    body = response.json()
    assert ids(body) == [wanted]
    assert (body["total"], body["skip"], body["limit"]) == (1, 0, 10)


@pytest.mark.parametrize("order", ["asc", "desc"])
async def test_list_sorts_by_the_given_field_and_order(
    client: httpx.AsyncClient, h: dict[str, str], make_lead: LeadFactory, order: str
) -> None:
    charlie = uid(await make_lead(last_name="Charlie"))
    alpha = uid(await make_lead(last_name="Alpha"))
    bravo = uid(await make_lead(last_name="Bravo"))
    response = await client.get(f"{LEADS}?sort_by=last_name&sort_order={order}", headers=h)
    assert response.status_code == 200
    ascending = [alpha, bravo, charlie]
    assert ids(response.json()) == (ascending if order == "asc" else ascending[::-1])


# ----------------------------------------------------------------------------------- create


async def test_create_answers_201_with_location_and_an_automatic_score(
    client: httpx.AsyncClient, auth_headers: Any, agent: User, db: AsyncSession
) -> None:
    agent_id = uid(agent)
    response = await client.post(
        LEADS,
        json={
            "first_name": "Jane",
            "last_name": "Smith",
            "email": "jane.smith@acme-industries.com",
            "company": "Acme Industries",
            "source": "WEBSITE",
        },
        headers=auth_headers(agent),
    )
    assert response.status_code == 201
    body = assert_lead(response.json())
    assert response.headers["location"] == f"/api/v1/leads/{body['id']}"
    # 50 base + 15 website + 10 company + 10 business email
    assert body["lead_score"] == 85
    assert body["score_is_manual"] is False
    assert body["assigned_to"] == agent_id
    assert body["created_by"] == agent_id
    assert body["status"] == "NEW"
    assert last_note(body) == (agent_id, "Created (score 85)")
    assert await count_rows(db) == 1


async def test_create_keeps_a_given_score_as_manual(
    client: httpx.AsyncClient, h: dict[str, str]
) -> None:
    response = await client.post(
        LEADS,
        json={"first_name": "Pat", "last_name": "Lee", "phone": "+1 555 010 2030", "lead_score": 7},
        headers=h,
    )
    assert response.status_code == 201
    body = assert_lead(response.json())
    assert (body["lead_score"], body["score_is_manual"]) == (7, True)
    assert body["phone"] == "+15550102030"


async def test_created_lead_reads_back_at_its_location(
    client: httpx.AsyncClient, h: dict[str, str]
) -> None:
    created = await client.post(
        LEADS, json={"first_name": "Jane", "last_name": "Smith", "email": "j@acme.com"}, headers=h
    )
    assert created.status_code == 201
    read = await client.get(created.headers["location"], headers=h)
    assert read.status_code == 200
    assert read.json() == created.json()


# ------------------------------------------------------------------------------------- read


async def test_read_answers_every_field_of_the_lead(
    client: httpx.AsyncClient,
    h: dict[str, str],
    make_lead: LeadFactory,
    agent: User,
    superuser: User,
) -> None:
    follow_up = datetime(2030, 5, 6, 7, 8, 9, tzinfo=UTC)
    lead = await make_lead(
        owner=agent,
        first_name="Jane",
        last_name="Smith",
        email="jane@acme.com",
        phone="+1 (555) 010-2030",
        company="Acme",
        job_title="CTO",
        source="REFERRAL",
        status="QUALIFIED",
        probability=0.4,
        estimated_value=Decimal("1234.50"),
        tags=["VIP", "renewal"],
        next_follow_up_date=follow_up,
    )
    lead_id, agent_id, boss_id = uid(lead), uid(agent), uid(superuser)
    response = await client.get(f"{LEADS}/{lead_id}", headers=h)
    assert response.status_code == 200
    body = assert_lead(response.json())
    created_at = parse_utc(body["created_at"])
    assert abs(datetime.now(UTC) - created_at) < timedelta(minutes=5)
    assert body == {
        "id": lead_id,
        "first_name": "Jane",
        "last_name": "Smith",
        "email": "jane@acme.com",
        "phone": "+15550102030",
        "company": "Acme",
        "job_title": "CTO",
        "source": "REFERRAL",
        "status": "QUALIFIED",
        "assigned_to": agent_id,
        "lead_score": 100,  # 50 + 20 referral + 10 company + 10 business mail + 15 vip
        "score_is_manual": False,
        "probability": 0.4,
        "estimated_value": 1234.5,
        "tags": ["vip", "renewal"],
        "notes": body["notes"],
        "call_attempts": 0,
        "last_contact_date": None,
        "next_follow_up_date": body["next_follow_up_date"],
        "created_by": boss_id,
        "created_at": body["created_at"],
        "updated_at": body["created_at"],
        "status_changed_at": body["created_at"],
        "archived_at": None,
        "status_before_archive": None,
        "merged_into_id": None,
        "version": 1,
        "days_since_created": 0,
        "days_since_last_contact": None,
        "is_hot_lead": True,
    }
    assert parse_utc(body["next_follow_up_date"]) == follow_up
    assert last_note(body) == (boss_id, "Created (score 100)")


async def test_days_since_created_and_last_contact_count_whole_days(
    client: httpx.AsyncClient, h: dict[str, str], make_lead: LeadFactory, db: AsyncSession
) -> None:
    lead_id = uid(await make_lead())
    now = datetime.now(UTC)
    await set_created_at(db, lead_id, now - timedelta(days=3, hours=1))
    response = await client.patch(
        f"{LEADS}/{lead_id}",
        json={"last_contact_date": (now - timedelta(days=2, hours=1)).isoformat()},
        headers=h,
    )
    assert response.status_code == 200
    body = assert_lead(response.json())
    assert (body["days_since_created"], body["days_since_last_contact"]) == (3, 2)


async def test_datetimes_given_with_an_offset_come_back_in_utc(
    client: httpx.AsyncClient, h: dict[str, str], make_lead: LeadFactory
) -> None:
    lead_id = uid(await make_lead())
    response = await client.patch(
        f"{LEADS}/{lead_id}", json={"next_follow_up_date": "2030-01-01T09:30:00+02:00"}, headers=h
    )
    assert response.status_code == 200
    value = response.json()["next_follow_up_date"]
    assert value in ("2030-01-01T07:30:00Z", "2030-01-01T07:30:00+00:00")


# ------------------------------------------------------------------------------------ update


async def test_update_changes_the_field_and_appends_a_change_line(
    client: httpx.AsyncClient,
    h: dict[str, str],
    make_lead: LeadFactory,
    superuser: User,
    db: AsyncSession,
) -> None:
    lead = await make_lead()
    lead_id, boss_id, notes_before = uid(lead), uid(superuser), lead.notes
    response = await client.patch(f"{LEADS}/{lead_id}", json={"status": "CONTACTED"}, headers=h)
    assert response.status_code == 200
    body = assert_lead(response.json())
    assert body["status"] == "CONTACTED"
    assert body["notes"].startswith(notes_before + "\n")
    assert body["notes"].count("\n") == notes_before.count("\n") + 1
    assert last_note(body) == (boss_id, "Updated: status: NEW → CONTACTED")
    assert (await stored_lead(db, lead_id)).status == "CONTACTED"


async def test_update_notes_are_appended_as_their_own_line(
    client: httpx.AsyncClient,
    h: dict[str, str],
    make_lead: LeadFactory,
    superuser: User,
) -> None:
    lead = await make_lead()
    lead_id, boss_id, notes_before = uid(lead), uid(superuser), lead.notes
    response = await client.patch(f"{LEADS}/{lead_id}", json={"notes": "Wants a demo."}, headers=h)
    assert response.status_code == 200
    body = assert_lead(response.json())
    assert body["notes"].startswith(notes_before + "\n")
    assert last_note(body) == (boss_id, "Wants a demo.")


async def test_update_of_a_scoring_field_rescores_the_lead(
    client: httpx.AsyncClient, h: dict[str, str], make_lead: LeadFactory
) -> None:
    lead_id = uid(await make_lead())  # 50: OTHER source, no company, free mail
    response = await client.patch(f"{LEADS}/{lead_id}", json={"company": "Globex"}, headers=h)
    assert response.status_code == 200
    body = assert_lead(response.json())
    assert body["lead_score"] == 60
    assert last_note(body)[1] == "Updated: company: (none) → Globex; lead_score: 50 → 60"


# ------------------------------------------------------------------------- delete and restore


async def test_delete_archives_the_lead_and_answers_204_without_a_body(
    client: httpx.AsyncClient,
    h: dict[str, str],
    make_lead: LeadFactory,
    db: AsyncSession,
) -> None:
    lead_id = uid(await make_lead(status="QUALIFIED"))
    response = await client.delete(f"{LEADS}/{lead_id}", headers=h)
    assert response.status_code == 204
    assert response.content == b""
    assert await count_rows(db) == 1
    read = await client.get(f"{LEADS}/{lead_id}", headers=h)
    body = assert_lead(read.json())
    assert body["archived_at"] is not None
    assert (body["status"], body["status_before_archive"]) == ("LOST", "QUALIFIED")
    assert "archived" in body["tags"]
    assert last_note(body)[1] == "Archived (status was QUALIFIED)"


async def test_hard_delete_by_a_superuser_removes_the_lead(
    client: httpx.AsyncClient, h: dict[str, str], make_lead: LeadFactory, db: AsyncSession
) -> None:
    kept = uid(await make_lead())
    lead_id = uid(await make_lead())
    response = await client.delete(f"{LEADS}/{lead_id}?hard_delete=true", headers=h)
    assert response.status_code == 204
    assert response.content == b""
    assert await stored_row(db, lead_id) is None
    assert await stored_row(db, kept) is not None
    gone = await client.get(f"{LEADS}/{lead_id}", headers=h)
    assert gone.status_code == 404
    assert gone.json()["code"] == "lead_not_found"


async def test_restore_brings_back_the_status_from_before_archiving(
    client: httpx.AsyncClient,
    h: dict[str, str],
    make_lead: LeadFactory,
    db: AsyncSession,
    superuser: User,
) -> None:
    lead_id = uid(await make_lead(status="PROPOSAL", tags=["vip"]))
    await LeadService.delete_lead(db, lead_id, user_id=uid(superuser))
    response = await client.post(f"{LEADS}/{lead_id}/restore", headers=h)
    assert response.status_code == 200
    body = assert_lead(response.json())
    assert body["status"] == "PROPOSAL"
    assert body["archived_at"] is None
    assert body["status_before_archive"] is None
    assert body["tags"] == ["vip"]
    assert last_note(body)[1] == "Restored (status LOST → PROPOSAL)"


# ------------------------------------------------------------------------------ notes, calls


async def test_add_note_appends_exactly_one_line(
    client: httpx.AsyncClient,
    auth_headers: Any,
    make_lead: LeadFactory,
    agent: User,
) -> None:
    lead = await make_lead(owner=agent)
    lead_id, agent_id, notes_before = uid(lead), uid(agent), lead.notes
    response = await client.post(
        f"{LEADS}/{lead_id}/notes",
        json={"text": "Sent the price list."},
        headers=auth_headers(agent),
    )
    assert response.status_code == 200
    body = assert_lead(response.json())
    assert body["notes"].startswith(notes_before + "\n")
    assert body["notes"].count("\n") == notes_before.count("\n") + 1
    assert last_note(body) == (agent_id, "Sent the price list.")


async def test_record_call_without_a_body_counts_the_attempt(
    client: httpx.AsyncClient, h: dict[str, str], make_lead: LeadFactory, superuser: User
) -> None:
    lead_id, boss_id = uid(await make_lead()), uid(superuser)
    response = await client.post(f"{LEADS}/{lead_id}/calls", headers=h)
    assert response.status_code == 200
    body = assert_lead(response.json())
    assert body["call_attempts"] == 1
    assert abs(datetime.now(UTC) - parse_utc(body["last_contact_date"])) < timedelta(minutes=5)
    assert body["days_since_last_contact"] == 0
    assert last_note(body) == (boss_id, "Call attempt 1")


async def test_record_call_with_a_note_keeps_the_note(
    client: httpx.AsyncClient, h: dict[str, str], make_lead: LeadFactory
) -> None:
    lead_id = uid(await make_lead(call_attempts=2))
    response = await client.post(
        f"{LEADS}/{lead_id}/calls", json={"note": "Left a voicemail."}, headers=h
    )
    assert response.status_code == 200
    body = assert_lead(response.json())
    assert body["call_attempts"] == 3
    assert last_note(body)[1] == "Call attempt 3: Left a voicemail."


# -------------------------------------------------------------------------------------- bulk


async def test_bulk_status_updates_every_lead(
    client: httpx.AsyncClient, h: dict[str, str], make_lead: LeadFactory, db: AsyncSession
) -> None:
    lead_ids = [uid(await make_lead(status=status)) for status in ("NEW", "CALLBACK", "NEW")]
    response = await client.post(
        f"{LEADS}/bulk/status",
        json={"lead_ids": lead_ids[::-1], "status": "CONTACTED", "note": "Spring campaign"},
        headers=h,
    )
    assert response.status_code == 200
    assert response.json() == {"updated_count": 3, "lead_ids": sorted(lead_ids)}
    for lead_id, was in zip(lead_ids, ("NEW", "CALLBACK", "NEW"), strict=True):
        lead = await stored_lead(db, lead_id)
        assert lead.status == "CONTACTED"
        lines = lead.notes.split("\n")
        assert lines[-2].endswith(f": Status {was} → CONTACTED (bulk)")
        assert lines[-1].endswith(": Spring campaign")


async def test_bulk_assign_reassigns_every_lead(
    client: httpx.AsyncClient,
    h: dict[str, str],
    make_lead: LeadFactory,
    agent: User,
    other_agent: User,
    db: AsyncSession,
) -> None:
    agent_id, other_id = uid(agent), uid(other_agent)
    lead_ids = [uid(await make_lead(owner=agent)), uid(await make_lead())]
    response = await client.post(
        f"{LEADS}/bulk/assign", json={"lead_ids": lead_ids, "agent_user_id": other_id}, headers=h
    )
    assert response.status_code == 200
    assert response.json() == {"updated_count": 2, "lead_ids": sorted(lead_ids)}
    first, second = [await stored_lead(db, lead_id) for lead_id in lead_ids]
    assert (first.assigned_to, second.assigned_to) == (other_id, other_id)
    assert first.notes.endswith(f"Assigned to user {other_id} (was user {agent_id})")
    assert second.notes.endswith(f"Assigned to user {other_id} (was unassigned)")


@pytest.mark.parametrize(
    ("path", "extra"),
    [("bulk/status", {"status": "WON"}), ("bulk/assign", {"agent_user_id": None})],
)
async def test_bulk_with_repeated_ids_is_422_and_changes_nothing(
    client: httpx.AsyncClient,
    h: dict[str, str],
    make_lead: LeadFactory,
    other_agent: User,
    db: AsyncSession,
    path: str,
    extra: dict[str, Any],
) -> None:
    payload = {k: (uid(other_agent) if v is None else v) for k, v in extra.items()}
    lead_id = uid(await make_lead())
    before = await stored_row(db, lead_id)
    response = await client.post(
        f"{LEADS}/{path}", json={"lead_ids": [lead_id, lead_id], **payload}, headers=h
    )
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "validation_error"
    assert [e["loc"] for e in body["errors"]] == [["body", "lead_ids"]]
    assert await stored_row(db, lead_id) == before


@pytest.mark.parametrize("path", ["bulk/status", "bulk/assign"])
async def test_bulk_with_more_than_10000_ids_is_422(
    client: httpx.AsyncClient, h: dict[str, str], other_agent: User, path: str
) -> None:
    extra = {"status": "WON"} if path == "bulk/status" else {"agent_user_id": uid(other_agent)}
    response = await client.post(
        f"{LEADS}/{path}", json={"lead_ids": list(range(1, 10_002)), **extra}, headers=h
    )
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "validation_error"
    assert [e["loc"] for e in body["errors"]] == [["body", "lead_ids"]]


async def test_bulk_with_exactly_10000_ids_passes_validation(
    client: httpx.AsyncClient, h: dict[str, str]
) -> None:
    """10,000 ids are allowed: the request gets as far as finding the leads do not exist."""
    response = await client.post(
        f"{LEADS}/bulk/status",
        json={"lead_ids": list(range(1, 10_001)), "status": "WON"},
        headers=h,
    )
    assert response.status_code == 404
    assert response.json()["code"] == "lead_not_found"


@pytest.mark.parametrize("path", ["bulk/status", "bulk/assign"])
async def test_bulk_with_a_missing_id_is_404_and_changes_nothing(
    client: httpx.AsyncClient,
    h: dict[str, str],
    make_lead: LeadFactory,
    agent: User,
    other_agent: User,
    db: AsyncSession,
    path: str,
) -> None:
    extra = {"status": "WON"} if path == "bulk/status" else {"agent_user_id": uid(other_agent)}
    lead_ids = [uid(await make_lead(owner=agent)) for _ in range(2)]
    before = [await stored_row(db, lead_id) for lead_id in lead_ids]
    response = await client.post(
        f"{LEADS}/{path}", json={"lead_ids": [*lead_ids, 987_654], **extra}, headers=h
    )
    assert response.status_code == 404
    body = response.json()
    assert body["code"] == "lead_not_found"
    assert "987654" in body["detail"]
    assert [await stored_row(db, lead_id) for lead_id in lead_ids] == before


# -------------------------------------------------------------------------------- statistics


async def test_statistics_summarise_the_visible_unarchived_leads(
    client: httpx.AsyncClient,
    h: dict[str, str],
    make_lead: LeadFactory,
    db: AsyncSession,
    superuser: User,
) -> None:
    await make_lead(status="NEW", source="WEBSITE", lead_score=90)
    await make_lead(status="WON", source="REFERRAL", lead_score=60)
    await make_lead(status="CONTACTED", source="WEBSITE", lead_score=30)
    archived = uid(await make_lead(status="NEW", source="FACEBOOK", lead_score=99))
    await LeadService.delete_lead(db, archived, user_id=uid(superuser))
    response = await client.get(f"{LEADS}/statistics", headers=h)
    assert response.status_code == 200
    zero_status = dict.fromkeys(
        ["NEW", "CONTACTED", "QUALIFIED", "PROPOSAL", "NEGOTIATION", "WON", "LOST", "CALLBACK"], 0
    )
    zero_source = dict.fromkeys(
        ["WEBSITE", "FACEBOOK", "INSTAGRAM", "WHATSAPP", "REFERRAL", "OTHER"], 0
    )
    assert response.json() == {
        "total_leads": 3,
        "leads_by_status": {**zero_status, "NEW": 1, "WON": 1, "CONTACTED": 1},
        "leads_by_source": {**zero_source, "WEBSITE": 2, "REFERRAL": 1},
        "average_lead_score": 60.0,
        "hot_leads_count": 1,
        "conversion_rate": 33.33,
        "median_days_to_won": 0.0,
    }


async def test_statistics_of_an_agent_cover_only_their_leads(
    client: httpx.AsyncClient, auth_headers: Any, make_lead: LeadFactory, agent: User
) -> None:
    await make_lead(owner=agent, status="WON", lead_score=40)
    await make_lead(status="NEW", lead_score=90)
    response = await client.get(f"{LEADS}/statistics", headers=auth_headers(agent))
    assert response.status_code == 200
    body = response.json()
    assert (body["total_leads"], body["average_lead_score"], body["conversion_rate"]) == (
        1,
        40.0,
        100.0,
    )
    assert body["hot_leads_count"] == 0


# ------------------------------------------------------------------------- the lead's shape


async def test_every_lead_endpoint_answers_the_full_lead_shape(
    client: httpx.AsyncClient, h: dict[str, str], make_lead: LeadFactory
) -> None:
    lead_id = uid(await make_lead())
    responses = [
        await client.get(f"{LEADS}/{lead_id}", headers=h),
        await client.patch(f"{LEADS}/{lead_id}", json={"job_title": "CEO"}, headers=h),
        await client.post(f"{LEADS}/{lead_id}/notes", json={"text": "hello"}, headers=h),
        await client.post(f"{LEADS}/{lead_id}/calls", headers=h),
        await client.post(f"{LEADS}/{lead_id}/restore", headers=h),
        await client.post(
            LEADS, json={"first_name": "A", "last_name": "B", "phone": "5550102030"}, headers=h
        ),
    ]
    assert [r.status_code for r in responses] == [200, 200, 200, 200, 200, 201]
    for response in responses:
        assert response.headers["content-type"] == "application/json"
        assert_lead(response.json())
    listed = await client.get(LEADS, headers=h)
    assert len(listed.json()["items"]) == 2
    for item in listed.json()["items"]:
        assert_lead(item)


async def test_archived_lead_datetimes_are_in_utc(
    client: httpx.AsyncClient, h: dict[str, str], make_lead: LeadFactory
) -> None:
    lead_id = uid(await make_lead(next_follow_up_date=datetime(2031, 2, 3, tzinfo=UTC)))
    await client.post(f"{LEADS}/{lead_id}/calls", headers=h)
    await client.delete(f"{LEADS}/{lead_id}", headers=h)
    body = assert_lead((await client.get(f"{LEADS}/{lead_id}", headers=h)).json())
    for name in DATETIME_FIELDS:
        assert body[name] is not None, name
        parse_utc(body[name])
