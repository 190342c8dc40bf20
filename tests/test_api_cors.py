"""CORS: a browser frontend on an allowed origin may call the API with its token; others not."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import use_settings
from app.main import create_app
from tests.helpers import make_settings

FRONTEND = "http://localhost:5173"


@pytest.fixture
async def cors_client(engine: AsyncEngine) -> AsyncIterator[httpx.AsyncClient]:
    with use_settings(make_settings(cors_origins=f"{FRONTEND},https://crm.example.com")):
        transport = httpx.ASGITransport(app=create_app(engine=engine))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client


def preflight(origin: str) -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": "PATCH",
        "Access-Control-Request-Headers": "authorization,content-type",
    }


async def test_preflight_from_an_allowed_origin_allows_credentials_and_authorization(
    cors_client: httpx.AsyncClient,
) -> None:
    response = await cors_client.options("/api/v1/leads/1", headers=preflight(FRONTEND))
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == FRONTEND
    assert response.headers["access-control-allow-credentials"] == "true"
    allowed = response.headers["access-control-allow-headers"].lower()
    assert "authorization" in allowed
    assert "PATCH" in response.headers["access-control-allow-methods"]


async def test_preflight_from_another_origin_is_refused(cors_client: httpx.AsyncClient) -> None:
    response = await cors_client.options(
        "/api/v1/leads/1", headers=preflight("https://evil.example.net")
    )
    assert response.status_code == 400
    assert "access-control-allow-origin" not in response.headers


async def test_a_simple_request_from_an_allowed_origin_carries_the_cors_headers(
    cors_client: httpx.AsyncClient,
) -> None:
    response = await cors_client.get("/health", headers={"Origin": FRONTEND})
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == FRONTEND


async def test_without_cors_origins_no_cors_headers_are_sent(client: httpx.AsyncClient) -> None:
    response = await client.get("/health", headers={"Origin": FRONTEND})
    assert "access-control-allow-origin" not in response.headers
