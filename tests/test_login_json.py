"""`POST /auth/token` takes the credentials as JSON or as the OAuth2 password form (what the docs'
Authorize button sends), refuses any other body type with 415, and documents both body types
with one schema in `/openapi.json`."""

from __future__ import annotations

from typing import Any

import httpx
import jwt
import pytest
from sqlalchemy import inspect

from app.models import User
from tests.helpers import PASSWORD, TEST_SECRET

TOKEN_URL = "/api/v1/auth/token"
AGENT = "agent@crm.example.com"
CREDENTIALS = {"username": AGENT, "password": PASSWORD}


def assert_token_for(response: httpx.Response, user: User) -> None:
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "bearer"
    claims = jwt.decode(body["access_token"], TEST_SECRET, algorithms=["HS256"])
    assert claims["sub"] == str(inspect(user).identity[0])


def error_locs(response: httpx.Response) -> list[list[Any]]:
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "validation_error"
    return [error["loc"] for error in body["errors"]]


# ------------------------------------------------------------------------------- the bodies


async def test_a_json_body_logs_in(client: httpx.AsyncClient, agent: User) -> None:
    assert_token_for(await client.post(TOKEN_URL, json=CREDENTIALS), agent)


async def test_the_oauth2_form_still_logs_in(client: httpx.AsyncClient, agent: User) -> None:
    assert_token_for(await client.post(TOKEN_URL, data=CREDENTIALS), agent)


async def test_the_form_as_the_docs_authorize_button_sends_it_logs_in(
    client: httpx.AsyncClient, agent: User
) -> None:
    """Swagger UI sends grant_type and an empty scope beside the credentials."""
    form = {"grant_type": "password", "scope": "", **CREDENTIALS}
    assert_token_for(await client.post(TOKEN_URL, data=form), agent)


async def test_a_multipart_form_logs_in(client: httpx.AsyncClient, agent: User) -> None:
    """`curl -F username=... -F password=...` sends multipart/form-data."""
    parts = {name: (None, value) for name, value in CREDENTIALS.items()}
    assert_token_for(await client.post(TOKEN_URL, files=parts), agent)


async def test_a_json_body_with_a_charset_logs_in(client: httpx.AsyncClient, agent: User) -> None:
    response = await client.post(
        TOKEN_URL,
        content=f'{{"username": "{AGENT}", "password": "{PASSWORD}"}}',
        headers={"Content-Type": "application/json; charset=utf-8"},
    )
    assert_token_for(response, agent)


async def test_a_json_body_with_the_wrong_password_is_the_usual_401(
    client: httpx.AsyncClient, agent: User
) -> None:
    response = await client.post(TOKEN_URL, json={"username": AGENT, "password": "not it"})

    assert response.status_code == 401, response.text
    assert response.json()["code"] == "not_authenticated"


# ---------------------------------------------------------------------------------- refusals


@pytest.mark.parametrize("content_type", ["text/plain", "application/xml"], ids=["text", "xml"])
async def test_another_content_type_is_415_naming_the_accepted_ones(
    client: httpx.AsyncClient, agent: User, content_type: str
) -> None:
    response = await client.post(
        TOKEN_URL,
        content=f"username={AGENT}&password={PASSWORD}",
        headers={"Content-Type": content_type},
    )

    assert response.status_code == 415, response.text
    body = response.json()
    assert body["code"] == "unsupported_media_type"
    assert content_type in body["detail"]
    assert "application/json" in body["detail"]
    assert "application/x-www-form-urlencoded" in body["detail"]


async def test_no_body_at_all_is_422_naming_both_fields(client: httpx.AsyncClient) -> None:
    response = await client.post(TOKEN_URL)

    assert error_locs(response) == [["body", "username"], ["body", "password"]]


async def test_a_body_without_a_content_type_is_415(client: httpx.AsyncClient) -> None:
    response = await client.post(TOKEN_URL, content=b"{}")

    assert response.status_code == 415, response.text
    assert "without a Content-Type" in response.json()["detail"]


@pytest.mark.parametrize("missing", ["username", "password"])
async def test_a_json_body_missing_a_field_is_422_naming_it(
    client: httpx.AsyncClient, missing: str
) -> None:
    body = {name: value for name, value in CREDENTIALS.items() if name != missing}

    response = await client.post(TOKEN_URL, json=body)

    assert error_locs(response) == [["body", missing]]


async def test_a_form_missing_the_password_is_422_naming_it(client: httpx.AsyncClient) -> None:
    response = await client.post(TOKEN_URL, data={"username": AGENT})

    assert error_locs(response) == [["body", "password"]]


async def test_malformed_json_is_422(client: httpx.AsyncClient) -> None:
    response = await client.post(
        TOKEN_URL, content=b'{"username": ', headers={"Content-Type": "application/json"}
    )

    (loc,) = error_locs(response)
    assert loc[0] == "body"


@pytest.mark.parametrize("body", [b"[]", b'"a string"', b"7", b"null"])
async def test_json_that_is_not_an_object_is_422(client: httpx.AsyncClient, body: bytes) -> None:
    response = await client.post(
        TOKEN_URL, content=body, headers={"Content-Type": "application/json"}
    )

    assert error_locs(response) == [["body"]]


async def test_a_json_password_that_is_not_text_is_422_naming_it(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(TOKEN_URL, json={"username": AGENT, "password": 12345678})

    assert error_locs(response) == [["body", "password"]]


@pytest.mark.parametrize("grant_type", ["client_credentials", ""], ids=["other", "empty"])
async def test_a_grant_type_other_than_password_is_422_naming_it(
    client: httpx.AsyncClient, grant_type: str
) -> None:
    response = await client.post(TOKEN_URL, data={**CREDENTIALS, "grant_type": grant_type})

    assert error_locs(response) == [["body", "grant_type"]]


async def test_a_json_body_that_is_not_utf8_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post(
        TOKEN_URL,
        content=b'{"username": "\xff\xfe", "password": "x"}',
        headers={"Content-Type": "application/json"},
    )

    assert response.status_code == 400, response.text
    assert response.json()["code"] == "bad_request"


# ------------------------------------------------------------------------------ the document


async def login_operation(client: httpx.AsyncClient) -> dict[str, Any]:
    return (await client.get("/openapi.json")).json()["paths"][TOKEN_URL]["post"]


async def test_the_document_offers_json_and_the_form_with_one_schema(
    client: httpx.AsyncClient,
) -> None:
    content = (await login_operation(client))["requestBody"]["content"]

    assert {"application/json", "application/x-www-form-urlencoded"} <= set(content)
    schemas = [entry["schema"] for entry in content.values()]
    assert all(schema == schemas[0] for schema in schemas)


async def test_the_documented_body_requires_only_username_and_password(
    client: httpx.AsyncClient,
) -> None:
    """A generated client must be able to leave out what has a server default."""
    content = (await login_operation(client))["requestBody"]["content"]
    schema = content["application/json"]["schema"]

    assert sorted(schema["required"]) == ["password", "username"]
    assert {"grant_type", "scope"} <= set(schema["properties"])


async def test_the_document_lists_the_415(client: httpx.AsyncClient) -> None:
    responses = (await login_operation(client))["responses"]

    assert responses["415"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorResponse"
    }


async def test_the_docs_authorize_button_still_points_at_the_login(
    client: httpx.AsyncClient,
) -> None:
    schemes = (await client.get("/openapi.json")).json()["components"]["securitySchemes"]

    (scheme,) = schemes.values()
    assert scheme["flows"]["password"]["tokenUrl"] == TOKEN_URL
