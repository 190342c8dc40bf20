"""Webhook subscriptions through the API (issue 15): made, shown, changed, rotated, deleted,
and the URLs refused at creation. No worker runs here and nothing is sent: the URLs are
literal addresses (or localhost, which /etc/hosts answers), so no test asks DNS or connects
anywhere. Delivery is tests/test_webhook_delivery.py."""

from __future__ import annotations

import base64

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Webhook

API = "/api/v1/webhooks"
PUBLIC_URL = "https://93.184.215.14/hook"  # a literal public address: nothing to resolve
NEW = {"url": PUBLIC_URL, "event_types": ["lead.created"], "description": "new leads to Slack"}


async def create(client: httpx.AsyncClient, h: dict[str, str], **fields: object) -> dict:
    response = await client.post(API, json={**NEW, **fields}, headers=h)
    assert response.status_code == 201, response.text
    return response.json()


async def stored(db: AsyncSession) -> int:
    return int(await db.scalar(select(func.count()).select_from(Webhook)) or 0)


async def test_a_new_webhook_answers_its_secret_once_and_where_it_is(
    client: httpx.AsyncClient, h: dict[str, str]
) -> None:
    response = await client.post(API, json=NEW, headers=h)

    assert response.status_code == 201, response.text
    body = response.json()
    assert response.headers["Location"] == f"{API}/{body['id']}"
    assert body["secret"].startswith("whsec_")
    assert len(base64.b64decode(body["secret"].removeprefix("whsec_"))) == 32
    assert (body["url"], body["event_types"], body["is_active"]) == (
        PUBLIC_URL,
        ["lead.created"],
        True,
    )


async def test_the_secret_is_never_shown_again(
    client: httpx.AsyncClient, h: dict[str, str]
) -> None:
    made = await create(client, h)

    one = (await client.get(f"{API}/{made['id']}", headers=h)).json()
    listed = (await client.get(API, headers=h)).json()

    assert "secret" not in one
    assert all("secret" not in item for item in listed["items"])
    assert made["secret"] not in str(listed)


async def test_each_webhook_gets_its_own_secret(
    client: httpx.AsyncClient, h: dict[str, str]
) -> None:
    assert (await create(client, h))["secret"] != (await create(client, h))["secret"]


async def test_a_filter_is_kept_as_given(client: httpx.AsyncClient, h: dict[str, str]) -> None:
    made = await create(client, h, filter={"status": ["WON"], "lead_score_min": 50})

    assert made["filter"] == {"status": ["WON"], "lead_score_min": 50}


async def test_a_filter_with_a_wrong_value_is_refused_naming_it(
    client: httpx.AsyncClient, h: dict[str, str], db: AsyncSession
) -> None:
    response = await client.post(API, json={**NEW, "filter": {"status": ["MAYBE"]}}, headers=h)

    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"][:3] == ["body", "filter", "status"]
    assert await stored(db) == 0


@pytest.mark.parametrize(
    ("given", "field"),
    [({"include_archived": 0}, "include_archived"), ({"lead_score_min": "5"}, "lead_score_min")],
)
async def test_a_filter_value_of_the_wrong_json_type_is_refused(
    client: httpx.AsyncClient, h: dict[str, str], given: dict, field: str
) -> None:
    """The list filters come as query strings elsewhere, where "5" is a number; in a JSON
    body a number is a number."""
    response = await client.post(API, json={**NEW, "filter": given}, headers=h)

    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["body", "filter", field]


async def test_an_unknown_event_type_is_refused(
    client: httpx.AsyncClient, h: dict[str, str]
) -> None:
    response = await client.post(API, json={**NEW, "event_types": ["lead.exploded"]}, headers=h)

    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"][:2] == ["body", "event_types"]


async def test_all_events_are_asked_for_with_a_star(
    client: httpx.AsyncClient, h: dict[str, str]
) -> None:
    assert (await create(client, h, event_types=["*"]))["event_types"] == ["*"]


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://10.0.0.1/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hook",
        "http://localhost:9000/hook",
        "http://0.0.0.0/hook",
    ],
)
async def test_an_address_of_this_machine_or_a_private_network_is_refused(
    client: httpx.AsyncClient, h: dict[str, str], db: AsyncSession, url: str
) -> None:
    response = await client.post(API, json={**NEW, "url": url}, headers=h)

    assert response.status_code == 422, response.text
    [error] = response.json()["errors"]
    assert error["loc"] == ["body", "url"]
    assert "WEBHOOK_ALLOW_PRIVATE_NETWORKS" in error["msg"]
    assert await stored(db) == 0


async def test_a_url_that_is_no_http_url_is_refused(
    client: httpx.AsyncClient, h: dict[str, str]
) -> None:
    response = await client.post(API, json={**NEW, "url": "gopher://93.184.215.14/"}, headers=h)

    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["body", "url"]


async def test_a_new_url_is_checked_as_at_creation(
    client: httpx.AsyncClient, h: dict[str, str]
) -> None:
    made = await create(client, h)

    response = await client.patch(
        f"{API}/{made['id']}", json={"url": "http://192.168.0.10/"}, headers=h
    )

    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["body", "url"]
    assert (await client.get(f"{API}/{made['id']}", headers=h)).json()["url"] == PUBLIC_URL


async def test_a_change_keeps_what_was_not_sent(
    client: httpx.AsyncClient, h: dict[str, str]
) -> None:
    made = await create(client, h, filter={"status": ["WON"]})

    changed = await client.patch(
        f"{API}/{made['id']}", json={"event_types": ["*"], "description": None}, headers=h
    )

    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert (body["event_types"], body["description"]) == (["*"], None)
    assert (body["url"], body["filter"]) == (PUBLIC_URL, {"status": ["WON"]})


async def test_a_filter_can_be_removed(client: httpx.AsyncClient, h: dict[str, str]) -> None:
    made = await create(client, h, filter={"status": ["WON"]})

    changed = await client.patch(f"{API}/{made['id']}", json={"filter": None}, headers=h)

    assert changed.json()["filter"] is None


@pytest.mark.parametrize("field", ["url", "event_types", "is_active"])
async def test_a_required_field_cannot_be_set_to_null(
    client: httpx.AsyncClient, h: dict[str, str], field: str
) -> None:
    made = await create(client, h)

    response = await client.patch(f"{API}/{made['id']}", json={field: None}, headers=h)

    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"][:2] == ["body", field]


async def test_a_rotation_answers_a_new_secret_and_keeps_the_old_one_for_a_day(
    client: httpx.AsyncClient, h: dict[str, str]
) -> None:
    made = await create(client, h)

    rotated = await client.post(f"{API}/{made['id']}/rotate-secret", headers=h)

    assert rotated.status_code == 200, rotated.text
    body = rotated.json()
    assert body["secret"] != made["secret"] and body["secret"].startswith("whsec_")
    assert body["previous_secret_expires_at"] is not None


async def test_a_deleted_webhook_is_gone(
    client: httpx.AsyncClient, h: dict[str, str], db: AsyncSession
) -> None:
    made = await create(client, h)

    deleted = await client.delete(f"{API}/{made['id']}", headers=h)

    assert deleted.status_code == 204
    assert (await client.get(f"{API}/{made['id']}", headers=h)).status_code == 404
    assert await stored(db) == 0


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/999"),
        ("PATCH", "/999"),
        ("DELETE", "/999"),
        ("POST", "/999/rotate-secret"),
        ("POST", "/999/test"),
        ("GET", "/999/deliveries"),
        ("POST", "/999/deliveries/1/retry"),
    ],
)
async def test_an_unknown_webhook_is_404_webhook_not_found(
    client: httpx.AsyncClient, h: dict[str, str], method: str, path: str
) -> None:
    body = {"description": "x"} if method == "PATCH" else None
    response = await client.request(method, API + path, json=body, headers=h)

    assert response.status_code == 404
    assert response.json()["code"] == "webhook_not_found"


async def test_the_list_pages_by_id(client: httpx.AsyncClient, h: dict[str, str]) -> None:
    ids = [(await create(client, h))["id"] for _ in range(3)]

    page = (await client.get(API, params={"skip": 1, "limit": 1}, headers=h)).json()

    assert ([item["id"] for item in page["items"]], page["total"]) == ([ids[1]], 3)


async def test_a_cursor_not_handed_out_is_refused(
    client: httpx.AsyncClient, h: dict[str, str]
) -> None:
    made = await create(client, h)

    response = await client.get(
        f"{API}/{made['id']}/deliveries", params={"cursor": "bm90IGEgY3Vyc29y"}, headers=h
    )

    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"][-1] == "cursor"
