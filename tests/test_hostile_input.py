"""Hostile input to every text field, number, date, id and filter of the lead and user
endpoints: SQL fragments, `%` and `_`, NUL bytes, 10,000 characters, emoji, right-to-left text,
huge and negative numbers, impossible dates, objects and arrays where text belongs.

Each either succeeds with the value stored exactly as sent (read back through the API), or is
refused with a 4xx whose errors name the field. Either way no other row changes and no row is
lost or added: after every request the leads other than the one written to are compared with a
snapshot taken before it.

Each test sends every hostile value to every field (or filter, or route) of one kind, on one
app and database (the conftest fixtures: building an app costs more than dozens of requests),
each request judged on its own against the snapshot taken just before it. (Failed logins on one
account are one test per value: the throttle would answer the eleventh with a 429.)
"""

from __future__ import annotations

import base64
import json
import re
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import User
from app.schemas.filters import LeadFilters, LeadPaging
from app.services import LeadService
from app.services.exceptions import ValidationException
from tests.helpers import PASSWORD, LeadFactory, uid

LEADS = "/api/v1/leads"
# These tests send one lead again on purpose: it is not refused as a duplicate of itself.
CREATE = f"{LEADS}?on_duplicate=allow"
USERS = "/api/v1/users"
SUPERUSER_EMAIL = "boss@crm.example.com"  # conftest's `superuser`

# ------------------------------------------------------------------------------- the values

HOSTILE: dict[str, Any] = {
    "sql-or": "' OR 1=1 --",
    "sql-drop": "x'); DROP TABLE leads; --",
    "percent": "100%",
    "underscore": "a_b",
    "nul": "a\x00b",
    "long": "x" * 10_000,
    "emoji": "🔥 Ünïcödé 👩‍💻",
    "rtl": "שלום \u202eevil\u202c مرحبا",
    "number": 2**63,
    "object": {"$ne": None},
    "array": ["a", "b"],
}
# Refused by every text field: not text, or text PostgreSQL cannot store.
NOT_TEXT = frozenset({"nul", "number", "object", "array"})
# Valid addresses that are hostile all the same: quotes, SQL, LIKE wildcards, emoji, RTL.
HOSTILE_EMAILS = {
    "email-sql": "o'brien+1=1--@example.com",
    "email-wildcards": "100%_off@example.com",
    "email-emoji": "🔥@example.com",
    "email-rtl": "שלום@example.com",
}
HOSTILE_NUMBERS: dict[str, Any] = {
    "negative": -1,
    "2**63": 2**63,
    "1e308": 1e308,
    "numeric-text": "1e308",
    "object": {"$gt": 0},
    "array": [1],
}
HOSTILE_DATES: dict[str, Any] = {
    "year-0": "0000-01-01T00:00:00Z",
    "year-10000": "10000-01-01T00:00:00Z",
    "after-9999-in-utc": "9999-12-31T23:00:00-05:00",
    # The driver would store these two as PostgreSQL's -infinity and infinity.
    "first-instant": "0001-01-01T00:00:00Z",
    "last-instant": "9999-12-31T23:59:59.999999Z",
    "first-instant-with-offset": "0001-01-01T05:00:00+05:00",
    "2**63": 2**63,
    "1e308": 1e308,
    "object": {"$gt": "2026-01-01"},
}
# Query values are text; the same ideas, spelt as a client would put them in a URL.
HOSTILE_QUERY: dict[str, str] = {
    **{name: value for name, value in HOSTILE.items() if isinstance(value, str)},
    "percent-alone": "%",
    "underscore-alone": "_",
    "backslash": "\\%",
    "object": '{"$ne": null}',
    "array": '["a"]',
    "negative": "-1",
    "2**63": str(2**63),
    "1e308": "1e308",
    "year-0": "0000-01-01",
    "year-10000": "10000-01-01",
}
HOSTILE_IDS: dict[str, str] = {
    "negative": "-1",
    "zero": "0",
    "2**63": str(2**63),
    "1e308": "1e308",
    "sql": "1 OR 1=1",
    "drop": "1;DROP TABLE leads",
}

# Which values each kind of field refuses; it stores every other one exactly.
SHORT_TEXT_REFUSES = NOT_TEXT | {"long"}  # names, company, job title, full name (<= 200)
NOTE_REFUSES = NOT_TEXT  # 10,000 characters is exactly the default limit
TAG_REFUSES = NOT_TEXT | {"long"}  # 50 characters
PASSWORD_REFUSES = NOT_TEXT | {"long", "percent", "underscore"}  # 8 to 1024 characters
LEAD_TEXT_FIELDS = {
    "first_name": SHORT_TEXT_REFUSES,
    "last_name": SHORT_TEXT_REFUSES,
    "company": SHORT_TEXT_REFUSES,
    "job_title": SHORT_TEXT_REFUSES,
    "email": frozenset(HOSTILE),  # none of them is an address
    "phone": frozenset(HOSTILE),  # none of them is a phone number
    "notes": NOTE_REFUSES,
    "tags": TAG_REFUSES,
}


# ---------------------------------------------------------------------------------- helpers


async def leads_by_id(db: AsyncSession) -> dict[int, tuple[Any, ...]]:
    """Every stored lead, read with a fresh query."""
    rows = (await db.execute(text("SELECT * FROM leads ORDER BY id"))).all()
    return {row[0]: tuple(row) for row in rows}


async def users_by_id(db: AsyncSession) -> dict[int, tuple[Any, ...]]:
    rows = (await db.execute(text("SELECT * FROM users ORDER BY id"))).all()
    return {row[0]: tuple(row) for row in rows}


def assert_names_field(response: httpx.Response, *loc: Any) -> None:
    """A 4xx in the error shape whose errors name the field (`loc` starts with it)."""
    assert 400 <= response.status_code < 500, response.text
    body = response.json()
    locs = [error["loc"] for error in body.get("errors", [])]
    assert any(found[: len(loc)] == list(loc) for found in locs), (loc, body)


def assert_only_these_changed(
    before: dict[int, tuple[Any, ...]], after: dict[int, tuple[Any, ...]], *changed: int
) -> None:
    """No row lost or added (beyond `changed`), and every other row exactly as it was."""
    assert set(after) - set(changed) == set(before) - set(changed)
    for row_id, row in before.items():
        if row_id not in changed:
            assert after[row_id] == row, f"row {row_id} changed"


def stored_form(field: str, value: str) -> Any:
    """How a stored value reads back: tags are lowercased (documented); the rest as sent."""
    return [value.lower()] if field == "tags" else value


def as_sent(field: str, value: Any) -> Any:
    return [value] if field == "tags" else value


@pytest.fixture
async def target(make_lead: LeadFactory, agent: User) -> int:
    """The lead the writes go to (the agent's), among bystanders whose text holds `%` and `_`
    and text those would match as wildcards."""
    lead = await make_lead(
        owner=agent, first_name="Tara", last_name="Target", email="t@target.example"
    )
    await make_lead(
        first_name="Perc", last_name="Ent", email="a@percent.example", company="100% Organic"
    )
    await make_lead(
        first_name="Under",
        last_name="snake_case",
        email="b@under.example",
        company="1000 Organic",
        tags=["a_b", "50%"],
    )
    await make_lead(first_name="Wild", last_name="Axb", email="c@wild.example", tags=["axb"])
    return uid(lead)


# ------------------------------------------------------------------------------ lead text


def values_for(field: str, refuses: frozenset[str]) -> list[tuple[str, Any, bool]]:
    """(name, value, stored?) of every hostile value for a field: stored exactly, or refused."""
    cases = [(name, value, name not in refuses) for name, value in HOSTILE.items()]
    if field == "email":
        cases += [(name, value, True) for name, value in HOSTILE_EMAILS.items()]
    return cases


async def write_and_check(
    client: httpx.AsyncClient,
    db: AsyncSession,
    request: dict[str, Any],
    *,
    field: str,
    stored: bool,
    target: int | None = None,
) -> dict[str, Any] | None:
    """Send one write. Refused: a 4xx naming `field` and not a row changed. Stored: a 2xx, and
    no lead changed but `target` (or, for a create, the one new lead); the response's body."""
    before = await leads_by_id(db)
    response = await client.request(**request)
    after = await leads_by_id(db)
    if not stored:
        assert_names_field(response, "body", field)
        assert after == before, "a refused request changed a lead"
        return None
    assert response.status_code in (200, 201), response.text
    changed = target if target is not None else response.json()["id"]
    assert_only_these_changed(before, after, changed)
    assert len(after) == len(before) + (target is None)
    return dict(response.json())


@pytest.mark.parametrize("field", list(LEAD_TEXT_FIELDS))
async def test_hostile_text_in_a_new_lead_is_stored_exactly_or_refused(
    client: httpx.AsyncClient, h: dict[str, str], db: AsyncSession, target: int, field: str
) -> None:
    base = {"first_name": "New", "last_name": "Lead", "email": "new@lead.example"}
    if field == "email":
        base["phone"] = "+15550100"
    for name, value, stored in values_for(field, LEAD_TEXT_FIELDS[field]):
        body = {**base, field: as_sent(field, value)}
        request = {"method": "POST", "url": CREATE, "json": body, "headers": h}
        created = await write_and_check(client, db, request, field=field, stored=stored)
        if created is None:
            continue
        read = (await client.get(f"{LEADS}/{created['id']}", headers=h)).json()
        if field == "notes":
            assert read["notes"].endswith(f": {value}"), name
        else:
            assert read[field] == stored_form(field, value), name


@pytest.mark.parametrize("field", list(LEAD_TEXT_FIELDS))
async def test_hostile_text_in_a_lead_update_is_stored_exactly_or_refused(
    client: httpx.AsyncClient, h: dict[str, str], db: AsyncSession, target: int, field: str
) -> None:
    for name, value, stored in values_for(field, LEAD_TEXT_FIELDS[field]):
        body = {field: as_sent(field, value)}
        request = {"method": "PATCH", "url": f"{LEADS}/{target}", "json": body, "headers": h}
        if await write_and_check(client, db, request, field=field, stored=stored, target=target):
            read = (await client.get(f"{LEADS}/{target}", headers=h)).json()
            if field == "notes":
                assert read["notes"].endswith(f": {value}"), name
            else:
                assert read[field] == stored_form(field, value), name


def note_request(where: str, lead: int, value: Any) -> tuple[str, dict[str, Any], str]:
    """Path, body and field of each other way a note's text is sent."""
    if where == "note":
        return f"{LEADS}/{lead}/notes", {"text": value}, "text"
    if where == "call":
        return f"{LEADS}/{lead}/calls", {"note": value}, "note"
    return (
        f"{LEADS}/bulk/status",
        {"lead_ids": [lead], "status": "CONTACTED", "note": value},
        "note",
    )


@pytest.mark.parametrize("where", ["note", "call", "bulk"])
async def test_hostile_text_in_a_note_a_call_or_a_bulk_note_is_stored_exactly_or_refused(
    client: httpx.AsyncClient, h: dict[str, str], db: AsyncSession, target: int, where: str
) -> None:
    for name, value, stored in values_for("notes", NOTE_REFUSES):
        path, body, field = note_request(where, target, value)
        request = {"method": "POST", "url": path, "json": body, "headers": h}
        if await write_and_check(client, db, request, field=field, stored=stored, target=target):
            read = (await client.get(f"{LEADS}/{target}", headers=h)).json()
            assert read["notes"].endswith(f": {value}"), name


async def test_a_tag_that_grows_past_50_characters_when_lowercased_is_refused(
    client: httpx.AsyncClient, h: dict[str, str], db: AsyncSession, target: int
) -> None:
    """'İ' lowercases to two characters: 50 of them pass the schema and are caught by the
    model's check of the normalized tag, before the database (whose column is 50 wide)."""
    request = {
        "method": "PATCH",
        "url": f"{LEADS}/{target}",
        "json": {"tags": ["İ" * 50]},
        "headers": h,
    }
    await write_and_check(client, db, request, field="tags", stored=False)


# ----------------------------------------------------------------------- numbers and dates


async def test_a_hostile_number_in_a_lead_is_refused_naming_the_field(
    client: httpx.AsyncClient, h: dict[str, str], db: AsyncSession, target: int
) -> None:
    fields = ("lead_score", "probability", "estimated_value", "call_attempts", "assigned_to")
    for method in ("POST", "PATCH"):
        if method == "POST":
            path, base = LEADS, {"first_name": "N", "last_name": "L", "email": "n@l.example"}
        else:
            path, base = f"{LEADS}/{target}", {}
        for field in fields:
            for value in HOSTILE_NUMBERS.values():
                body = {**base, field: value}
                request = {"method": method, "url": path, "json": body, "headers": h}
                await write_and_check(client, db, request, field=field, stored=False)


async def test_a_date_out_of_range_in_a_lead_is_refused_naming_the_field(
    client: httpx.AsyncClient, h: dict[str, str], db: AsyncSession, target: int
) -> None:
    for field in ("last_contact_date", "next_follow_up_date"):
        for value in HOSTILE_DATES.values():
            request = {
                "method": "PATCH",
                "url": f"{LEADS}/{target}",
                "json": {field: value},
                "headers": h,
            }
            await write_and_check(client, db, request, field=field, stored=False)


async def test_the_extreme_dates_that_exist_are_stored_exactly(
    client: httpx.AsyncClient, h: dict[str, str], db: AsyncSession, target: int
) -> None:
    extremes = [
        ("9999-12-31T23:59:59.999998Z", datetime(9999, 12, 31, 23, 59, 59, 999998, tzinfo=UTC)),
        ("0001-01-01T00:00:00.000001Z", datetime(1, 1, 1, 0, 0, 0, 1, tzinfo=UTC)),
    ]
    for value, expected in extremes:
        request = {
            "method": "PATCH",
            "url": f"{LEADS}/{target}",
            "json": {"next_follow_up_date": value},
            "headers": h,
        }
        updated = await write_and_check(
            client, db, request, field="next_follow_up_date", stored=True, target=target
        )
        assert updated is not None
        read = (await client.get(f"{LEADS}/{target}", headers=h)).json()
        assert datetime.fromisoformat(read["next_follow_up_date"]) == expected, value


async def test_the_model_refuses_the_instants_the_driver_cannot_store(
    db: AsyncSession, target: int, superuser: User
) -> None:
    """Every path, not only HTTP: the service call is refused naming the field."""
    before = await leads_by_id(db)
    for moment in (datetime.min, datetime.max):
        with pytest.raises(ValidationException) as refused:
            await LeadService.update_lead(
                db,
                target,
                {"last_contact_date": moment.replace(tzinfo=UTC)},
                user_id=uid(superuser),
            )
        assert [error["loc"] for error in refused.value.errors] == [["last_contact_date"]]
        assert await leads_by_id(db) == before


HOSTILE_ID_LISTS: dict[str, Any] = {
    **{name: [value] for name, value in HOSTILE_NUMBERS.items()},
    "sql-text": "' OR 1=1 --",
    "sql-item": ["' OR 1=1 --"],
    "object": {"$in": [1]},
}


async def test_hostile_lead_ids_in_a_bulk_call_are_refused_naming_the_field(
    client: httpx.AsyncClient, h: dict[str, str], db: AsyncSession, target: int, agent: User
) -> None:
    for path in ("bulk/status", "bulk/assign"):
        rest = {"status": "WON"} if path == "bulk/status" else {"agent_user_id": uid(agent)}
        for value in HOSTILE_ID_LISTS.values():
            body = {**rest, "lead_ids": value}
            request = {"method": "POST", "url": f"{LEADS}/{path}", "json": body, "headers": h}
            await write_and_check(client, db, request, field="lead_ids", stored=False)


async def test_a_hostile_agent_id_in_a_bulk_assign_is_refused_naming_the_field(
    client: httpx.AsyncClient, h: dict[str, str], db: AsyncSession, target: int
) -> None:
    for value in HOSTILE_NUMBERS.values():
        body = {"lead_ids": [target], "agent_user_id": value}
        request = {"method": "POST", "url": f"{LEADS}/bulk/assign", "json": body, "headers": h}
        await write_and_check(client, db, request, field="agent_user_id", stored=False)


BODY_ROUTES = [
    ("POST", LEADS, "/api/v1/leads"),
    ("PATCH", LEADS + "/{lead}", "/api/v1/leads/{lead_id}"),
    ("POST", LEADS + "/{lead}/notes", "/api/v1/leads/{lead_id}/notes"),
    ("POST", LEADS + "/{lead}/calls", "/api/v1/leads/{lead_id}/calls"),
    ("POST", LEADS + "/bulk/status", "/api/v1/leads/bulk/status"),
    ("POST", LEADS + "/bulk/assign", "/api/v1/leads/bulk/assign"),
    ("POST", USERS, "/api/v1/users"),
    ("PATCH", USERS + "/me", "/api/v1/users/me"),
    ("PATCH", USERS + "/{agent}", "/api/v1/users/{user_id}"),
]


async def test_a_json_body_that_is_not_utf8_is_a_documented_400_and_changes_nothing(
    client: httpx.AsyncClient, h: dict[str, str], db: AsyncSession, target: int, agent: User
) -> None:
    """Bytes that are no text cannot be JSON: 400 bad_request, a status each route documents
    (schemathesis found it undocumented)."""
    spec = (await client.get("/openapi.json")).json()
    before = (await leads_by_id(db), await users_by_id(db))
    for method, path, template in BODY_ROUTES:
        url = path.replace("{lead}", str(target)).replace("{agent}", str(uid(agent)))
        headers = {**h, "Content-Type": "application/json"}
        response = await client.request(method, url, content=b'{"a": "\xff\xfe"}', headers=headers)
        assert response.status_code == 400, (method, path, response.text)
        assert response.json()["code"] == "bad_request"
        assert "400" in spec["paths"][template][method.lower()]["responses"], (method, path)
        assert (await leads_by_id(db), await users_by_id(db)) == before, (method, path)


# ------------------------------------------------------------------------------- path ids

PATH_ROUTES = [
    ("GET", LEADS + "/{id}", "lead_id", None),
    ("PATCH", LEADS + "/{id}", "lead_id", {"status": "WON"}),
    ("DELETE", LEADS + "/{id}", "lead_id", None),
    ("POST", LEADS + "/{id}/restore", "lead_id", None),
    ("POST", LEADS + "/{id}/notes", "lead_id", {"text": "hi"}),
    ("POST", LEADS + "/{id}/calls", "lead_id", None),
    ("GET", USERS + "/{id}", "user_id", None),
    ("PATCH", USERS + "/{id}", "user_id", {"full_name": "X"}),
]


async def test_every_hostile_id_in_the_path_is_refused(
    client: httpx.AsyncClient, h: dict[str, str], db: AsyncSession, target: int
) -> None:
    before = (await leads_by_id(db), await users_by_id(db))
    for method, path, name, body in PATH_ROUTES:
        for label, value in HOSTILE_IDS.items():
            url = path.replace("{id}", value)
            response = await client.request(method, url, json=body, headers=h)
            if value.isdigit():  # an id out of range: 422 naming it
                assert response.status_code == 422, (method, path, label, response.text)
                assert_names_field(response, "path", name)
            else:  # no id at all: there is no such path (ids are whole numbers)
                assert response.status_code == 404, (method, path, label, response.text)
                assert response.json()["code"] == "not_found"
            assert (await leads_by_id(db), await users_by_id(db)) == before, (method, path, label)


# ---------------------------------------------------------------------------- list filters


def search_document(lead: dict[str, Any]) -> str:
    return "\n".join(
        [f"{lead['first_name']} {lead['last_name']}"]
        + [lead[name] or "" for name in ("email", "phone", "company")]
    ).lower()


def search_matches(lead: dict[str, Any], term: str) -> bool:
    """`search` as documented: a case-insensitive substring of the lead's name, email, phone or
    company, taken literally; a phone-shaped term also matches without its separators."""
    term = term.strip().lower()
    document = search_document(lead)
    compact = re.sub(r"[\s.\-()]", "", term)
    phone_shaped = compact != term and re.fullmatch(r"\+?\d+", compact)
    return term in document or bool(phone_shaped and compact in document)


# Per filter: the hostile values it accepts (the rest it refuses naming itself).
FILTER_ACCEPTS: dict[str, set[str]] = {
    "search": set(HOSTILE_QUERY) - {"nul", "long"},
    "tags": set(HOSTILE_QUERY) - {"nul", "long"},
    # -1 would be a Unix time to pydantic; the schema says ISO 8601 text, so it is refused.
    "date_range_start": set(),
    "date_range_end": set(),
    **{
        param: set()
        for param in (
            "status",
            "source",
            "assigned_to",
            "lead_score_min",
            "lead_score_max",
            "is_hot_leads_only",
            "include_archived",
            "skip",
            "limit",
            "sort_by",
            "sort_order",
            "cursor",
            "exact_total",
        )
    },
}


def test_every_list_filter_gets_the_hostile_values() -> None:
    assert set(FILTER_ACCEPTS) == set(LeadFilters.model_fields) | set(LeadPaging.model_fields)


def expected_ids(param: str, value: str, leads: list[dict[str, Any]]) -> list[int]:
    """The leads (newest first) a filter that accepted `value` must return."""
    if param == "search":
        found = [lead for lead in leads if search_matches(lead, value)]
    elif param == "tags":
        found = [lead for lead in leads if value.strip().lower() in lead["tags"]]
    elif param == "date_range_start":
        found = leads  # all created after 1969
    else:
        found = []  # none created before 1969
    return [lead["id"] for lead in found]


async def test_every_hostile_value_in_every_lead_filter_matches_literally_or_is_refused(
    client: httpx.AsyncClient, h: dict[str, str], db: AsyncSession, target: int
) -> None:
    everything = (await client.get(LEADS, headers=h)).json()["items"]
    assert len(everything) == 4
    before = await leads_by_id(db)
    for param, accepts in FILTER_ACCEPTS.items():
        for name, value in HOSTILE_QUERY.items():
            response = await client.get(LEADS, params={param: value}, headers=h)
            if name in accepts:
                assert response.status_code == 200, (param, name, response.text)
                found = [lead["id"] for lead in response.json()["items"]]
                assert found == expected_ids(param, value, everything), (param, name)
            else:
                assert response.status_code == 422, (param, name, response.text)
                assert_names_field(response, "query", param)
            assert await leads_by_id(db) == before, (param, name)


async def test_percent_and_underscore_in_search_match_only_literally(
    client: httpx.AsyncClient, h: dict[str, str], target: int
) -> None:
    found = {}
    for term in ("%", "100%", "_", "e_c", "a_b", "100_", "%Organic"):
        response = await client.get(LEADS, params={"search": term}, headers=h)
        assert response.status_code == 200, response.text
        found[term] = [lead["last_name"] for lead in response.json()["items"]]
    assert found == {
        "%": ["Ent"],  # company "100% Organic"
        "100%": ["Ent"],
        "_": ["snake_case"],
        "e_c": ["snake_case"],
        "a_b": [],  # as a wildcard it would find "Axb"
        "100_": [],  # as a wildcard it would find "1000 Organic" and "100% Organic"
        "%Organic": [],  # as a wildcard it would find both companies
    }


async def test_percent_and_underscore_in_the_tags_filter_match_only_literally(
    client: httpx.AsyncClient, h: dict[str, str], target: int
) -> None:
    by_tag = {}
    for tag in ("a_b", "50%", "a%b", "axb", "_", "%"):
        response = await client.get(LEADS, params={"tags": tag}, headers=h)
        assert response.status_code == 200, response.text
        by_tag[tag] = sorted(lead["last_name"] for lead in response.json()["items"])
    assert by_tag == {
        "a_b": ["snake_case"],
        "50%": ["snake_case"],
        "a%b": [],
        "axb": ["Axb"],
        "_": [],
        "%": [],
    }


async def test_bytes_that_are_not_utf8_in_a_filter_are_not_a_server_error(
    client: httpx.AsyncClient, h: dict[str, str], db: AsyncSession, target: int
) -> None:
    """`%FF%FE` decodes to no text: it is read as replacement characters (matching nothing)
    or refused naming the filter, never a crash."""
    before = await leads_by_id(db)
    for param in ("search", "tags", "cursor", "sort_by"):
        response = await client.get(f"{LEADS}?{param}=%FF%FE", headers=h)
        if response.status_code == 200:
            assert response.json()["items"] == [], param
        else:
            assert response.status_code == 422, (param, response.text)
            assert_names_field(response, "query", param)
        assert await leads_by_id(db) == before, param


def cursor_of(document: Any) -> str:
    raw = json.dumps(document).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


FORGED_CURSORS = {
    "text-for-a-score": ("lead_score", {"s": "lead_score", "o": "desc", "v": "' OR 1=1 --"}),
    "score-2**63": ("lead_score", {"s": "lead_score", "o": "desc", "v": 2**63}),
    "score-true": ("lead_score", {"s": "lead_score", "o": "desc", "v": True}),
    "status-99": ("status", {"s": "status", "o": "desc", "v": 99}),
    "nul-in-name": ("last_name", {"s": "last_name", "o": "desc", "v": "a\x00b"}),
    "object-for-a-name": ("last_name", {"s": "last_name", "o": "desc", "v": {"$ne": None}}),
    "number-for-a-company": ("company", {"s": "company", "o": "desc", "v": 1e308}),
    "date-before-year-1-in-utc": (
        "created_at",
        {"s": "created_at", "o": "desc", "v": "0001-01-01T00:00:00+05:00"},
    ),
    "null-for-created-at": ("created_at", {"s": "created_at", "o": "desc", "v": None}),
    "id-2**63": ("created_at", {"s": "created_at", "o": "desc", "v": "2026-01-01", "i": 2**63}),
    "id-text": ("created_at", {"s": "created_at", "o": "desc", "v": "2026-01-01", "i": "7"}),
    "id-1e308": ("created_at", {"s": "created_at", "o": "desc", "v": "2026-01-01", "i": 1e308}),
    "a-list": ("created_at", ["created_at", "desc"]),
}


async def test_every_forged_cursor_is_refused_naming_it(
    client: httpx.AsyncClient, h: dict[str, str], db: AsyncSession, target: int
) -> None:
    """A cursor is the client's text: a well-formed one holding a value of the wrong type must
    be refused, not reach the database (where PostgreSQL would fail on it)."""
    before = await leads_by_id(db)
    for name, (sort_by, document) in FORGED_CURSORS.items():
        if isinstance(document, dict):
            document = {"i": 1, **document}
        params = {"cursor": cursor_of(document), "sort_by": sort_by, "sort_order": "desc"}
        response = await client.get(LEADS, params=params, headers=h)
        assert response.status_code == 422, (name, response.text)
        assert_names_field(response, "query", "cursor")
        assert await leads_by_id(db) == before, name


# ------------------------------------------------------------------------------------ users

USER_FIELDS = {
    "full_name": SHORT_TEXT_REFUSES,
    "email": frozenset(HOSTILE),
    "password": PASSWORD_REFUSES,
}


@pytest.mark.parametrize("field", list(USER_FIELDS))
async def test_hostile_text_in_a_new_user_is_stored_exactly_or_refused(
    client: httpx.AsyncClient, h: dict[str, str], db: AsyncSession, target: int, field: str
) -> None:
    leads_before = await leads_by_id(db)
    for n, (name, value, stored) in enumerate(values_for(field, USER_FIELDS[field])):
        email = f"new{n}@user.example"
        body = {"email": email, "full_name": "New User", "password": PASSWORD, field: value}
        before = await users_by_id(db)
        response = await client.post(USERS, json=body, headers=h)
        after = await users_by_id(db)
        if not stored:
            assert_names_field(response, "body", field)
            assert after == before, name
            continue
        assert response.status_code == 201, (name, response.text)
        new_id = response.json()["id"]
        assert_only_these_changed(before, after, new_id)
        assert set(after) == set(before) | {new_id}
        if field == "password":  # stored as a hash: it must let its owner in
            login = {"username": email, "password": value}
            assert (await client.post("/api/v1/auth/token", data=login)).status_code == 200
        else:
            read = (await client.get(f"{USERS}/{new_id}", headers=h)).json()
            assert read[field] == value, name
    assert await leads_by_id(db) == leads_before


async def test_hostile_text_in_an_account_name_is_stored_exactly_or_refused(
    client: httpx.AsyncClient,
    auth_headers: Any,
    superuser: User,
    agent: User,
    db: AsyncSession,
) -> None:
    """Through /users/me (the agent's own name) and /users/{id} (a superuser's change)."""
    agent_id = uid(agent)
    routes = {
        "me": (f"{USERS}/me", auth_headers(agent)),
        "admin": (f"{USERS}/{agent_id}", auth_headers(superuser)),
    }
    for route, (path, headers) in routes.items():
        for name, value, stored in values_for("full_name", SHORT_TEXT_REFUSES):
            before = await users_by_id(db)
            response = await client.patch(path, json={"full_name": value}, headers=headers)
            after = await users_by_id(db)
            if not stored:
                assert_names_field(response, "body", "full_name")
                assert after == before, (route, name)
                continue
            assert response.status_code == 200, (route, name, response.text)
            assert_only_these_changed(before, after, agent_id)
            read = (await client.get(f"{USERS}/{agent_id}", headers=auth_headers(agent))).json()
            assert read["full_name"] == value, (route, name)


async def test_a_hostile_current_password_is_refused_and_changes_nothing(
    client: httpx.AsyncClient, auth_headers: Any, agent: User, db: AsyncSession
) -> None:
    for name, value in HOSTILE.items():
        before = await users_by_id(db)
        body = {"password": "a brand new passphrase", "current_password": value}
        response = await client.patch(f"{USERS}/me", json=body, headers=auth_headers(agent))
        assert_names_field(response, "body", "current_password")
        assert await users_by_id(db) == before, name


async def test_every_hostile_value_in_a_user_list_parameter_is_refused_naming_it(
    client: httpx.AsyncClient, h: dict[str, str]
) -> None:
    for param in ("skip", "limit"):
        for name, value in HOSTILE_QUERY.items():
            response = await client.get(USERS, params={param: value}, headers=h)
            assert response.status_code == 422, (param, name, response.text)
            assert_names_field(response, "query", param)


async def test_every_hostile_login_name_is_401_and_changes_no_account(
    client: httpx.AsyncClient, superuser: User, db: AsyncSession
) -> None:
    """A failed login never says why (so it cannot tell which accounts exist): 401 with no
    field named, whatever was sent. (Each name is its own throttling key.)"""
    before = await users_by_id(db)
    for name, value in HOSTILE.items():
        form = {"username": str(value), "password": PASSWORD}
        response = await client.post("/api/v1/auth/token", data=form)
        assert response.status_code == 401, (name, response.text)
        assert response.json()["code"] == "not_authenticated"
        assert await users_by_id(db) == before, name


@pytest.mark.parametrize(
    "value", [pytest.param(str(value), id=name) for name, value in HOSTILE.items()]
)
async def test_a_hostile_login_password_is_401_and_changes_no_account(
    client: httpx.AsyncClient, superuser: User, db: AsyncSession, value: str
) -> None:
    """One test per value: more failures than the throttle allows on one account would turn
    the last ones into 429s."""
    form = {"username": SUPERUSER_EMAIL, "password": value}
    before = await users_by_id(db)
    response = await client.post("/api/v1/auth/token", data=form)
    assert response.status_code == 401, response.text
    assert response.json()["code"] == "not_authenticated"
    assert await users_by_id(db) == before
