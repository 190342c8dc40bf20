"""Optimistic concurrency (app/services/preconditions.py, app/api/preconditions.py): every lead
answer carries `ETag: "<id>-<version>"`; writes to one lead honour If-Match (412 when stale, the
lead unchanged; 400 when malformed; 428 without it when REQUIRE_IF_MATCH is set); a read with a
current If-None-Match gets 304. The concurrent case is in tests/test_concurrency.py."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings, use_settings
from app.models import Lead, LeadEvent, User
from app.services import LeadService
from app.services.exceptions import PreconditionFailedException
from app.services.preconditions import Precondition
from tests.helpers import LeadFactory, make_settings, uid

LEADS = "/api/v1/leads"


def tag(lead_id: int, version: int) -> str:
    return f'"{lead_id}-{version}"'


async def stored(db: AsyncSession, lead_id: int) -> tuple[int, str, int]:
    """The lead's version, notes and number of events, as stored."""
    lead = await db.scalar(
        select(Lead).where(Lead.id == lead_id).execution_options(populate_existing=True)
    )
    assert lead is not None
    events = await db.scalar(select(func.count()).where(LeadEvent.lead_id == lead_id))
    return lead.version, lead.notes or "", int(events or 0)


# Each write to one lead that reads If-Match, as (method, path suffix, body).
WRITES: dict[str, tuple[str, str, dict[str, Any] | None]] = {
    "patch": ("PATCH", "", {"job_title": "CTO"}),
    "delete": ("DELETE", "", None),
    "note": ("POST", "/notes", {"text": "Called back"}),
    "call": ("POST", "/calls", {"note": "Voicemail"}),
}


async def send(
    client: httpx.AsyncClient, write: str, lead_id: int, headers: dict[str, str]
) -> httpx.Response:
    method, suffix, body = WRITES[write]
    return await client.request(method, f"{LEADS}/{lead_id}{suffix}", json=body, headers=headers)


# --- ETag on every lead answer ------------------------------------------------------------------


async def test_every_lead_answer_carries_its_etag(
    client: httpx.AsyncClient, h: dict[str, str]
) -> None:
    created = await client.post(
        LEADS, json={"first_name": "Ada", "last_name": "L", "email": "ada@example.com"}, headers=h
    )
    lead_id = created.json()["id"]
    assert created.headers["ETag"] == tag(lead_id, 1)
    read = await client.get(f"{LEADS}/{lead_id}", headers=h)
    assert read.headers["ETag"] == tag(lead_id, 1)
    answers = [
        await send(client, "patch", lead_id, h),
        await send(client, "note", lead_id, h),
        await send(client, "call", lead_id, h),
    ]
    assert [(r.status_code, r.headers["ETag"]) for r in answers] == [
        (200, tag(lead_id, 2)),
        (200, tag(lead_id, 3)),
        (200, tag(lead_id, 4)),
    ]
    assert answers[-1].json()["version"] == 4
    await send(client, "delete", lead_id, h)
    restored = await client.post(f"{LEADS}/{lead_id}/restore", headers=h)
    assert (restored.status_code, restored.headers["ETag"]) == (200, tag(lead_id, 6))


# --- If-Match -----------------------------------------------------------------------------------


@pytest.mark.parametrize("write", list(WRITES))
async def test_a_write_with_the_current_etag_goes_through(
    client: httpx.AsyncClient, h: dict[str, str], make_lead: LeadFactory, write: str
) -> None:
    lead_id = uid(await make_lead(phone="+15550100"))
    response = await send(client, write, lead_id, {**h, "If-Match": tag(lead_id, 1)})
    assert response.status_code in (200, 204), response.text


@pytest.mark.parametrize("write", [*WRITES, "restore"])
async def test_a_write_with_a_stale_etag_gets_412_naming_the_version_and_changes_nothing(
    client: httpx.AsyncClient,
    db: AsyncSession,
    h: dict[str, str],
    make_lead: LeadFactory,
    superuser: User,
    write: str,
) -> None:
    lead_id = uid(await make_lead())
    if write == "restore":  # someone else's change: archiving it
        await LeadService.delete_lead(db, lead_id, user_id=superuser.id)
    else:
        await LeadService.add_lead_note(db, lead_id, "Someone else's change", user_id=superuser.id)
    before = await stored(db, lead_id)
    version = before[0]
    stale = {**h, "If-Match": tag(lead_id, version - 1)}
    if write == "restore":
        response = await client.post(f"{LEADS}/{lead_id}/restore", headers=stale)
    else:
        response = await send(client, write, lead_id, stale)
    assert response.status_code == 412, response.text
    body = response.json()
    assert body["code"] == "precondition_failed"
    assert body["current_version"] == version
    assert f"version {version}" in body["detail"]
    assert response.headers["ETag"] == tag(lead_id, version)
    assert await stored(db, lead_id) == before


async def test_a_hard_delete_with_a_stale_etag_keeps_the_lead(
    client: httpx.AsyncClient, db: AsyncSession, h: dict[str, str], make_lead: LeadFactory
) -> None:
    lead_id = uid(await make_lead())
    response = await client.delete(
        f"{LEADS}/{lead_id}",
        params={"hard_delete": "true"},
        headers={**h, "If-Match": tag(lead_id, 9)},
    )
    assert response.status_code == 412, response.text
    assert (await stored(db, lead_id))[0] == 1


async def test_if_match_star_matches_any_existing_lead(
    client: httpx.AsyncClient, h: dict[str, str], make_lead: LeadFactory
) -> None:
    lead_id = uid(await make_lead())
    response = await send(client, "patch", lead_id, {**h, "If-Match": "*"})
    assert response.status_code == 200, response.text
    missing = await send(client, "patch", lead_id + 1000, {**h, "If-Match": "*"})
    assert missing.status_code == 404, missing.text


async def test_if_match_may_list_several_tags(
    client: httpx.AsyncClient, h: dict[str, str], make_lead: LeadFactory
) -> None:
    lead_id = uid(await make_lead())
    listed = f'"{lead_id}-7", {tag(lead_id, 1)}'
    response = await send(client, "patch", lead_id, {**h, "If-Match": listed})
    assert response.status_code == 200, response.text


async def test_a_weak_tag_never_satisfies_if_match(
    client: httpx.AsyncClient, h: dict[str, str], make_lead: LeadFactory
) -> None:
    lead_id = uid(await make_lead())
    response = await send(client, "patch", lead_id, {**h, "If-Match": f"W/{tag(lead_id, 1)}"})
    assert response.status_code == 412, response.text


async def test_another_leads_tag_does_not_match(
    client: httpx.AsyncClient, h: dict[str, str], make_lead: LeadFactory
) -> None:
    lead_id, other_id = uid(await make_lead()), uid(await make_lead())
    response = await send(client, "patch", lead_id, {**h, "If-Match": tag(other_id, 1)})
    assert response.status_code == 412, response.text


@pytest.mark.parametrize("value", ["12-1", '"12-1', '"1" "2"', "W/12", '"a",,', "**"])
async def test_a_malformed_if_match_gets_400_naming_the_header_and_changes_nothing(
    client: httpx.AsyncClient,
    db: AsyncSession,
    h: dict[str, str],
    make_lead: LeadFactory,
    value: str,
) -> None:
    lead_id = uid(await make_lead())
    response = await send(client, "patch", lead_id, {**h, "If-Match": value})
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["code"] == "invalid_header"
    assert "If-Match" in body["detail"]
    assert body["errors"][0]["loc"] == ["header", "If-Match"]
    assert (await stored(db, lead_id))[0] == 1


async def test_an_agent_sending_if_match_for_another_agents_lead_gets_404(
    client: httpx.AsyncClient,
    auth_headers: Any,
    make_lead: LeadFactory,
    agent: User,
    other_agent: User,
) -> None:
    lead_id = uid(await make_lead(owner=other_agent))
    headers = {**auth_headers(agent), "If-Match": tag(lead_id, 99)}
    response = await send(client, "patch", lead_id, headers)
    assert response.status_code == 404, response.text


async def test_the_service_takes_a_precondition_too(
    db: AsyncSession, make_lead: LeadFactory, superuser: User
) -> None:
    lead_id = uid(await make_lead())
    stale = Precondition(frozenset({tag(lead_id, 5)}))
    with pytest.raises(PreconditionFailedException) as refused:
        await LeadService.update_lead(
            db, lead_id, {"company": "Initech"}, user_id=superuser.id, if_match=stale
        )
    assert refused.value.current_version == 1
    current = Precondition(frozenset({tag(lead_id, 1)}))
    lead = await LeadService.update_lead(  # (the rollback expired `superuser`: uid reads it)
        db, lead_id, {"company": "Initech"}, user_id=uid(superuser), if_match=current
    )
    assert lead.version == 2


# --- If-None-Match ------------------------------------------------------------------------------


@pytest.mark.parametrize("sent", ["current", "weak", "star", "listed"])
async def test_a_read_with_the_current_etag_gets_304_without_a_body(
    client: httpx.AsyncClient, h: dict[str, str], make_lead: LeadFactory, sent: str
) -> None:
    lead_id = uid(await make_lead())
    value = {
        "current": tag(lead_id, 1),
        "weak": f"W/{tag(lead_id, 1)}",
        "star": "*",
        "listed": f'"{lead_id}-0", {tag(lead_id, 1)}',
    }[sent]
    response = await client.get(f"{LEADS}/{lead_id}", headers={**h, "If-None-Match": value})
    assert response.status_code == 304, response.text
    assert response.content == b""
    assert response.headers["ETag"] == tag(lead_id, 1)


async def test_a_read_with_an_old_etag_gets_the_lead(
    client: httpx.AsyncClient,
    db: AsyncSession,
    h: dict[str, str],
    make_lead: LeadFactory,
    superuser: User,
) -> None:
    lead_id = uid(await make_lead())
    await LeadService.add_lead_note(db, lead_id, "Changed", user_id=superuser.id)
    response = await client.get(
        f"{LEADS}/{lead_id}", headers={**h, "If-None-Match": tag(lead_id, 1)}
    )
    assert response.status_code == 200, response.text
    assert response.json()["version"] == 2


async def test_if_none_match_does_not_reveal_another_agents_lead(
    client: httpx.AsyncClient,
    auth_headers: Any,
    make_lead: LeadFactory,
    agent: User,
    other_agent: User,
) -> None:
    lead_id = uid(await make_lead(owner=other_agent))
    headers = {**auth_headers(agent), "If-None-Match": "*"}
    response = await client.get(f"{LEADS}/{lead_id}", headers=headers)
    assert response.status_code == 404, response.text


async def test_a_malformed_if_none_match_gets_400_naming_the_header(
    client: httpx.AsyncClient, h: dict[str, str], make_lead: LeadFactory
) -> None:
    lead_id = uid(await make_lead())
    response = await client.get(f"{LEADS}/{lead_id}", headers={**h, "If-None-Match": "nope"})
    assert response.status_code == 400, response.text
    assert response.json()["errors"][0]["loc"] == ["header", "If-None-Match"]


# --- REQUIRE_IF_MATCH ---------------------------------------------------------------------------


@pytest.fixture
def requiring(settings: Settings) -> Iterator[Settings]:
    """REQUIRE_IF_MATCH=true, in force over the test's usual settings."""
    with use_settings(make_settings(require_if_match=True)) as installed:
        yield installed


@pytest.mark.parametrize("write", [*WRITES, "restore"])
async def test_with_require_if_match_a_write_without_it_gets_428_and_changes_nothing(
    requiring: Settings,
    client: httpx.AsyncClient,
    db: AsyncSession,
    h: dict[str, str],
    make_lead: LeadFactory,
    write: str,
) -> None:
    lead_id = uid(await make_lead())
    before = await stored(db, lead_id)
    if write == "restore":
        response = await client.post(f"{LEADS}/{lead_id}/restore", headers=h)
    else:
        response = await send(client, write, lead_id, h)
    assert response.status_code == 428, response.text
    assert response.json()["code"] == "precondition_required"
    assert "If-Match" in response.json()["detail"]
    assert await stored(db, lead_id) == before


async def test_with_require_if_match_a_write_with_it_goes_through(
    requiring: Settings, client: httpx.AsyncClient, h: dict[str, str], make_lead: LeadFactory
) -> None:
    lead_id = uid(await make_lead())
    response = await send(client, "patch", lead_id, {**h, "If-Match": tag(lead_id, 1)})
    assert response.status_code == 200, response.text


async def test_with_require_if_match_reads_and_creates_need_no_tag(
    requiring: Settings, client: httpx.AsyncClient, h: dict[str, str], make_lead: LeadFactory
) -> None:
    lead_id = uid(await make_lead())
    assert (await client.get(f"{LEADS}/{lead_id}", headers=h)).status_code == 200
    created = await client.post(
        LEADS, json={"first_name": "A", "last_name": "B", "phone": "+15550101"}, headers=h
    )
    assert created.status_code == 201, created.text


async def test_require_if_match_is_off_by_default(settings: Settings) -> None:
    assert settings.require_if_match is False


async def test_with_require_if_match_an_anonymous_write_still_gets_401(
    requiring: Settings, client: httpx.AsyncClient, make_lead: LeadFactory
) -> None:
    lead_id = uid(await make_lead())
    response = await send(client, "patch", lead_id, {})
    assert response.status_code == 401, response.text
