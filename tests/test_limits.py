"""The size limits of one call, each a setting: at the limit a call is accepted, one past it the
call is refused naming the field (a 413 for the body, which has no field) and nothing is stored.

The app here runs with small limits set in the environment, as an operator would set them, so
the tests also show that the settings take effect (they are read when a request is validated,
not fixed when the code is imported) and that the OpenAPI document shows the values in force.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings, use_settings
from app.models import User
from app.models.types import TAG_MAX_LENGTH
from tests.helpers import LeadFactory, count_rows, make_settings, uid

LEADS = "/api/v1/leads"
NOTE_LIMIT = 30
TAGS_LIMIT = 3
BULK_LIMIT = 3
PAGE_LIMIT = 100  # the smallest allowed: a list without `limit` gives 100
BODY_LIMIT = 2048  # bytes
LIMITS = {
    "NOTE_MAX_LENGTH": NOTE_LIMIT,
    "TAGS_MAX_PER_LEAD": TAGS_LIMIT,
    "BULK_MAX_IDS": BULK_LIMIT,
    "PAGE_MAX_LIMIT": PAGE_LIMIT,
    "MAX_BODY_BYTES": BODY_LIMIT,
}


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """The settings in force (replacing conftest's), read with the small limits above in the
    environment."""
    for name, value in LIMITS.items():
        monkeypatch.setenv(name, str(value))
    with use_settings(make_settings()) as installed:
        yield installed


@pytest.fixture
async def lead_id(make_lead: LeadFactory) -> int:
    return uid(await make_lead())


async def leads_snapshot(db: AsyncSession) -> list[tuple[Any, ...]]:
    rows = await db.execute(text("SELECT * FROM leads ORDER BY id"))
    return [tuple(row) for row in rows.all()]


def assert_refused(response: httpx.Response, loc: list[Any]) -> None:
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "validation_error"
    assert loc in [error["loc"] for error in body["errors"]], body


NEW = {"first_name": "Ada", "last_name": "Limit", "email": "ada@acme.com"}


# ------------------------------------------------------------------------------- the settings


def test_the_default_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in LIMITS:
        monkeypatch.delenv(name, raising=False)
    defaults = Settings(_env_file=None)
    assert defaults.max_body_bytes == 1024 * 1024
    assert defaults.note_max_length == 10_000
    assert defaults.tags_max_per_lead == 50
    assert defaults.bulk_max_ids == 10_000
    assert defaults.page_max_limit == 1000


async def test_the_openapi_document_shows_the_configured_limits(
    client: httpx.AsyncClient,
) -> None:
    spec = (await client.get("/openapi.json")).json()
    schemas = spec["components"]["schemas"]
    assert schemas["NoteCreate"]["properties"]["text"]["maxLength"] == NOTE_LIMIT
    assert schemas["LeadCreate"]["properties"]["tags"]["anyOf"][0]["maxItems"] == TAGS_LIMIT
    assert schemas["BulkStatusUpdate"]["properties"]["lead_ids"]["maxItems"] == BULK_LIMIT
    assert schemas["BulkAssign"]["properties"]["lead_ids"]["maxItems"] == BULK_LIMIT
    for path in (LEADS, "/api/v1/users"):
        (limit,) = [p for p in spec["paths"][path]["get"]["parameters"] if p["name"] == "limit"]
        assert limit["schema"]["maximum"] == PAGE_LIMIT


# ----------------------------------------------------------------------------------- note text


def note_request(where: str, lead: int, text_: str) -> tuple[str, str, dict[str, Any], list[Any]]:
    """Every place a note's text is sent: method, path, body, and the field's loc."""
    return {
        "create": ("POST", LEADS, {**NEW, "notes": text_}, ["body", "notes"]),
        "update": ("PATCH", f"{LEADS}/{lead}", {"notes": text_}, ["body", "notes"]),
        "note": ("POST", f"{LEADS}/{lead}/notes", {"text": text_}, ["body", "text"]),
        "call": ("POST", f"{LEADS}/{lead}/calls", {"note": text_}, ["body", "note"]),
        "bulk": (
            "POST",
            f"{LEADS}/bulk/status",
            {"lead_ids": [lead], "status": "CONTACTED", "note": text_},
            ["body", "note"],
        ),
    }[where]


NOTE_PLACES = ["create", "update", "note", "call", "bulk"]


@pytest.mark.parametrize("where", NOTE_PLACES)
async def test_a_note_at_the_length_limit_is_stored(
    client: httpx.AsyncClient, h: dict[str, str], lead_id: int, db: AsyncSession, where: str
) -> None:
    note = "n" * (NOTE_LIMIT - 1) + "!"
    method, path, body, _ = note_request(where, lead_id, note)
    response = await client.request(method, path, json=body, headers=h)
    assert response.status_code in (200, 201), response.text
    target = response.json()["id"] if where == "create" else lead_id
    stored = await db.scalar(text("SELECT notes FROM leads WHERE id = :i"), {"i": target})
    assert stored.endswith(": " + note)


@pytest.mark.parametrize("where", NOTE_PLACES)
async def test_a_note_past_the_length_limit_is_refused_and_nothing_is_stored(
    client: httpx.AsyncClient, h: dict[str, str], lead_id: int, db: AsyncSession, where: str
) -> None:
    before = await leads_snapshot(db)
    method, path, body, loc = note_request(where, lead_id, "n" * (NOTE_LIMIT + 1))
    assert_refused(await client.request(method, path, json=body, headers=h), loc)
    assert await leads_snapshot(db) == before


# ----------------------------------------------------------------------------------------- tags


def tags_request(where: str, lead: int, tags: list[str]) -> tuple[str, str, dict[str, Any]]:
    if where == "create":
        return "POST", LEADS, {**NEW, "tags": tags}
    return "PATCH", f"{LEADS}/{lead}", {"tags": tags}


@pytest.mark.parametrize("where", ["create", "update"])
async def test_as_many_tags_as_the_limit_are_stored(
    client: httpx.AsyncClient, h: dict[str, str], lead_id: int, where: str
) -> None:
    tags = [f"tag{n}" for n in range(TAGS_LIMIT)]
    method, path, body = tags_request(where, lead_id, tags)
    response = await client.request(method, path, json=body, headers=h)
    assert response.status_code in (200, 201), response.text
    read = await client.get(f"{LEADS}/{response.json()['id']}", headers=h)
    assert read.json()["tags"] == tags


@pytest.mark.parametrize("where", ["create", "update"])
async def test_one_tag_past_the_limit_is_refused_and_nothing_is_stored(
    client: httpx.AsyncClient, h: dict[str, str], lead_id: int, db: AsyncSession, where: str
) -> None:
    before = await leads_snapshot(db)
    method, path, body = tags_request(where, lead_id, [f"tag{n}" for n in range(TAGS_LIMIT + 1)])
    assert_refused(await client.request(method, path, json=body, headers=h), ["body", "tags"])
    assert await leads_snapshot(db) == before


async def test_a_tag_as_long_as_the_column_allows_is_stored(
    client: httpx.AsyncClient, h: dict[str, str], lead_id: int
) -> None:
    tag = "t" * TAG_MAX_LENGTH
    response = await client.patch(f"{LEADS}/{lead_id}", json={"tags": [tag]}, headers=h)
    assert response.status_code == 200, response.text
    assert (await client.get(f"{LEADS}/{lead_id}", headers=h)).json()["tags"] == [tag]


async def test_a_tag_one_character_too_long_is_refused_and_nothing_is_stored(
    client: httpx.AsyncClient, h: dict[str, str], lead_id: int, db: AsyncSession
) -> None:
    before = await leads_snapshot(db)
    body = {"tags": ["ok", "t" * (TAG_MAX_LENGTH + 1)]}
    response = await client.patch(f"{LEADS}/{lead_id}", json=body, headers=h)
    assert_refused(response, ["body", "tags", 1])
    assert await leads_snapshot(db) == before


# ---------------------------------------------------------------------------- ids of a bulk call


def bulk_body(path: str, ids: list[int], agent: User) -> dict[str, Any]:
    if path == "bulk/status":
        return {"lead_ids": ids, "status": "QUALIFIED"}
    return {"lead_ids": ids, "agent_user_id": uid(agent)}


@pytest.mark.parametrize("path", ["bulk/status", "bulk/assign"])
async def test_a_bulk_call_with_as_many_ids_as_the_limit_changes_them_all(
    client: httpx.AsyncClient,
    h: dict[str, str],
    make_lead: LeadFactory,
    agent: User,
    path: str,
) -> None:
    ids = [uid(await make_lead()) for _ in range(BULK_LIMIT)]
    response = await client.post(f"{LEADS}/{path}", json=bulk_body(path, ids, agent), headers=h)
    assert response.status_code == 200, response.text
    assert response.json() == {"updated_count": BULK_LIMIT, "lead_ids": ids}


@pytest.mark.parametrize("path", ["bulk/status", "bulk/assign"])
async def test_a_bulk_call_with_one_id_past_the_limit_is_refused_and_changes_nothing(
    client: httpx.AsyncClient,
    h: dict[str, str],
    make_lead: LeadFactory,
    agent: User,
    db: AsyncSession,
    path: str,
) -> None:
    ids = [uid(await make_lead()) for _ in range(BULK_LIMIT + 1)]
    before = await leads_snapshot(db)
    response = await client.post(f"{LEADS}/{path}", json=bulk_body(path, ids, agent), headers=h)
    assert_refused(response, ["body", "lead_ids"])
    assert await leads_snapshot(db) == before


# ------------------------------------------------------------------------------------ page size


@pytest.mark.parametrize("path", [LEADS, "/api/v1/users"])
async def test_a_page_as_large_as_the_limit_is_served(
    client: httpx.AsyncClient, h: dict[str, str], path: str
) -> None:
    response = await client.get(path, params={"limit": PAGE_LIMIT}, headers=h)
    assert response.status_code == 200, response.text
    assert response.json()["limit"] == PAGE_LIMIT


@pytest.mark.parametrize("path", [LEADS, "/api/v1/users"])
async def test_a_page_one_past_the_limit_is_refused(
    client: httpx.AsyncClient, h: dict[str, str], path: str
) -> None:
    response = await client.get(path, params={"limit": PAGE_LIMIT + 1}, headers=h)
    assert_refused(response, ["query", "limit"])


async def test_raising_the_page_limit_past_the_old_fixed_1000_takes_effect(
    client: httpx.AsyncClient, h: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PAGE_MAX_LIMIT", "2500")
    with use_settings(make_settings()):
        response = await client.get(LEADS, params={"limit": 2500}, headers=h)
    assert response.status_code == 200, response.text
    assert response.json()["limit"] == 2500


# ------------------------------------------------------------------------------------ body size


def padded_lead(size: int) -> bytes:
    body = b'{"first_name": "Big", "last_name": "Body", "email": "big@acme.com"}'
    return body + b" " * (size - len(body))


async def test_a_body_of_exactly_the_limit_is_accepted(
    client: httpx.AsyncClient, h: dict[str, str], db: AsyncSession
) -> None:
    response = await client.post(
        LEADS, content=padded_lead(BODY_LIMIT), headers={**h, "Content-Type": "application/json"}
    )
    assert response.status_code == 201, response.text
    assert await count_rows(db) == 1


async def test_a_body_one_byte_past_the_limit_is_413_and_nothing_is_stored(
    client: httpx.AsyncClient, h: dict[str, str], db: AsyncSession
) -> None:
    """The body as a whole has no field to name: 413 in the error shape, naming the limit."""
    response = await client.post(
        LEADS,
        content=padded_lead(BODY_LIMIT + 1),
        headers={**h, "Content-Type": "application/json"},
    )
    assert response.status_code == 413, response.text
    assert response.json()["code"] == "request_too_large"
    assert str(BODY_LIMIT) in response.json()["detail"]
    assert await count_rows(db) == 0
