"""Capped totals and keyset (cursor) pagination, in the service and over HTTP."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import use_settings
from app.models import Lead, LeadSource, LeadStatus, User
from app.schemas.filters import SORT_FIELDS
from app.services import LeadService
from app.services.exceptions import ValidationException
from tests.helpers import make_settings

T0 = datetime(2025, 1, 1, tzinfo=UTC)
STATUSES = list(LeadStatus)


async def insert_leads(db: AsyncSession, count: int, *, start: int = 0, **fixed: Any) -> None:
    """`count` leads in one INSERT, with deliberately repeated sort values (ties everywhere)
    and some empty company and last_contact_date values."""
    rows = []
    for n in range(start, start + count):
        row: dict[str, Any] = {
            "first_name": f"P{n}",
            "last_name": f"Last{n % 4}",
            "email": f"p{n}@example.com",
            "company": None if n % 5 == 0 else f"Co{n % 3}",
            "source": LeadSource.OTHER,
            "status": STATUSES[n % len(STATUSES)],
            "lead_score": 40 + n % 6,
            "score_is_manual": False,
            "tags": [],
            "call_attempts": 0,
            "last_contact_date": None if n % 4 == 0 else T0 + timedelta(days=n % 3),
            "created_at": T0 + timedelta(hours=n % 7),
            "updated_at": T0 + timedelta(minutes=n % 5),
        }
        row.update(fixed)
        rows.append(row)
    await db.execute(insert(Lead), rows)
    await db.commit()


async def walk(db: AsyncSession, limit: int, **kwargs: Any) -> list[int]:
    """Every id, page by page, following next_cursor to the end."""
    ids: list[int] = []
    cursor = None
    for _ in range(1000):
        page = await LeadService.list_leads(db, limit=limit, cursor=cursor, **kwargs)
        ids += [lead.id for lead in page.items]
        cursor = page.next_cursor
        if cursor is None:
            return ids
    raise AssertionError("the cursor never reached the last page")


@pytest.fixture
def count_cap() -> Iterator[Callable[[int], None]]:
    """`count_cap(n)`: TOTAL_COUNT_CAP=n in force for the rest of the test."""
    with contextlib.ExitStack() as stack:

        def set_cap(cap: int) -> None:
            stack.enter_context(use_settings(make_settings(total_count_cap=cap)))

        yield set_cap


# --- totals ----------------------------------------------------------------------------------


async def test_total_above_the_cap_is_the_cap_and_not_exact(
    db: AsyncSession, count_cap: Callable[[int], None]
) -> None:
    count_cap(5)
    await insert_leads(db, 8)
    page = await LeadService.list_leads(db, limit=2)
    assert (page.total, page.total_is_exact) == (5, False)


async def test_total_at_the_cap_is_exact(
    db: AsyncSession, count_cap: Callable[[int], None]
) -> None:
    count_cap(5)
    await insert_leads(db, 5)
    page = await LeadService.list_leads(db, limit=2)
    assert (page.total, page.total_is_exact) == (5, True)


async def test_exact_total_counts_past_the_cap(
    db: AsyncSession, count_cap: Callable[[int], None]
) -> None:
    count_cap(5)
    await insert_leads(db, 8)
    page = await LeadService.list_leads(db, limit=2, exact_total=True)
    assert (page.total, page.total_is_exact) == (8, True)


async def test_get_leads_returns_the_capped_total(
    db: AsyncSession, count_cap: Callable[[int], None]
) -> None:
    count_cap(5)
    await insert_leads(db, 8)
    leads, total = await LeadService.get_leads(db, limit=3)
    assert (len(leads), total) == (3, 5)
    _, exact = await LeadService.get_leads(db, limit=3, exact_total=True)
    assert exact == 8


# --- cursors ---------------------------------------------------------------------------------


@pytest.mark.parametrize("sort_order", ["asc", "desc"])
@pytest.mark.parametrize("sort_by", SORT_FIELDS)
async def test_walking_with_the_cursor_visits_every_lead_once_in_order(
    db: AsyncSession, sort_by: str, sort_order: str
) -> None:
    await insert_leads(db, 23)
    everything, _ = await LeadService.get_leads(
        db, limit=1000, sort_by=sort_by, sort_order=sort_order
    )
    walked = await walk(db, 4, sort_by=sort_by, sort_order=sort_order)
    assert walked == [lead.id for lead in everything]
    assert len(set(walked)) == 23


async def test_the_last_page_has_no_next_cursor(db: AsyncSession) -> None:
    await insert_leads(db, 4)
    page = await LeadService.list_leads(db, limit=4)
    assert page.next_cursor is None
    first = await LeadService.list_leads(db, limit=3)
    assert first.next_cursor is not None


async def test_pages_do_not_shift_when_leads_are_added_while_walking(db: AsyncSession) -> None:
    await insert_leads(db, 10)
    before, _ = await LeadService.get_leads(db, limit=100)  # newest first
    original_order = [lead.id for lead in before]
    first = await LeadService.list_leads(db, limit=4)
    # New leads sort first (newest); with skip=4 they would push old ones back into page two.
    await insert_leads(db, 3, start=100, created_at=T0 + timedelta(days=30))
    second = await LeadService.list_leads(db, limit=4, cursor=first.next_cursor)
    assert [lead.id for lead in first.items + second.items] == original_order[:8]


async def test_a_cursor_filters_like_the_rest_of_the_query(db: AsyncSession) -> None:
    await insert_leads(db, 30)
    walked = await walk(db, 3, status="NEW")
    expected, _ = await LeadService.get_leads(db, status="NEW", limit=1000)
    assert walked == [lead.id for lead in expected]


async def test_a_garbled_cursor_is_refused_naming_cursor(db: AsyncSession) -> None:
    with pytest.raises(ValidationException) as caught:
        await LeadService.list_leads(db, cursor="not-a-cursor")
    assert caught.value.field == "cursor"


async def test_a_cursor_for_another_sort_is_refused(db: AsyncSession) -> None:
    await insert_leads(db, 5)
    page = await LeadService.list_leads(db, limit=2, sort_by="lead_score")
    with pytest.raises(ValidationException) as caught:
        await LeadService.list_leads(db, limit=2, sort_by="created_at", cursor=page.next_cursor)
    assert caught.value.field == "cursor"


async def test_a_cursor_followed_under_other_filters_is_refused_naming_cursor(
    db: AsyncSession,
) -> None:
    await insert_leads(db, 20)
    page = await LeadService.list_leads(db, limit=2, status="NEW")
    with pytest.raises(ValidationException) as caught:
        await LeadService.list_leads(db, limit=2, status="WON", cursor=page.next_cursor)
    assert caught.value.field == "cursor"
    assert "other filters" in caught.value.message


async def test_a_cursor_followed_without_its_filters_is_refused(db: AsyncSession) -> None:
    await insert_leads(db, 20)
    page = await LeadService.list_leads(db, limit=2, lead_score_min=42)
    with pytest.raises(ValidationException) as caught:
        await LeadService.list_leads(db, limit=2, cursor=page.next_cursor)
    assert caught.value.field == "cursor"


async def test_a_cursor_accepts_the_same_filters_in_another_order_and_case(
    db: AsyncSession,
) -> None:
    await insert_leads(db, 40)
    page = await LeadService.list_leads(db, limit=2, status=["NEW", "WON"], source="other")
    assert page.next_cursor is not None
    again = await LeadService.list_leads(
        db, limit=2, status=["won", "new"], source=["OTHER"], cursor=page.next_cursor
    )
    assert again.items
    assert {lead.id for lead in again.items}.isdisjoint(lead.id for lead in page.items)


async def test_skip_and_cursor_together_are_refused(db: AsyncSession) -> None:
    await insert_leads(db, 5)
    page = await LeadService.list_leads(db, limit=2)
    with pytest.raises(ValidationException) as caught:
        await LeadService.list_leads(db, limit=2, skip=2, cursor=page.next_cursor)
    assert caught.value.field == "skip"


# --- over HTTP -------------------------------------------------------------------------------


async def test_the_api_walks_pages_with_next_cursor(
    client: httpx.AsyncClient,
    db: AsyncSession,
    superuser: User,
    auth_headers: Callable[[User], dict[str, str]],
) -> None:
    headers = auth_headers(superuser)
    await insert_leads(db, 5)
    seen: list[int] = []
    params: dict[str, Any] = {"limit": 2}
    for _ in range(10):
        body = (await client.get("/api/v1/leads", params=params, headers=headers)).json()
        seen += [item["id"] for item in body["items"]]
        if body["next_cursor"] is None:
            break
        params = {"limit": 2, "cursor": body["next_cursor"]}
    assert len(seen) == 5
    assert len(set(seen)) == 5


async def test_the_api_reports_a_capped_total_and_counts_exactly_on_request(
    client: httpx.AsyncClient,
    db: AsyncSession,
    superuser: User,
    auth_headers: Callable[[User], dict[str, str]],
    count_cap: Callable[[int], None],
    app: Any,
) -> None:
    headers = auth_headers(superuser)
    await insert_leads(db, 7)
    count_cap(3)
    capped = (await client.get("/api/v1/leads?limit=1", headers=headers)).json()
    assert (capped["total"], capped["total_is_exact"]) == (3, False)
    exact = (await client.get("/api/v1/leads?limit=1&exact_total=true", headers=headers)).json()
    assert (exact["total"], exact["total_is_exact"]) == (7, True)


async def test_the_api_refuses_a_bad_cursor_naming_it(
    client: httpx.AsyncClient, superuser: User, auth_headers: Callable[[User], dict[str, str]]
) -> None:
    response = await client.get("/api/v1/leads?cursor=zzz", headers=auth_headers(superuser))
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["query", "cursor"]


async def test_the_api_refuses_a_cursor_sent_with_other_filters(
    client: httpx.AsyncClient,
    db: AsyncSession,
    superuser: User,
    auth_headers: Callable[[User], dict[str, str]],
) -> None:
    headers = auth_headers(superuser)
    await insert_leads(db, 20)
    first = await client.get("/api/v1/leads?status=NEW&limit=1", headers=headers)
    cursor = first.json()["next_cursor"]
    moved = await client.get(
        "/api/v1/leads", params={"status": "LOST", "limit": 1, "cursor": cursor}, headers=headers
    )
    assert moved.status_code == 422
    assert moved.json()["errors"][0]["loc"] == ["query", "cursor"]
    same = await client.get(
        "/api/v1/leads", params={"status": "NEW", "limit": 1, "cursor": cursor}, headers=headers
    )
    assert same.status_code == 200


async def test_the_api_accepts_the_longest_cursor_it_hands_out(
    client: httpx.AsyncClient,
    db: AsyncSession,
    superuser: User,
    auth_headers: Callable[[User], dict[str, str]],
) -> None:
    """A cursor holds the last row's sort value: a 200-character company in four-byte letters
    is the longest there is, and the cursor made from it must still be within the limit."""
    headers = auth_headers(superuser)
    await insert_leads(db, 3, company="\U0001f600" * 200)
    params = {"sort_by": "company", "limit": 1}
    first = (await client.get("/api/v1/leads", params=params, headers=headers)).json()
    cursor = first["next_cursor"]
    assert cursor is not None
    second = await client.get("/api/v1/leads", params={**params, "cursor": cursor}, headers=headers)
    assert second.status_code == 200, second.text
    assert second.json()["items"][0]["id"] != first["items"][0]["id"]
