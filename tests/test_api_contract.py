"""The contract `/openapi.json` states, held to what the server does: a client generated from
the document gets exactly what it promises, and sends nothing the server refuses.

Each operation refuses query parameters it does not declare; every 405 says in `Allow` what the
path does support; a field the schema shows nullable accepts null and a field it shows not
nullable refuses it; numbers, flags and datetimes take only the JSON types the schema names;
and every message is one plain sentence naming the field.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from app.models import LeadSource, LeadStatus, User
from app.schemas.common import CODE_BY_STATUS, ErrorCode
from app.services.exceptions import CRMException
from tests.helpers import LeadFactory, concrete, uid

API = "/api/v1"
JSON = "application/json"
METHODS = ("get", "post", "put", "patch", "delete")
OPERATION_ID = re.compile(r"^[a-z]+([A-Z][a-z]+)*$")
PYTHON_ISMS = ("Input should", "Value error", "not None", "Field required", "NoneType", "str ")


@pytest.fixture
async def spec(client: httpx.AsyncClient) -> dict[str, Any]:
    return (await client.get("/openapi.json")).json()


@pytest.fixture
async def lead_id(make_lead: LeadFactory, agent: User) -> int:
    return uid(await make_lead(owner=agent, phone="+15550102030"))


def operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, item in spec["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    ]


def schema_of(spec: dict[str, Any], name: str) -> dict[str, Any]:
    return spec["components"]["schemas"][name]


def allows_null(field: dict[str, Any]) -> bool:
    return any(part.get("type") == "null" for part in field.get("anyOf", []))


def assert_plain_sentence(text: str) -> None:
    """One sentence in the API's style: capitalised (or a quoted name), one full stop at the
    end and none inside, no wording from Python or pydantic."""
    assert text[:1].isupper() or text[:1] == "'", text
    assert text.endswith("."), text
    assert ". " not in text.rstrip("."), text
    for phrase in PYTHON_ISMS:
        assert phrase not in text, text


# ------------------------------------------------------------------ unknown query parameters


async def test_every_operation_refuses_a_query_parameter_it_does_not_declare(
    client: httpx.AsyncClient,
    spec: dict[str, Any],
    h: dict[str, str],
    lead_id: int,
    agent: User,
) -> None:
    for method, path, _ in operations(spec):
        url = concrete(path, lead_id, uid(agent))
        response = await client.request(method, f"{url}?colour=blue", headers=h, json={})
        assert response.status_code == 422, (method, path, response.text)
        errors = response.json()["errors"]
        assert ["query", "colour"] in [e["loc"] for e in errors], (method, path, errors)


@pytest.mark.parametrize("path", ["/leads/statistics", "/users", "/users/me", "/leads"])
async def test_an_unknown_parameter_is_named_in_the_message(
    client: httpx.AsyncClient, h: dict[str, str], path: str
) -> None:
    response = await client.get(f"{API}{path}?foo=1", headers=h)
    assert response.status_code == 422
    assert response.json()["detail"] == "'foo' is not a query parameter of this operation."


async def test_an_anonymous_caller_with_an_unknown_parameter_hears_about_the_token_first(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get(f"{API}/leads/statistics?foo=1")
    assert response.status_code == 401


async def test_the_health_checks_refuse_unknown_parameters_too(client: httpx.AsyncClient) -> None:
    response = await client.get("/health?verbose=1")
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["query", "verbose"]


async def test_declared_parameters_are_not_refused(
    client: httpx.AsyncClient, h: dict[str, str]
) -> None:
    assert (await client.get(f"{API}/users?skip=0&limit=5", headers=h)).status_code == 200
    listed = await client.get(f"{API}/leads?status=NEW&limit=5&sort_by=status", headers=h)
    assert listed.status_code == 200


# ----------------------------------------------------------------------------- 405 and Allow


async def test_every_path_answers_405_with_exactly_its_methods_in_allow(
    client: httpx.AsyncClient, spec: dict[str, Any], h: dict[str, str], lead_id: int, agent: User
) -> None:
    for path, item in spec["paths"].items():
        documented = sorted(m.upper() for m in item if m in METHODS)
        unsupported = next(m for m in ("PUT", "DELETE", "PATCH", "POST") if m not in documented)
        url = concrete(path, lead_id, uid(agent))
        response = await client.request(unsupported, url, headers=h)
        assert response.status_code == 405, (unsupported, path, response.text)
        assert response.headers["allow"] == ", ".join(documented), (unsupported, path)
        assert response.json()["code"] == "method_not_allowed"


async def test_patch_on_statistics_is_405_allowing_get_not_a_lead_id_error(
    client: httpx.AsyncClient, h: dict[str, str]
) -> None:
    response = await client.patch(f"{API}/leads/statistics", headers=h, json={})
    assert response.status_code == 405
    assert response.headers["allow"] == "GET"
    assert response.json()["detail"] == (
        "PATCH /api/v1/leads/statistics is not supported; /api/v1/leads/statistics accepts GET."
    )


async def test_options_on_the_lead_collection_lists_get_and_post(
    client: httpx.AsyncClient, h: dict[str, str]
) -> None:
    response = await client.options(f"{API}/leads", headers=h)
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, POST"


async def test_a_lead_id_that_is_not_a_number_is_404_naming_the_path(
    client: httpx.AsyncClient, h: dict[str, str]
) -> None:
    response = await client.get(f"{API}/leads/abc", headers=h)
    assert response.status_code == 404
    body = response.json()
    assert body["code"] == "not_found"
    assert "/api/v1/leads/abc" in body["detail"]


# -------------------------------------------------------------------------- nullable or not


LEAD_BODY = {"first_name": "Nora", "last_name": "Null", "email": "nora@acme.com"}


async def test_a_new_lead_accepts_null_exactly_where_the_schema_allows_it(
    client: httpx.AsyncClient, spec: dict[str, Any], h: dict[str, str]
) -> None:
    fields = schema_of(spec, "LeadCreate")["properties"]
    for name, field in fields.items():
        body = {**LEAD_BODY, "phone": "+15550102030", name: None}
        response = await client.post(f"{API}/leads?on_duplicate=allow", json=body, headers=h)
        if allows_null(field):
            assert response.status_code == 201, (name, response.text)
        else:
            assert response.status_code == 422, (name, response.text)
            assert ["body", name] in [e["loc"] for e in response.json()["errors"]]


async def test_a_lead_update_accepts_null_exactly_where_the_schema_allows_it(
    client: httpx.AsyncClient, spec: dict[str, Any], h: dict[str, str], lead_id: int
) -> None:
    fields = schema_of(spec, "LeadUpdate")["properties"]
    for name, field in fields.items():
        response = await client.patch(f"{API}/leads/{lead_id}", json={name: None}, headers=h)
        if allows_null(field):
            assert response.status_code == 200, (name, response.text)
        else:
            assert response.status_code == 422, (name, response.text)
            assert response.json()["errors"][0]["loc"] == ["body", name]
        # put back what a null cleared, so the next field starts from a complete lead
        restore = {"email": "nora@acme.com", "phone": "+15550102030"}
        assert (await client.patch(f"{API}/leads/{lead_id}", json=restore, headers=h)).is_success


@pytest.mark.parametrize("schema_name", ["UserUpdate", "UserSelfUpdate", "UserCreate"])
async def test_user_bodies_refuse_null_where_the_schema_does_not_allow_it(
    client: httpx.AsyncClient,
    spec: dict[str, Any],
    h: dict[str, str],
    agent: User,
    schema_name: str,
) -> None:
    url = {
        "UserUpdate": ("PATCH", f"{API}/users/{uid(agent)}"),
        "UserSelfUpdate": ("PATCH", f"{API}/users/me"),
        "UserCreate": ("POST", f"{API}/users"),
    }[schema_name]
    base = {"email": "new@crm.example.com", "full_name": "New", "password": "long enough pw"}
    for name, field in schema_of(spec, schema_name)["properties"].items():
        body = {**(base if schema_name == "UserCreate" else {}), name: None}
        response = await client.request(*url, json=body, headers=h)
        if not allows_null(field):
            assert response.status_code == 422, (schema_name, name, response.text)
            assert ["body", name] in [e["loc"] for e in response.json()["errors"]]


async def test_fields_with_a_server_default_are_not_required(spec: dict[str, Any]) -> None:
    assert "is_superuser" not in schema_of(spec, "UserCreate").get("required", [])
    for name in ("LeadCreate", "LeadUpdate", "UserUpdate", "UserSelfUpdate"):
        schema = schema_of(spec, name)
        for field, definition in schema["properties"].items():
            if "default" in definition:
                assert field not in schema.get("required", []), (name, field)


# --------------------------------------------------------------------- the JSON types named


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("lead_score", True),
        ("lead_score", "50"),
        ("lead_score", 50.5),
        ("call_attempts", "3"),
        ("probability", "0.5"),
        ("probability", True),
        ("estimated_value", "1200.50"),
        ("estimated_value", False),
        ("last_contact_date", 1764000000),
        ("last_contact_date", "2026-11-25"),
        ("last_contact_date", "yesterday"),
        ("status", "new"),
        ("tags", "vip"),
    ],
)
async def test_a_lead_field_refuses_a_value_of_another_json_type(
    client: httpx.AsyncClient, h: dict[str, str], field: str, value: Any
) -> None:
    response = await client.post(f"{API}/leads", json={**LEAD_BODY, field: value}, headers=h)
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["loc"] == ["body", field]


async def test_a_flag_refuses_a_number(
    client: httpx.AsyncClient, h: dict[str, str], agent: User
) -> None:
    response = await client.patch(f"{API}/users/{uid(agent)}", json={"is_superuser": 0}, headers=h)
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["body", "is_superuser"]


async def test_money_is_a_json_number(client: httpx.AsyncClient, h: dict[str, str]) -> None:
    body = {**LEAD_BODY, "estimated_value": 1200.5}
    response = await client.post(f"{API}/leads", json=body, headers=h)
    assert response.status_code == 201
    assert response.json()["estimated_value"] == 1200.5


@pytest.mark.parametrize("value", ["0.5", "1764000000", "12", "-1"])
async def test_a_date_filter_refuses_a_number(
    client: httpx.AsyncClient, h: dict[str, str], value: str
) -> None:
    response = await client.get(f"{API}/leads", params={"date_range_start": value}, headers=h)
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["query", "date_range_start"]


@pytest.mark.parametrize("value", ["2026-11-25", "2026-11-25T17:52:00Z", "2026-11-25T17:52+01:00"])
async def test_a_date_filter_accepts_an_iso_date_or_date_time(
    client: httpx.AsyncClient, h: dict[str, str], value: str
) -> None:
    response = await client.get(f"{API}/leads", params={"date_range_start": value}, headers=h)
    assert response.status_code == 200, response.text


async def test_repeated_lead_ids_are_refused_as_the_schema_says(
    client: httpx.AsyncClient, spec: dict[str, Any], h: dict[str, str], lead_id: int
) -> None:
    assert schema_of(spec, "BulkStatusUpdate")["properties"]["lead_ids"]["uniqueItems"] is True
    assert schema_of(spec, "BulkAssign")["properties"]["lead_ids"]["uniqueItems"] is True
    body = {"lead_ids": [lead_id, lead_id], "status": "WON"}
    response = await client.post(f"{API}/leads/bulk/status", json=body, headers=h)
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["body", "lead_ids"]


# ------------------------------------------------------------------------ what the types say


async def test_estimated_value_is_typed_as_a_number_only(spec: dict[str, Any]) -> None:
    for name in ("LeadCreate", "LeadUpdate"):
        field = schema_of(spec, name)["properties"]["estimated_value"]
        assert [part.get("type") for part in field["anyOf"]] == ["number", "null"], field


async def test_error_code_is_an_enum_of_every_code_the_api_uses(spec: dict[str, Any]) -> None:
    documented = set(schema_of(spec, "ErrorResponse")["properties"]["code"]["enum"])
    raised, classes = set(), list(CRMException.__subclasses__())
    while classes:
        cls = classes.pop()
        raised.add(cls.code)
        classes.extend(cls.__subclasses__())
    assert raised <= documented
    assert set(CODE_BY_STATUS.values()) <= documented
    assert documented == set(ErrorCode.__args__)


async def test_statistics_are_keyed_by_every_status_and_source(spec: dict[str, Any]) -> None:
    for field, enum_cls in (("leads_by_status", LeadStatus), ("leads_by_source", LeadSource)):
        ref = schema_of(spec, "LeadStatistics")["properties"][field]["$ref"]
        counts = schema_of(spec, ref.rsplit("/", 1)[-1])
        assert set(counts["properties"]) == {m.value for m in enum_cls}
        assert set(counts["required"]) == {m.value for m in enum_cls}


async def test_statistics_answer_every_status_and_source_key(
    client: httpx.AsyncClient, h: dict[str, str]
) -> None:
    body = (await client.get(f"{API}/leads/statistics", headers=h)).json()
    assert set(body["leads_by_status"]) == {m.value for m in LeadStatus}
    assert set(body["leads_by_source"]) == {m.value for m in LeadSource}


async def test_every_operation_has_a_short_camel_case_operation_id(spec: dict[str, Any]) -> None:
    ids = [operation["operationId"] for _, _, operation in operations(spec)]
    assert len(set(ids)) == len(ids)
    for operation_id in ids:
        assert OPERATION_ID.match(operation_id) and len(operation_id) <= 20, operation_id
    assert {"listLeads", "createLead", "getLead", "updateLead", "login"} <= set(ids)


async def test_every_field_of_every_schema_has_a_description(spec: dict[str, Any]) -> None:
    undescribed = [
        f"{name}.{field}"
        for name, schema in spec["components"]["schemas"].items()
        if not name.startswith(("HTTPValidationError", "ValidationError"))
        for field, definition in schema.get("properties", {}).items()
        if not definition.get("description")
    ]
    assert undescribed == []


async def test_every_query_parameter_has_a_description(spec: dict[str, Any]) -> None:
    undescribed = [
        (method, path, parameter["name"])
        for method, path, operation in operations(spec)
        for parameter in operation.get("parameters", [])
        if not parameter.get("description")
    ]
    assert undescribed == []


async def test_every_201_documents_its_location_header(spec: dict[str, Any]) -> None:
    created = [
        (method, path, operation["responses"]["201"])
        for method, path, operation in operations(spec)
        if "201" in operation["responses"]
    ]
    assert len(created) == 6  # users, leads, API keys, webhooks, assignment rules, capture forms
    for method, path, response in created:
        assert "Location" in response.get("headers", {}), (method, path)


async def test_a_created_lead_is_at_its_location(
    client: httpx.AsyncClient, h: dict[str, str]
) -> None:
    created = await client.post(f"{API}/leads", json=LEAD_BODY, headers=h)
    assert created.status_code == 201
    location = created.headers["location"]
    assert (await client.get(location, headers=h)).json()["id"] == created.json()["id"]


# ------------------------------------------------------------------------------- messages


BAD_REQUESTS: list[tuple[str, str, dict[str, Any]]] = [
    ("POST", "/leads", {"json": {"first_name": "A"}}),
    ("POST", "/leads", {"json": {**LEAD_BODY, "lead_score": 101}}),
    ("POST", "/leads", {"json": {**LEAD_BODY, "email": "not an address"}}),
    ("POST", "/leads", {"json": {"first_name": "A", "last_name": "B"}}),
    ("POST", "/leads", {"json": {**LEAD_BODY, "status": "MAYBE"}}),
    ("POST", "/leads", {"json": {**LEAD_BODY, "first_name": None}}),
    ("POST", "/leads", {"json": {**LEAD_BODY, "first_name": "   "}}),
    ("POST", "/leads", {"json": {**LEAD_BODY, "phone": "12"}}),
    ("POST", "/leads", {"json": {**LEAD_BODY, "tags": ["x" * 60]}}),
    ("POST", "/leads", {"json": {**LEAD_BODY, "colour": "blue"}}),
    ("POST", "/leads", {"content": b'{"first_name": ', "headers": {"content-type": JSON}}),
    ("POST", "/leads/bulk/status", {"json": {"lead_ids": [1, 1], "status": "WON"}}),
    ("POST", "/leads/bulk/status", {"json": {"lead_ids": [], "status": "WON"}}),
    ("GET", "/leads", {"params": {"lead_score_min": 9, "lead_score_max": 3}}),
    ("GET", "/leads", {"params": {"date_range_start": "0.5"}}),
    ("GET", "/leads", {"params": {"status": "new"}}),
    ("GET", "/leads", {"params": {"limit": 0}}),
    ("GET", "/leads", {"params": {"cursor": "nonsense"}}),
    ("GET", "/leads", {"params": {"sort_by": "colour"}}),
    ("GET", "/leads/0", {}),
    ("PATCH", "/users/me", {"json": {"password": "a new long password"}}),
    ("PATCH", "/users/me", {"json": {"password": "short"}}),
    ("POST", "/leads", {"json": {**LEAD_BODY, "estimated_value": 1e300}}),
    ("POST", "/leads", {"json": {**LEAD_BODY, "estimated_value": 12.345}}),
    ("POST", "/leads", {"json": {**LEAD_BODY, "tags": ["\u001c"]}}),
    ("POST", "/leads", {"json": {**LEAD_BODY, "email": "a@gmail"}}),
    ("GET", "/leads", {"params": {"date_range_start": "2026-01-01T25:00"}}),
    ("GET", "/leads", {"params": {"date_range_start": "2026-13-01"}}),
    (
        "GET",
        "/leads",
        {"params": {"date_range_start": "\u0662\u0660\u0662\u0666-\u0660\u0661-\u0660\u0661"}},
    ),
    ("GET", "/leads", {"params": {"tags": "\u001c"}}),
]


@pytest.mark.parametrize(("method", "path", "request_args"), BAD_REQUESTS)
async def test_every_validation_message_is_one_plain_sentence_naming_the_field(
    client: httpx.AsyncClient,
    h: dict[str, str],
    method: str,
    path: str,
    request_args: dict[str, Any],
) -> None:
    request_args = dict(request_args)  # the table's own dict stays as it is
    headers = {**h, **request_args.pop("headers", {})}
    response = await client.request(method, f"{API}{path}", headers=headers, **request_args)
    assert response.status_code == 422, response.text
    body = response.json()
    assert_plain_sentence(body["detail"])
    for error in body["errors"]:
        assert_plain_sentence(error["msg"])
        named = [part for part in error["loc"][1:] if isinstance(part, str)]
        if named and not error["msg"].startswith("'"):
            words = named[-1].replace("_", " ")
            assert words in error["msg"].lower(), error


async def test_a_bad_date_bound_is_one_error_of_its_field(
    client: httpx.AsyncClient, h: dict[str, str]
) -> None:
    response = await client.get(
        f"{API}/leads", params={"date_range_start": "2026-01-01T25:00"}, headers=h
    )
    assert [e["loc"] for e in response.json()["errors"]] == [["query", "date_range_start"]]


def text_fields(spec: dict[str, Any], schema: dict[str, Any]) -> list[dict[str, Any]]:
    """Every string schema among a body's properties (inside unions and arrays too)."""
    found = []
    pending = list(schema.get("properties", {}).values())
    while pending:
        part = pending.pop()
        if "$ref" in part:
            pending.append(schema_of(spec, part["$ref"].rsplit("/", 1)[-1]))
        pending.extend(part.get("anyOf", []))
        if "items" in part:
            pending.append(part["items"])
        free_text = not {"enum", "const", "format"} & set(part)  # a date-time is no free text
        if part.get("type") == "string" and free_text:
            found.append(part)
    return found


async def test_every_text_field_of_a_body_refuses_nul_in_its_schema(spec: dict[str, Any]) -> None:
    from app.models.validation import NO_NUL_PATTERN, NOT_BLANK_PATTERN, PHONE_PATTERN
    from app.schemas.capture import ORIGIN_PATTERN

    # An origin's pattern lists the characters it allows, NUL not among them.
    patterns = {NO_NUL_PATTERN, NOT_BLANK_PATTERN, PHONE_PATTERN, ORIGIN_PATTERN}
    bodies = [
        content["schema"]
        for _, _, operation in operations(spec)
        for content in operation.get("requestBody", {}).get("content", {}).values()
    ]
    checked = 0
    for body in bodies:
        resolved = (
            schema_of(spec, body["$ref"].rsplit("/", 1)[-1])
            if "$ref" in body
            else next(
                (
                    schema_of(spec, p["$ref"].rsplit("/", 1)[-1])
                    for p in body.get("anyOf", [])
                    if "$ref" in p
                ),
                body,
            )
        )
        if resolved.get("title") == "LoginRequest":
            continue  # a credential is compared, never stored: a NUL only fails the login
        for field in text_fields(spec, resolved):
            assert field.get("pattern") in patterns, (resolved.get("title"), field)
            checked += 1
    assert checked > 20


async def test_several_problems_make_one_sentence_listing_each(
    client: httpx.AsyncClient, h: dict[str, str]
) -> None:
    body = {"first_name": "", "last_name": "", "lead_score": -1}
    response = await client.post(f"{API}/leads", json=body, headers=h)
    detail = response.json()["detail"]
    assert detail.startswith("The request has 3 invalid values: ")
    assert_plain_sentence(detail)
    for words in ("first name", "last name", "lead score"):
        assert words in detail
