"""API keys and service accounts (issue 14). Scopes on every endpoint are in the authorization
table (tests/test_api_authorization.py, table 3); here, what a key's life looks like."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import ApiKey, User
from tests.helpers import PASSWORD, uid

API = "/api/v1"
KEYS = f"{API}/api-keys"
ME = f"{API}/users/me"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def make_key(client: httpx.AsyncClient, headers: dict[str, str], **body: Any) -> Any:
    response = await client.post(
        KEYS, json={"name": "script", "scope": "write", **body}, headers=headers
    )
    assert response.status_code == 201, response.text
    return response.json()


async def stored(db: AsyncSession, key_id: int) -> ApiKey:
    query = select(ApiKey).where(ApiKey.id == key_id).execution_options(populate_existing=True)
    return (await db.scalars(query)).one()


async def test_a_key_acts_as_its_user(
    client: httpx.AsyncClient, auth_headers: Any, agent: User
) -> None:
    made = await make_key(client, auth_headers(agent))

    me = await client.get(ME, headers=bearer(made["key"]))

    assert me.status_code == 200, me.text
    assert me.json()["id"] == uid(agent)


async def test_the_key_is_shown_once_and_stored_only_as_a_digest(
    client: httpx.AsyncClient, db: AsyncSession, auth_headers: Any, agent: User
) -> None:
    made = await make_key(client, auth_headers(agent))

    listed = await client.get(KEYS, headers=auth_headers(agent))

    assert made["key"].startswith(f"crm_{made['prefix']}_")
    [item] = listed.json()["items"]
    assert "key" not in item and item["prefix"] == made["prefix"]
    assert made["key"] not in (await stored(db, made["id"])).digest


async def test_a_revoked_key_is_refused_at_once(
    client: httpx.AsyncClient, auth_headers: Any, agent: User
) -> None:
    made = await make_key(client, auth_headers(agent))
    assert (await client.get(ME, headers=bearer(made["key"]))).status_code == 200

    revoked = await client.delete(f"{KEYS}/{made['id']}", headers=auth_headers(agent))

    assert revoked.status_code == 204, revoked.text
    assert (await client.get(ME, headers=bearer(made["key"]))).status_code == 401


async def test_a_key_past_its_expiry_is_refused(
    client: httpx.AsyncClient, db: AsyncSession, auth_headers: Any, agent: User
) -> None:
    soon = datetime.now(UTC) + timedelta(hours=1)
    made = await make_key(client, auth_headers(agent), expires_at=soon.isoformat())
    assert (await client.get(ME, headers=bearer(made["key"]))).status_code == 200
    row = await stored(db, made["id"])
    row.expires_at = datetime.now(UTC) - timedelta(seconds=1)
    await db.commit()

    assert (await client.get(ME, headers=bearer(made["key"]))).status_code == 401


async def test_a_key_cannot_expire_in_the_past(
    client: httpx.AsyncClient, auth_headers: Any, agent: User
) -> None:
    past = (datetime.now(UTC) - timedelta(days=1)).isoformat()

    response = await client.post(
        KEYS, json={"name": "x", "scope": "read", "expires_at": past}, headers=auth_headers(agent)
    )

    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["loc"] == ["body", "expires_at"]


async def test_a_deactivated_accounts_keys_are_refused(
    client: httpx.AsyncClient, auth_headers: Any, superuser: User, agent: User
) -> None:
    made = await make_key(client, auth_headers(agent))
    changed = await client.patch(
        f"{API}/users/{uid(agent)}", json={"is_active": False}, headers=auth_headers(superuser)
    )
    assert changed.status_code == 200, changed.text

    assert (await client.get(ME, headers=bearer(made["key"]))).status_code == 401


async def change_password(client: httpx.AsyncClient, headers: dict[str, str]) -> httpx.Response:
    new = {"password": "a brand new passphrase", "current_password": PASSWORD}
    return await client.patch(ME, json=new, headers=headers)


async def test_a_key_survives_its_users_own_password_change(
    client: httpx.AsyncClient, auth_headers: Any, agent: User
) -> None:
    """A script's key is no device logged in; changing the password leaves it working."""
    made = await make_key(client, auth_headers(agent))
    changed = await change_password(client, auth_headers(agent))
    assert changed.status_code == 200, changed.text

    assert (await client.get(ME, headers=bearer(made["key"]))).status_code == 200


async def test_a_key_cannot_change_its_users_password(
    client: httpx.AsyncClient, auth_headers: Any, agent: User
) -> None:
    made = await make_key(client, auth_headers(agent))

    response = await change_password(client, bearer(made["key"]))

    assert response.status_code == 403, response.text
    assert response.json()["code"] == "permission_denied"


async def test_the_first_use_records_when_the_key_was_used(
    client: httpx.AsyncClient, db: AsyncSession, auth_headers: Any, agent: User
) -> None:
    made = await make_key(client, auth_headers(agent))
    assert (await stored(db, made["id"])).last_used_at is None

    await client.get(ME, headers=bearer(made["key"]))

    used = (await stored(db, made["id"])).last_used_at
    assert used is not None and datetime.now(UTC) - used < timedelta(minutes=1)


async def test_uses_within_a_minute_write_the_time_once(
    client: httpx.AsyncClient, db: AsyncSession, auth_headers: Any, agent: User
) -> None:
    made = await make_key(client, auth_headers(agent))
    await client.get(ME, headers=bearer(made["key"]))
    first = (await stored(db, made["id"])).last_used_at

    for _ in range(3):
        await client.get(ME, headers=bearer(made["key"]))

    assert (await stored(db, made["id"])).last_used_at == first


# ------------------------------------------------------------------------- service accounts


async def make_service_account(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> httpx.Response:
    body = {"email": "etl@crm.example.com", "full_name": "ETL", "is_service_account": True}
    return await client.post(f"{API}/users", json=body, headers=headers)


async def test_a_service_account_has_no_password_and_cannot_log_in(
    client: httpx.AsyncClient, auth_headers: Any, superuser: User
) -> None:
    created = await make_service_account(client, auth_headers(superuser))
    assert created.status_code == 201, created.text
    assert created.json()["is_service_account"] is True

    for password in ("", PASSWORD):
        login = await client.post(
            f"{API}/auth/token", data={"username": "etl@crm.example.com", "password": password}
        )
        assert login.status_code in (401, 422), login.text


async def test_a_superuser_makes_a_key_a_service_account_works_with(
    client: httpx.AsyncClient, auth_headers: Any, superuser: User
) -> None:
    created = await make_service_account(client, auth_headers(superuser))
    made = await make_key(client, auth_headers(superuser), user_id=created.json()["id"])

    me = await client.get(ME, headers=bearer(made["key"]))

    assert me.status_code == 200, me.text
    assert me.json()["email"] == "etl@crm.example.com"


async def test_an_ordinary_account_still_needs_a_password(
    client: httpx.AsyncClient, auth_headers: Any, superuser: User
) -> None:
    response = await client.post(
        f"{API}/users",
        json={"email": "sam@crm.example.com", "full_name": "Sam"},
        headers=auth_headers(superuser),
    )

    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["loc"] == ["body", "password"]


async def test_a_revoked_key_is_no_longer_found(
    client: httpx.AsyncClient, auth_headers: Any, agent: User
) -> None:
    made = await make_key(client, auth_headers(agent))
    await client.delete(f"{KEYS}/{made['id']}", headers=auth_headers(agent))

    response = await client.get(f"{KEYS}/{made['id']}", headers=auth_headers(agent))

    assert response.status_code == 404
    assert response.json()["code"] == "api_key_not_found"
