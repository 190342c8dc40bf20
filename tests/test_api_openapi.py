"""The OpenAPI document a frontend generates its client from, and the docs explorers, which must
work with no internet access: every script and stylesheet they load is served by the app."""

from __future__ import annotations

from html.parser import HTMLParser
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
import pytest
from fastapi import FastAPI

from app.schemas.filters import LeadFilters, LeadPaging

ERROR_REF = "#/components/schemas/ErrorResponse"
DELETE_LEAD = ("DELETE", "/api/v1/leads/{lead_id}")
EVENT_STREAM = ("GET", "/api/v1/events/stream")  # not JSON: one event after another
EXPORT = ("GET", "/api/v1/leads/export")  # a file: CSV or JSON Lines
NOT_JSON = (DELETE_LEAD, EVENT_STREAM, EXPORT)
HTTP_METHODS = {"get", "post", "put", "patch", "delete", "head", "options"}
# Operations with two successes: a CSV import answers its report (200), or, for a file too
# large to wait for, the import queued (202).
ONE_OF_TWO_ANSWERS = {("POST", "/api/v1/leads/import"): 2}


# ---------------------------------------------------------------------------------- helpers


@pytest.fixture
async def spec(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    return response.json()


def operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    found = [
        (method.upper(), path, operation)
        for path, item in spec["paths"].items()
        for method, operation in item.items()
        if method in HTTP_METHODS
    ]
    assert len(found) >= 20, "the document lists far too few operations"
    return found


def resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """A $ref'd schema, or for an optional body (`anyOf: [$ref, null]`) the referenced one."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return spec["components"]["schemas"][name]
    refs = [part for part in schema.get("anyOf", []) if "$ref" in part]
    return resolve(spec, refs[0]) if refs else schema


def json_schema(response: dict[str, Any]) -> dict[str, Any] | None:
    return response.get("content", {}).get("application/json", {}).get("schema")


class AssetLinks(HTMLParser):
    """Every <script src> and <link href> in a page."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        wanted = {"script": "src", "link": "href"}.get(tag)
        for name, value in attrs:
            if name == wanted and value:
                self.urls.append(value)


# ----------------------------------------------------------------------------- the document


async def test_openapi_json_is_served_as_an_openapi_3_document(spec: dict[str, Any]) -> None:
    assert spec["openapi"].startswith("3.")
    assert spec["info"]["title"] == "CRM Leads API"
    assert spec["info"]["version"]


async def test_every_operation_has_a_tag(spec: dict[str, Any]) -> None:
    untagged = [
        (method, path)
        for method, path, operation in operations(spec)
        if not operation.get("tags") or not all(operation["tags"])
    ]
    assert untagged == []


async def test_every_operation_has_a_summary(spec: dict[str, Any]) -> None:
    missing = [
        (method, path)
        for method, path, operation in operations(spec)
        if not operation.get("summary", "").strip()
    ]
    assert missing == []


async def test_every_operation_has_an_operation_id_unique_across_the_document(
    spec: dict[str, Any],
) -> None:
    ids = [operation.get("operationId") for _, _, operation in operations(spec)]
    assert all(ids)
    assert len(set(ids)) == len(ids)


async def test_every_operation_has_a_2xx_response_with_a_json_schema(
    spec: dict[str, Any],
) -> None:
    offenders = []
    for method, path, operation in operations(spec):
        if (method, path) in NOT_JSON:
            continue
        success = {code: r for code, r in operation["responses"].items() if code.startswith("2")}
        if set(success) == {"204"} and "content" not in success["204"]:
            continue  # nothing to answer (a logout, an ended session): no body at all
        schemas = [json_schema(response) for response in success.values()]
        allowed = ONE_OF_TWO_ANSWERS.get((method, path), 1)
        if len(success) != allowed or not all(schemas):
            offenders.append((method, path))
    assert offenders == []


async def test_response_models_are_named_schemas(spec: dict[str, Any]) -> None:
    """Typed clients need a named model for every success body (or, where one status has two
    answers, such as a bulk change's result or its dry run's preview, a union of named
    models)."""
    for method, path, operation in operations(spec):
        if (method, path) in NOT_JSON:
            continue
        for code, response in operation["responses"].items():
            if not code.startswith("2") or "content" not in response:  # a 204: no body
                continue
            schema = json_schema(response)
            assert schema is not None, (method, path, code)
            for member in schema.get("anyOf", [schema]):
                assert "$ref" in member, (method, path, code)
                assert resolve(spec, member).get("properties"), (method, path, code)


async def test_a_bulk_change_answers_its_result_or_its_preview(spec: dict[str, Any]) -> None:
    for path in ("/api/v1/leads/bulk/status", "/api/v1/leads/bulk/assign"):
        answer = json_schema(spec["paths"][path]["post"]["responses"]["200"])
        assert [member["$ref"] for member in answer["anyOf"]] == [
            "#/components/schemas/BulkResult",
            "#/components/schemas/BulkPreview",
        ]


async def test_an_import_answers_its_report_or_a_queued_import(spec: dict[str, Any]) -> None:
    responses = spec["paths"]["/api/v1/leads/import"]["post"]["responses"]
    refs = {code: json_schema(responses[code])["$ref"] for code in ("200", "202")}
    assert refs == {
        "200": "#/components/schemas/ImportReport",
        "202": "#/components/schemas/ImportJob",
    }
    assert "Location" in responses["202"]["headers"]


async def test_the_event_stream_documents_each_event_of_its_stream(spec: dict[str, Any]) -> None:
    method, path = EVENT_STREAM
    responses = spec["paths"][path][method.lower()]["responses"]
    assert [code for code in responses if code.startswith("2")] == ["200"]
    item = responses["200"]["content"]["text/event-stream"]["itemSchema"]
    assert {"id", "event", "data"} <= set(item["properties"])
    assert responses["401"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/ErrorResponse"
    )


async def test_the_export_documents_both_its_file_formats(spec: dict[str, Any]) -> None:
    method, path = EXPORT
    answer = spec["paths"][path][method.lower()]["responses"]["200"]
    assert set(answer["content"]) == {"text/csv", "application/x-ndjson"}
    assert "Content-Disposition" in answer["headers"]


async def test_delete_lead_documents_204_without_a_body(spec: dict[str, Any]) -> None:
    operation = spec["paths"]["/api/v1/leads/{lead_id}"]["delete"]
    success = {code: r for code, r in operation["responses"].items() if code.startswith("2")}
    assert list(success) == ["204"]
    assert "content" not in success["204"]


async def test_every_error_response_is_documented_with_the_error_schema(
    spec: dict[str, Any],
) -> None:
    offenders = []
    for method, path, operation in operations(spec):
        for code, response in operation["responses"].items():
            if code.startswith(("2", "3")):  # answers, and 304 Not Modified (no body)
                continue
            schema = json_schema(response)
            if schema != {"$ref": ERROR_REF}:
                offenders.append((method, path, code, schema))
    assert offenders == []


async def test_every_operation_documents_its_errors(spec: dict[str, Any]) -> None:
    """Authenticated operations document 401; ones with parameters or a body document 422;
    ones naming a resource in the path document 404; ones with a body document 413. Only the
    liveness check cannot fail."""
    offenders = []
    for method, path, operation in operations(spec):
        documented = set(operation["responses"])
        expected = set()
        if operation.get("security"):
            expected.add("401")
        if operation.get("parameters") or operation.get("requestBody"):
            expected.add("422")
        if "{" in path:
            expected.add("404")
        if operation.get("requestBody"):
            expected.add("413")
        if path == "/health/ready":
            expected.add("503")
        if not expected and (method, path) != ("GET", "/health"):
            offenders.append((method, path, "no error documented"))
        if expected - documented:
            offenders.append((method, path, sorted(expected - documented)))
    assert offenders == []


async def test_every_api_operation_except_login_needs_the_bearer_token(
    spec: dict[str, Any],
) -> None:
    """A refresh is a login too: the refresh token in its body is its credential. A capture
    form's page posts with no login: the form's public key in the path is all it has."""
    public = ("/api/v1/auth/token", "/api/v1/auth/refresh", "/api/v1/capture/{public_key}")
    offenders = [
        (method, path)
        for method, path, operation in operations(spec)
        if path.startswith("/api/v1/")
        and path not in public
        and operation.get("security") != [{"OAuth2PasswordBearer": []}]
    ]
    assert offenders == []


async def test_the_security_scheme_is_the_oauth2_password_flow_of_the_login_route(
    spec: dict[str, Any],
) -> None:
    scheme = spec["components"]["securitySchemes"]["OAuth2PasswordBearer"]
    assert scheme["type"] == "oauth2"
    assert scheme["flows"]["password"]["tokenUrl"] == "/api/v1/auth/token"
    assert "post" in spec["paths"]["/api/v1/auth/token"]


async def test_the_error_schema_is_the_one_error_shape(spec: dict[str, Any]) -> None:
    schemas = spec["components"]["schemas"]
    error = schemas["ErrorResponse"]
    assert set(error["properties"]) == {
        "detail",
        "code",
        "errors",
        "request_id",
        "current_version",
        "duplicates",
        "matched",
    }
    assert sorted(error["required"]) == ["code", "detail"]
    item = schemas["ErrorItem"]
    assert set(item["properties"]) == {"loc", "msg"}
    assert sorted(item["required"]) == ["loc", "msg"]


async def test_fastapis_own_validation_error_shape_is_not_advertised(
    spec: dict[str, Any],
) -> None:
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    assert "ValidationError" not in spec["components"]["schemas"]


async def test_every_request_body_has_an_example(spec: dict[str, Any]) -> None:
    offenders = []
    for method, path, operation in operations(spec):
        body = operation.get("requestBody")
        if body is None:
            continue
        for media_type, content in body["content"].items():
            schema = resolve(spec, content["schema"])
            if not (content.get("example") or content.get("examples") or schema.get("examples")):
                offenders.append((method, path, media_type))
    assert offenders == []


async def test_request_body_examples_use_only_known_fields(spec: dict[str, Any]) -> None:
    for method, path, operation in operations(spec):
        body = operation.get("requestBody")
        if body is None:
            continue
        for content in body["content"].values():
            schema = resolve(spec, content["schema"])
            examples = schema.get("examples") or [content.get("example")]
            if schema.get("type") == "string":  # a file sent as the body (text/csv)
                assert all(isinstance(e, str) and e for e in examples), (method, path)
                continue
            for example in examples:
                assert isinstance(example, dict), (method, path, example)
                assert set(example) <= set(schema["properties"]), (method, path, example)
                assert set(schema.get("required", [])) <= set(example), (method, path, example)


async def test_list_leads_documents_exactly_the_filters_and_the_paging(
    spec: dict[str, Any],
) -> None:
    parameters = spec["paths"]["/api/v1/leads"]["get"]["parameters"]
    declared = set(LeadFilters.model_fields) | set(LeadPaging.model_fields)
    assert {p["name"] for p in parameters} == declared
    assert all(p["in"] == "query" for p in parameters)
    repeated = {p["name"] for p in parameters if "array" in str(p["schema"])}
    assert repeated == {"status", "source", "tags"}


async def test_lead_schema_documents_every_field_of_a_lead(spec: dict[str, Any]) -> None:
    from app.models import Lead

    lead = spec["components"]["schemas"]["LeadRead"]
    derived = {"days_since_created", "days_since_last_contact", "is_hot_lead"}
    shown = set(Lead.__table__.columns.keys()) - {"archive_added_tag"}  # bookkeeping, not shown
    assert set(lead["properties"]) == shown | derived
    assert lead["properties"]["created_at"]["format"] == "date-time"


async def test_no_schema_has_a_password_hash_field(spec: dict[str, Any]) -> None:
    assert "hashed_password" not in str(spec)


# ----------------------------------------------------------------------------- docs explorers


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_docs_page_is_html_pointing_at_the_openapi_document(
    client: httpx.AsyncClient, page: str
) -> None:
    response = await client.get(page)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "/openapi.json" in response.text


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_docs_assets_are_all_served_by_the_app(client: httpx.AsyncClient, page: str) -> None:
    html = (await client.get(page)).text
    parser = AssetLinks()
    parser.feed(html)
    assert any(url.endswith(".js") for url in parser.urls), parser.urls
    if page == "/docs":
        assert any(url.endswith(".css") for url in parser.urls), parser.urls
    for url in parser.urls:
        parts = urlsplit(urljoin(f"http://testserver{page}", url))
        assert (parts.scheme, parts.netloc) == ("http", "testserver"), url
        assert "cdn" not in url.lower()
        asset = await client.get(parts.path)
        assert asset.status_code == 200, url
        assert len(asset.content) > 0, url
        if url.endswith(".js"):
            assert "javascript" in asset.headers["content-type"], url
        if url.endswith(".css"):
            assert asset.headers["content-type"].startswith("text/css"), url


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_docs_pages_reference_no_external_host(client: httpx.AsyncClient, page: str) -> None:
    html = (await client.get(page)).text
    assert "http://" not in html
    assert "https://" not in html
    assert "cdn" not in html.lower()


async def test_docs_oauth2_redirect_page_is_served(client: httpx.AsyncClient) -> None:
    response = await client.get("/docs/oauth2-redirect")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "swaggerUIRedirectOauth2" in response.text


async def test_swagger_ui_is_configured_with_the_oauth2_redirect(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/docs")
    assert "/docs/oauth2-redirect" in response.text


async def test_the_document_lists_paths_in_the_order_they_were_added(
    spec: dict[str, Any],
) -> None:
    """/leads routes are matched first (app/api/routes/__init__.py `match_leads_first`), but
    the document keeps its order: health, then login, users, API keys, leads, imports,
    webhooks, the event stream, assignment rules and capture forms."""
    groups = [
        path.split("/")[3] if path.startswith("/api/") else "health" for path in spec["paths"]
    ]
    assert list(dict.fromkeys(groups)) == [
        "health",
        "auth",
        "users",
        "api-keys",
        "leads",
        "imports",
        "webhooks",
        "events",
        "assignment-rules",
        "capture-forms",
        "capture",
    ]


def test_lead_requests_are_matched_against_the_lead_routes_first(app: FastAPI) -> None:
    assert app.router.routes[0].original_router.prefix == "/leads"
