"""Every error the API returns, in its one shape, and the inputs that must be refused with a 4xx
naming the field - never a 500, never a change to the database.

The shape: {"detail": "<sentence>", "code": "<snake_case>"} plus, for validation errors only,
"errors": [{"loc": [...], "msg": "..."}].
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import use_settings
from app.main import create_app
from app.models import User
from app.services import LeadService
from tests.helpers import LeadFactory, concrete, count_rows, make_settings, uid

LEADS = "/api/v1/leads"
USERS = "/api/v1/users"
MIB = 1024 * 1024
SNAKE_CASE = re.compile(r"^[a-z]+(_[a-z]+)*$")
LEAD_ID = "{lead}"  # placeholder in the table below, replaced by the test lead's id


# ---------------------------------------------------------------------------------- helpers


def assert_error(
    response: httpx.Response, status: int, code: str, *locs: list[Any]
) -> dict[str, Any]:
    """The response is an error in the one shape; validation errors list `errors`, and each
    loc in `locs` is among them."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert isinstance(body["detail"], str) and body["detail"].strip()
    assert body["code"] == code
    assert SNAKE_CASE.match(body["code"])
    if code == "validation_error":
        assert set(body) == {"detail", "code", "errors"}
        assert body["errors"], "a validation error lists at least one problem"
        for error in body["errors"]:
            assert set(error) == {"loc", "msg"}
            assert isinstance(error["loc"], list)
            assert all(isinstance(part, str | int) for part in error["loc"])
            assert isinstance(error["msg"], str) and error["msg"]
        found = [error["loc"] for error in body["errors"]]
        for loc in locs:
            assert loc in found, f"{loc} not in {found}"
    else:
        # A 500 quotes the request id under which its traceback was logged.
        quoted = {"request_id"} if code == "internal_error" else set()
        assert set(body) == {"detail", "code"} | quoted
        assert not locs
    return body


async def snapshot(db: AsyncSession) -> tuple[list[Any], list[Any]]:
    """Every stored lead and user, as plain tuples read with fresh queries."""
    leads = (await db.execute(text("SELECT * FROM leads ORDER BY id"))).all()
    users = (await db.execute(text("SELECT * FROM users ORDER BY id"))).all()
    return [tuple(row) for row in leads], [tuple(row) for row in users]


def fill(value: Any, lead_id: int) -> Any:
    if isinstance(value, str):
        return value.replace(LEAD_ID, str(lead_id))
    if isinstance(value, dict):
        return {k: fill(v, lead_id) for k, v in value.items()}
    if isinstance(value, list):
        return [fill(v, lead_id) for v in value]
    return value


@pytest.fixture
async def lead_id(make_lead: LeadFactory, agent: User) -> int:
    return uid(await make_lead(owner=agent))


# ------------------------------------------------------------------ each error status and code


async def test_unknown_lead_is_404_lead_not_found(
    client: httpx.AsyncClient, h: dict[str, str]
) -> None:
    body = assert_error(await client.get(f"{LEADS}/987654", headers=h), 404, "lead_not_found")
    assert body["detail"] == "Lead 987654 was not found."


@pytest.mark.parametrize(
    ("method", "path", "payload"),
    [
        ("PATCH", "/987654", {"status": "WON"}),
        ("DELETE", "/987654", None),
        ("POST", "/987654/restore", None),
        ("POST", "/987654/notes", {"text": "hello"}),
        ("POST", "/987654/calls", None),
    ],
)
async def test_every_lead_route_answers_404_lead_not_found_for_an_unknown_id(
    client: httpx.AsyncClient,
    h: dict[str, str],
    db: AsyncSession,
    lead_id: int,
    method: str,
    path: str,
    payload: dict[str, Any] | None,
) -> None:
    before = await snapshot(db)
    response = await client.request(method, f"{LEADS}{path}", json=payload, headers=h)
    assert_error(response, 404, "lead_not_found")
    assert await snapshot(db) == before


async def test_unknown_user_is_404_user_not_found(
    client: httpx.AsyncClient, h: dict[str, str]
) -> None:
    assert_error(await client.get(f"{USERS}/987654", headers=h), 404, "user_not_found")


async def test_assigning_to_an_unknown_user_is_404_user_not_found(
    client: httpx.AsyncClient, h: dict[str, str], db: AsyncSession
) -> None:
    response = await client.post(
        LEADS,
        json={"first_name": "A", "last_name": "B", "email": "a@b.com", "assigned_to": 987654},
        headers=h,
    )
    assert_error(response, 404, "user_not_found")
    assert await count_rows(db) == 0


async def test_unknown_route_is_404_not_found(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/api/v1/nothing-here"), 404, "not_found")


async def test_unsupported_method_is_405_method_not_allowed(
    client: httpx.AsyncClient, h: dict[str, str], lead_id: int
) -> None:
    response = await client.put(f"{LEADS}/{lead_id}", json={}, headers=h)
    assert_error(response, 405, "method_not_allowed")
    assert "allow" in response.headers


async def test_agent_on_another_agents_lead_is_404_like_a_missing_lead(
    client: httpx.AsyncClient,
    auth_headers: Any,
    other_agent: User,
    lead_id: int,
    db: AsyncSession,
) -> None:
    before = await snapshot(db)
    response = await client.patch(
        f"{LEADS}/{lead_id}", json={"status": "WON"}, headers=auth_headers(other_agent)
    )
    assert_error(response, 404, "lead_not_found")
    assert response.json()["detail"] == f"Lead {lead_id} was not found."
    assert await snapshot(db) == before


async def test_agent_hard_delete_is_403_permission_denied(
    client: httpx.AsyncClient, auth_headers: Any, agent: User, lead_id: int, db: AsyncSession
) -> None:
    before = await snapshot(db)
    response = await client.delete(
        f"{LEADS}/{lead_id}?hard_delete=true", headers=auth_headers(agent)
    )
    assert_error(response, 403, "permission_denied")
    assert await snapshot(db) == before


async def test_invalid_body_is_422_validation_error_listing_each_field(
    client: httpx.AsyncClient, h: dict[str, str], db: AsyncSession
) -> None:
    response = await client.post(LEADS, json={"lead_score": 101}, headers=h)
    body = assert_error(
        response,
        422,
        "validation_error",
        ["body", "first_name"],
        ["body", "last_name"],
        ["body", "lead_score"],
    )
    assert len(body["errors"]) == 3
    assert await count_rows(db) == 0


async def test_service_validation_error_is_422_naming_the_field(
    client: httpx.AsyncClient, h: dict[str, str], db: AsyncSession
) -> None:
    response = await client.post(
        LEADS, json={"first_name": "A", "last_name": "B", "email": "no-at-sign"}, headers=h
    )
    assert_error(response, 422, "validation_error", ["body", "email"])
    assert await count_rows(db) == 0


async def test_taken_email_is_409_duplicate(
    client: httpx.AsyncClient, h: dict[str, str], agent: User, db: AsyncSession
) -> None:
    before = await snapshot(db)
    response = await client.post(
        USERS,
        json={"email": "agent@crm.example.com", "full_name": "Twin", "password": "12345678"},
        headers=h,
    )
    assert_error(response, 409, "duplicate")
    assert await snapshot(db) == before


@pytest.mark.parametrize(
    ("method", "path", "payload"),
    [
        ("PATCH", "", {"status": "WON"}),
        ("POST", "/notes", {"text": "hello"}),
        ("POST", "/calls", None),
    ],
)
async def test_changing_an_archived_lead_is_409_conflict(
    client: httpx.AsyncClient,
    h: dict[str, str],
    superuser: User,
    lead_id: int,
    db: AsyncSession,
    method: str,
    path: str,
    payload: dict[str, Any] | None,
) -> None:
    await LeadService.delete_lead(db, lead_id, user_id=uid(superuser))
    before = await snapshot(db)
    response = await client.request(method, f"{LEADS}/{lead_id}{path}", json=payload, headers=h)
    body = assert_error(response, 409, "conflict")
    assert "archived" in body["detail"]
    assert await snapshot(db) == before


async def test_bulk_on_an_archived_lead_is_409_conflict(
    client: httpx.AsyncClient,
    h: dict[str, str],
    superuser: User,
    make_lead: LeadFactory,
    lead_id: int,
    db: AsyncSession,
) -> None:
    fine = uid(await make_lead())
    await LeadService.delete_lead(db, lead_id, user_id=uid(superuser))
    before = await snapshot(db)
    response = await client.post(
        f"{LEADS}/bulk/status", json={"lead_ids": [fine, lead_id], "status": "WON"}, headers=h
    )
    assert_error(response, 409, "conflict")
    assert await snapshot(db) == before


async def test_assigning_to_an_inactive_user_is_409_inactive_user(
    client: httpx.AsyncClient, h: dict[str, str], inactive_user: User, db: AsyncSession
) -> None:
    response = await client.post(
        LEADS,
        json={
            "first_name": "A",
            "last_name": "B",
            "email": "a@b.com",
            "assigned_to": uid(inactive_user),
        },
        headers=h,
    )
    assert_error(response, 409, "inactive_user")
    assert await count_rows(db) == 0


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer not-a-jwt"}, {"Authorization": "Basic dXNlcjpwYXNz"}],
    ids=["no-header", "garbage-token", "basic-scheme"],
)
async def test_missing_or_bad_credentials_are_401_with_www_authenticate(
    client: httpx.AsyncClient, lead_id: int, headers: dict[str, str]
) -> None:
    response = await client.get(f"{LEADS}/{lead_id}", headers=headers)
    assert_error(response, 401, "not_authenticated")
    assert response.headers["www-authenticate"] == "Bearer"


async def test_unauthenticated_write_is_401_before_the_body_is_judged(
    client: httpx.AsyncClient, db: AsyncSession
) -> None:
    response = await client.post(LEADS, json={"first_name": "A", "last_name": "B"})
    assert_error(response, 401, "not_authenticated")
    assert await count_rows(db) == 0


async def test_an_unexpected_failure_is_500_in_the_error_shape_without_internals(
    app: FastAPI,
) -> None:
    async def boom() -> None:
        raise RuntimeError("secret internals: connection string postgres://u:p@h/db")

    app.add_api_route("/boom", boom)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        response = await client.get("/boom")
    assert_error(response, 500, "internal_error")
    assert "secret" not in response.text
    assert "RuntimeError" not in response.text


# ------------------------------------------------- invalid input: 4xx naming the field, no change


def bad(
    name: str, method: str, path: str, loc: list[Any], kind: str = "none", payload: Any = None
) -> Any:
    """One refused request: sent as `kind` ("json", "raw" JSON bytes, "form", "params" or
    "none"), to `path` under /api/v1 ("{lead}" becomes an existing lead's id)."""
    return pytest.param(method, path, kind, payload, loc, id=name)


L = "/leads/{lead}"
BULK = "/leads/bulk/status"
ASSIGN = "/leads/bulk/assign"
NAMES = {"first_name": "A", "last_name": "B", "email": "a@b.com"}

# fmt: off
BAD_REQUESTS = [
    # malformed or non-object bodies
    bad("malformed-json-create", "POST", "/leads", ["body", 19], "raw", b'{"first_name": "A",'),
    bad("malformed-json-update", "PATCH", L, ["body", 1], "raw", b"{status: WON}"),
    bad("malformed-json-bulk", "POST", BULK, ["body", 5], "raw", b"[1, 2"),
    bad("array-body", "POST", "/leads", ["body"], "json", [1, 2]),
    bad("string-call-body", "POST", f"{L}/calls", ["body"], "json", "a note"),
    bad("form-body-for-json", "POST", "/leads", ["body"], "form", {"first_name": "A"}),
    # wrong types
    bad("score-text-create", "POST", "/leads", ["body", "lead_score"], "json",
        {**NAMES, "lead_score": "abc"}),
    bad("score-text-update", "PATCH", L, ["body", "lead_score"], "json", {"lead_score": "abc"}),
    bad("tags-not-a-list", "PATCH", L, ["body", "tags"], "json", {"tags": "vip"}),
    bad("probability-text", "PATCH", L, ["body", "probability"], "json",
        {"probability": "likely"}),
    bad("datetime-text", "PATCH", L, ["body", "next_follow_up_date"], "json",
        {"next_follow_up_date": "soon"}),
    bad("name-a-number", "PATCH", L, ["body", "first_name"], "json", {"first_name": 42}),
    bad("full-name-a-list", "PATCH", "/users/me", ["body", "full_name"], "json",
        {"full_name": ["A"]}),
    bad("lead-ids-not-a-list", "POST", BULK, ["body", "lead_ids"], "json",
        {"lead_ids": "{lead}", "status": "WON"}),
    bad("lead-id-text", "POST", BULK, ["body", "lead_ids", 0], "json",
        {"lead_ids": ["x"], "status": "WON"}),
    bad("score-min-text", "GET", "/leads", ["query", "lead_score_min"], "params",
        {"lead_score_min": "high"}),
    bad("hot-only-not-bool", "GET", "/leads", ["query", "is_hot_leads_only"], "params",
        {"is_hot_leads_only": "maybe"}),
    bad("impossible-date", "GET", "/leads", ["query", "date_range_start"], "params",
        {"date_range_start": "2026-13-01"}),
    # unknown enum values
    bad("status-unknown-create", "POST", "/leads", ["body", "status"], "json",
        {**NAMES, "status": "FOO"}),
    bad("source-unknown-update", "PATCH", L, ["body", "source"], "json", {"source": "TELEPATHY"}),
    bad("status-unknown-bulk", "POST", BULK, ["body", "status"], "json",
        {"lead_ids": ["{lead}"], "status": "FOO"}),
    bad("status-unknown-filter", "GET", "/leads", ["query", "status", 0], "params",
        {"status": "FOO"}),
    bad("source-unknown-filter", "GET", "/leads", ["query", "source", 0], "params",
        {"source": "nope"}),
    # unknown sort keys
    bad("sort-by-unknown", "GET", "/leads", ["query", "sort_by"], "params",
        {"sort_by": "hashed_password"}),
    bad("sort-order-unknown", "GET", "/leads", ["query", "sort_order"], "params",
        {"sort_order": "sideways"}),
    # out-of-range numbers
    bad("score-101", "POST", "/leads", ["body", "lead_score"], "json",
        {**NAMES, "lead_score": 101}),
    bad("score-negative", "PATCH", L, ["body", "lead_score"], "json", {"lead_score": -1}),
    bad("probability-over-1", "PATCH", L, ["body", "probability"], "json", {"probability": 1.5}),
    bad("value-negative", "PATCH", L, ["body", "estimated_value"], "json",
        {"estimated_value": -1}),
    bad("value-nan", "PATCH", L, ["body", "estimated_value"], "json",
        {"estimated_value": "NaN"}),
    bad("call-attempts-huge", "PATCH", L, ["body", "call_attempts"], "json",
        {"call_attempts": 2**31 - 1}),
    bad("assignee-id-2-31", "PATCH", L, ["body", "assigned_to"], "json",
        {"assigned_to": 2**31}),
    bad("limit-0", "GET", "/leads", ["query", "limit"], "params", {"limit": 0}),
    bad("limit-1001", "GET", "/leads", ["query", "limit"], "params", {"limit": 1001}),
    bad("skip-negative", "GET", "/leads", ["query", "skip"], "params", {"skip": -1}),
    bad("skip-2-63", "GET", "/leads", ["query", "skip"], "params", {"skip": 2**63}),
    bad("score-max-101", "GET", "/leads", ["query", "lead_score_max"], "params",
        {"lead_score_max": 101}),
    bad("assigned-to-2-63", "GET", "/leads", ["query", "assigned_to"], "params",
        {"assigned_to": 2**63}),
    bad("users-limit-1001", "GET", "/users", ["query", "limit"], "params", {"limit": 1001}),
    bad("path-id-2-31", "GET", f"/leads/{2**31}", ["path", "lead_id"]),
    bad("path-id-2-63", "GET", f"/leads/{2**63}", ["path", "lead_id"]),
    bad("path-id-0", "GET", "/leads/0", ["path", "lead_id"]),
    bad("path-id-2-63-update", "PATCH", f"/leads/{2**63}", ["path", "lead_id"], "json",
        {"status": "WON"}),
    bad("path-id-2-31-delete", "DELETE", f"/leads/{2**31}", ["path", "lead_id"]),
    bad("path-id-2-63-note", "POST", f"/leads/{2**63}/notes", ["path", "lead_id"], "json",
        {"text": "hi"}),
    bad("path-user-id-2-63", "GET", f"/users/{2**63}", ["path", "user_id"]),
    bad("lead-ids-2-31", "POST", BULK, ["body", "lead_ids", 0], "json",
        {"lead_ids": [2**31], "status": "WON"}),
    bad("lead-ids-2-63", "POST", BULK, ["body", "lead_ids", 1], "json",
        {"lead_ids": ["{lead}", 2**63], "status": "WON"}),
    bad("assign-lead-ids-2-63", "POST", ASSIGN, ["body", "lead_ids", 0], "json",
        {"lead_ids": [2**63], "agent_user_id": 1}),
    bad("assign-agent-id-2-63", "POST", ASSIGN, ["body", "agent_user_id"], "json",
        {"lead_ids": ["{lead}"], "agent_user_id": 2**63}),
    bad("lead-ids-0", "POST", BULK, ["body", "lead_ids", 0], "json",
        {"lead_ids": [0], "status": "WON"}),
    bad("lead-ids-empty", "POST", BULK, ["body", "lead_ids"], "json",
        {"lead_ids": [], "status": "WON"}),
    # dates and datetimes that do not exist in UTC
    bad("datetime-after-year-9999-utc", "PATCH", L, ["body", "last_contact_date"], "json",
        {"last_contact_date": "9999-12-31T23:00:00-05:00"}),
    bad("datetime-before-year-1-utc", "PATCH", L, ["body", "next_follow_up_date"], "json",
        {"next_follow_up_date": "0001-01-01T00:00:00+05:00"}),
    bad("end-date-9999-12-31", "GET", "/leads", ["query", "date_range_end"], "params",
        {"date_range_end": "9999-12-31"}),
    bad("start-before-year-1-utc", "GET", "/leads", ["query", "date_range_start"], "params",
        {"date_range_start": "0001-01-01T00:00:00+05:00"}),
    # filters that contradict each other
    bad("date-range-reversed", "GET", "/leads", ["query", "date_range_start"], "params",
        {"date_range_start": "2026-02-01", "date_range_end": "2026-01-01"}),
    bad("score-range-reversed", "GET", "/leads", ["query", "lead_score_min"], "params",
        {"lead_score_min": 60, "lead_score_max": 40}),
    # unknown fields and parameters
    bad("unknown-field-create", "POST", "/leads", ["body", "hacker"], "json",
        {**NAMES, "hacker": 1}),
    bad("read-only-created-by", "PATCH", L, ["body", "created_by"], "json", {"created_by": 1}),
    bad("read-only-archived-at", "PATCH", L, ["body", "archived_at"], "json",
        {"archived_at": None}),
    bad("unknown-field-note", "POST", f"{L}/notes", ["body", "author"], "json",
        {"text": "hi", "author": 1}),
    bad("unknown-field-bulk", "POST", BULK, ["body", "force"], "json",
        {"lead_ids": ["{lead}"], "status": "WON", "force": True}),
    bad("self-promotion", "PATCH", "/users/me", ["body", "is_superuser"], "json",
        {"is_superuser": True}),
    bad("hash-given-directly", "POST", "/users", ["body", "hashed_password"], "json",
        {"email": "x@example.com", "full_name": "X", "password": "12345678",
         "hashed_password": "$argon2id$x"}),
    bad("misspelt-filter", "GET", "/leads", ["query", "stauts"], "params", {"stauts": "NEW"}),
    bad("service-only-parameter", "GET", "/leads", ["query", "user_id"], "params",
        {"status": "NEW", "user_id": 1}),
    # missing or blank required fields
    bad("names-missing", "POST", "/leads", ["body", "first_name"], "json", {}),
    bad("last-name-blank", "POST", "/leads", ["body", "last_name"], "json",
        {**NAMES, "last_name": "  "}),
    bad("no-email-or-phone", "POST", "/leads", ["body", "email"], "json",
        {"first_name": "A", "last_name": "B"}),
    bad("note-text-missing", "POST", f"{L}/notes", ["body", "text"], "json", {}),
    bad("note-text-blank", "POST", f"{L}/notes", ["body", "text"], "json", {"text": "   "}),
    bad("bulk-status-missing", "POST", BULK, ["body", "status"], "json",
        {"lead_ids": ["{lead}"]}),
    bad("user-password-missing", "POST", "/users", ["body", "password"], "json",
        {"email": "x@example.com", "full_name": "X"}),
    # text the database cannot store (NUL) or that is not Unicode (a lone surrogate)
    bad("nul-in-name", "POST", "/leads", ["body", "first_name"], "json",
        {**NAMES, "first_name": "A\x00"}),
    bad("nul-in-note", "POST", f"{L}/notes", ["body", "text"], "json", {"text": "a\x00b"}),
    bad("nul-in-tag", "PATCH", L, ["body", "tags", 1], "json", {"tags": ["ok", "b\x00d"]}),
    bad("nul-in-user-name", "POST", "/users", ["body", "full_name"], "json",
        {"email": "x@example.com", "full_name": "X\x00", "password": "12345678"}),
    bad("nul-in-search", "GET", "/leads", ["query", "search"], "params", {"search": "a\x00b"}),
    bad("nul-in-tag-filter", "GET", "/leads", ["query", "tags", 0], "params", {"tags": "\x00"}),
    bad("lone-surrogate-in-note", "POST", f"{L}/notes", ["body", "text"], "raw",
        b'{"text": "\\ud800"}'),
    bad("lone-surrogate-in-user-name", "PATCH", "/users/me", ["body", "full_name"], "raw",
        b'{"full_name": "x\\udfff"}'),
    # lengths
    bad("name-too-long", "PATCH", L, ["body", "first_name"], "json", {"first_name": "x" * 101}),
    bad("tag-too-long", "PATCH", L, ["body", "tags", 0], "json", {"tags": ["x" * 51]}),
    bad("note-too-long", "POST", f"{L}/notes", ["body", "text"], "json", {"text": "x" * 10_001}),
    bad("search-too-long", "GET", "/leads", ["query", "search"], "params", {"search": "x" * 201}),
    bad("tag-filter-too-long", "GET", "/leads", ["query", "tags", 0], "params", {"tags": "x" * 51}),
]
# fmt: on


@pytest.mark.parametrize(("method", "path", "kind", "payload", "loc"), BAD_REQUESTS)
async def test_invalid_input_is_422_naming_the_field_and_changes_nothing(
    client: httpx.AsyncClient,
    h: dict[str, str],
    lead_id: int,
    db: AsyncSession,
    method: str,
    path: str,
    kind: str,
    payload: Any,
    loc: list[Any],
) -> None:
    url = "/api/v1" + fill(path, lead_id)
    kwargs: dict[str, Any] = {"headers": dict(h)}
    if kind == "json":
        kwargs["json"] = fill(payload, lead_id)
    elif kind == "raw":
        kwargs["content"] = payload
        kwargs["headers"]["Content-Type"] = "application/json"
    elif kind == "form":
        kwargs["data"] = payload
    elif kind == "params":
        kwargs["params"] = payload
    before = await snapshot(db)
    response = await client.request(method, url, **kwargs)
    assert_error(response, 422, "validation_error", loc)
    assert await snapshot(db) == before


async def test_every_unknown_query_parameter_is_named(
    client: httpx.AsyncClient, h: dict[str, str]
) -> None:
    response = await client.get(f"{LEADS}?stauts=NEW&limt=5&status=NEW", headers=h)
    body = assert_error(response, 422, "validation_error")
    assert [e["loc"] for e in body["errors"]] == [["query", "limt"], ["query", "stauts"]]


async def test_unknown_query_parameters_are_judged_after_authentication(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get(f"{LEADS}?stauts=NEW")
    assert_error(response, 401, "not_authenticated")


async def test_a_json_body_nested_too_deeply_is_a_4xx(
    client: httpx.AsyncClient, h: dict[str, str], db: AsyncSession
) -> None:
    nested = b'{"first_name": "A", "last_name": "B", "tags": ' + b"[" * 100_000 + b"]" * 100_000
    response = await client.post(
        LEADS, content=nested + b"}", headers={**h, "Content-Type": "application/json"}
    )
    assert_error(response, 400, "bad_request")
    assert await count_rows(db) == 0


# ------------------------------------------------------------------------------ oversized bodies


def padded_lead(size: int) -> bytes:
    """A valid lead body padded with whitespace to exactly `size` bytes."""
    body = b'{"first_name": "Big", "last_name": "Body", "email": "big@acme.com"}'
    return body + b" " * (size - len(body))


async def chunks(data: bytes, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def test_a_body_over_1_mib_with_content_length_is_413(
    client: httpx.AsyncClient, h: dict[str, str], db: AsyncSession
) -> None:
    request = client.build_request(
        "POST",
        LEADS,
        content=padded_lead(MIB + 1),
        headers={**h, "Content-Type": "application/json"},
    )
    assert request.headers["content-length"] == str(MIB + 1)
    response = await client.send(request)
    body = assert_error(response, 413, "request_too_large")
    assert str(MIB) in body["detail"]
    assert await count_rows(db) == 0


async def test_a_streamed_body_over_1_mib_without_content_length_is_413(
    client: httpx.AsyncClient, h: dict[str, str], db: AsyncSession
) -> None:
    request = client.build_request(
        "POST",
        LEADS,
        content=chunks(padded_lead(MIB + 1)),
        headers={**h, "Content-Type": "application/json"},
    )
    assert "content-length" not in request.headers
    assert request.headers["transfer-encoding"] == "chunked"
    response = await client.send(request)
    assert_error(response, 413, "request_too_large")
    assert await count_rows(db) == 0


async def test_an_oversized_login_form_is_413(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/v1/auth/token",
        content=b"username=a%40b.com&password=" + b"x" * MIB,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert_error(response, 413, "request_too_large")


@pytest.mark.parametrize("streamed", [False, True], ids=["content-length", "chunked"])
async def test_a_body_of_exactly_1_mib_is_accepted(
    client: httpx.AsyncClient, h: dict[str, str], db: AsyncSession, streamed: bool
) -> None:
    data = padded_lead(MIB)
    response = await client.post(
        LEADS,
        content=chunks(data) if streamed else data,
        headers={**h, "Content-Type": "application/json"},
    )
    assert response.status_code == 201, response.text
    assert await count_rows(db) == 1


# ----------------------------------------------------------- nothing a client sends is a 5xx


def _spec() -> dict[str, Any]:
    with use_settings(make_settings()):
        return create_app().openapi()


SPEC = _spec()
OPERATIONS = [
    (method.upper(), path, operation)
    for path, item in SPEC["paths"].items()
    for method, operation in item.items()
]
WEIRD_JSON_VALUES: list[Any] = [
    None,
    True,
    -1,
    2**64,
    1e308,
    0.5,
    "",
    "x" * 300,
    "\x00",
    "9999-12-31T23:59:59-23:59",
    [None],
    {"$gt": 1},
]
WEIRD_QUERY_VALUES = [
    "",
    "-1",
    "1e309",
    "99999999999999999999",
    "\x00",
    "null",
    "2026-02-30",
    "9999-12-31",
    "0001-01-01T00:00:00+23:59",
    "x" * 300,
]


def _body_schema(operation: dict[str, Any]) -> dict[str, Any] | None:
    content = operation.get("requestBody", {}).get("content", {})
    if "application/json" not in content:
        return None
    schema = content["application/json"]["schema"]
    refs = [schema] if "$ref" in schema else [s for s in schema.get("anyOf", []) if "$ref" in s]
    if not refs:  # written out in place (the login's, shared by its JSON and form bodies)
        return schema
    name = refs[0]["$ref"].rsplit("/", 1)[-1]
    return SPEC["components"]["schemas"][name]


BODY_OPERATIONS = [
    pytest.param(method, path, schema, id=f"{method} {path}")
    for method, path, operation in OPERATIONS
    if (schema := _body_schema(operation)) is not None
]
QUERY_OPERATIONS = [
    pytest.param(method, path, [p["name"] for p in operation["parameters"]], id=f"{method} {path}")
    for method, path, operation in OPERATIONS
    if any(p["in"] == "query" for p in operation.get("parameters", []))
]


@pytest.mark.parametrize(("method", "path", "schema"), BODY_OPERATIONS)
async def test_no_value_in_any_body_field_causes_a_server_error(
    client: httpx.AsyncClient,
    h: dict[str, str],
    lead_id: int,
    agent: User,
    method: str,
    path: str,
    schema: dict[str, Any],
) -> None:
    """Each field of the operation's example body, replaced in turn by odd values: the answer
    may be a success or a 4xx, never a 5xx (the transport would also raise on a crash)."""
    url = concrete(path, lead_id, uid(agent))
    example = fill(schema["examples"][0], lead_id)
    for field in schema["properties"]:
        for value in WEIRD_JSON_VALUES:
            response = await client.request(method, url, json={**example, field: value}, headers=h)
            assert response.status_code < 500, (field, value, response.text)
            assert set(response.json()) >= ({"detail", "code"} if response.is_error else set())


@pytest.mark.parametrize(("method", "path", "names"), QUERY_OPERATIONS)
async def test_no_value_in_any_query_parameter_causes_a_server_error(
    client: httpx.AsyncClient,
    h: dict[str, str],
    lead_id: int,
    agent: User,
    method: str,
    path: str,
    names: list[str],
) -> None:
    url = concrete(path, lead_id, uid(agent))
    for name in names:
        for value in WEIRD_QUERY_VALUES:
            response = await client.request(method, url, params={name: value}, headers=h)
            assert response.status_code < 500, (name, value, response.text)
