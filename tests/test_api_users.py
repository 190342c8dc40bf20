"""Logging in and managing accounts over HTTP: POST /auth/token, /users/me and the superuser's
/users endpoints. No response may ever carry a password hash (checked on every response here).
"""

from __future__ import annotations

from typing import Any

import httpx
import jwt
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.config import Settings, use_settings
from app.models import User
from app.services.user_service import LOGIN_FAILED
from tests.helpers import (
    PASSWORD,
    TEST_SECRET,
    USER_FIELDS,
    UserFactory,
    app_in_session,
    client_of,
    count_rows,
    make_settings,
    uid,
)

TOKEN_URL = "/api/v1/auth/token"
USERS = "/api/v1/users"
NEW_PASSWORD = "a brand new passphrase"


# ---------------------------------------------------------------------------------- helpers


async def login(client: httpx.AsyncClient, email: str, password: str) -> httpx.Response:
    return await client.post(TOKEN_URL, data={"username": email, "password": password})


async def stored_user(db: AsyncSession, user_id: int) -> dict[str, Any]:
    row = (
        (await db.execute(text("SELECT * FROM users WHERE id = :id"), {"id": user_id}))
        .mappings()
        .first()
    )
    assert row is not None, f"user {user_id} is gone"
    return dict(row)


def assert_user(body: Any) -> dict[str, Any]:
    """A user as the API shows it: exactly the public fields, created_at in UTC."""
    assert isinstance(body, dict)
    assert set(body) == USER_FIELDS
    assert body["created_at"].endswith(("Z", "+00:00")), body["created_at"]
    return body


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code
    assert isinstance(body["detail"], str) and body["detail"]
    return body


@pytest.fixture(autouse=True)
def _no_password_hash_in_any_response(client: httpx.AsyncClient) -> None:
    async def check(response: httpx.Response) -> None:
        await response.aread()
        assert "hashed_password" not in response.text
        assert "$argon2" not in response.text

    client.event_hooks["response"].append(check)


# ------------------------------------------------------------------------------------- login


async def test_login_answers_a_bearer_token(
    client: httpx.AsyncClient, agent: User, settings: Settings
) -> None:
    agent_id = uid(agent)
    response = await login(client, "agent@crm.example.com", PASSWORD)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {
        "access_token",
        "token_type",
        "expires_in",
        "refresh_token",
        "refresh_expires_in",
    }
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == settings.access_token_expire_minutes * 60 == 900
    claims = jwt.decode(body["access_token"], TEST_SECRET, algorithms=["HS256"])
    assert claims["sub"] == str(agent_id)
    assert claims["exp"] - claims["iat"] == 900


async def test_the_login_token_authenticates_requests(
    client: httpx.AsyncClient, agent: User
) -> None:
    agent_id = uid(agent)
    token = (await login(client, "agent@crm.example.com", PASSWORD)).json()["access_token"]
    response = await client.get(f"{USERS}/me", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    assert response.json()["id"] == agent_id


async def test_login_compares_the_email_case_insensitively(
    client: httpx.AsyncClient, agent: User
) -> None:
    response = await login(client, "  Agent@CRM.Example.com ", PASSWORD)
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("email", "password"),
    [
        ("agent@crm.example.com", "wrong horse battery staple"),
        ("nobody@crm.example.com", PASSWORD),
        ("gone@crm.example.com", PASSWORD),
        ("not an email", PASSWORD),
    ],
    ids=["wrong-password", "unknown-email", "inactive-user", "malformed-email"],
)
async def test_failed_logins_all_get_the_same_401(
    client: httpx.AsyncClient, agent: User, inactive_user: User, email: str, password: str
) -> None:
    response = await login(client, email, password)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json() == {"detail": LOGIN_FAILED, "code": "not_authenticated"}


async def test_login_without_credentials_is_422_naming_both_fields(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(TOKEN_URL, data={})
    body = assert_error(response, 422, "validation_error")
    assert [e["loc"] for e in body["errors"]] == [["body", "username"], ["body", "password"]]


# ----------------------------------------------------------------------------------- /me


async def test_read_me_answers_the_callers_account(
    client: httpx.AsyncClient, auth_headers: Any, agent: User
) -> None:
    agent_id = uid(agent)
    response = await client.get(f"{USERS}/me", headers=auth_headers(agent))
    assert response.status_code == 200
    body = assert_user(response.json())
    assert body == {
        "id": agent_id,
        "email": "agent@crm.example.com",
        "full_name": "Agent One",
        "is_active": True,
        "is_superuser": False,
        "is_service_account": False,
        "created_at": body["created_at"],
    }


async def test_update_me_changes_the_full_name(
    client: httpx.AsyncClient, auth_headers: Any, agent: User, db: AsyncSession
) -> None:
    agent_id = uid(agent)
    response = await client.patch(
        f"{USERS}/me", json={"full_name": "Agent Renamed"}, headers=auth_headers(agent)
    )
    assert response.status_code == 200
    assert assert_user(response.json())["full_name"] == "Agent Renamed"
    assert (await stored_user(db, agent_id))["full_name"] == "Agent Renamed"


async def test_update_me_password_change_switches_the_login(
    client: httpx.AsyncClient, auth_headers: Any, agent: User
) -> None:
    response = await client.patch(
        f"{USERS}/me",
        json={"password": NEW_PASSWORD, "current_password": PASSWORD},
        headers=auth_headers(agent),
    )
    assert response.status_code == 200
    assert_user(response.json())
    assert (await login(client, "agent@crm.example.com", NEW_PASSWORD)).status_code == 200
    assert (await login(client, "agent@crm.example.com", PASSWORD)).status_code == 401


@pytest.mark.parametrize(
    "extra", [{}, {"current_password": "not my password"}], ids=["missing", "wrong"]
)
async def test_update_me_password_needs_the_correct_current_password(
    client: httpx.AsyncClient,
    auth_headers: Any,
    agent: User,
    db: AsyncSession,
    extra: dict[str, str],
) -> None:
    agent_id = uid(agent)
    before = await stored_user(db, agent_id)
    response = await client.patch(
        f"{USERS}/me", json={"password": NEW_PASSWORD, **extra}, headers=auth_headers(agent)
    )
    body = assert_error(response, 422, "validation_error")
    assert [e["loc"] for e in body["errors"]] == [["body", "current_password"]]
    assert await stored_user(db, agent_id) == before
    assert (await login(client, "agent@crm.example.com", PASSWORD)).status_code == 200


async def test_update_me_cannot_make_the_caller_a_superuser(
    client: httpx.AsyncClient, auth_headers: Any, agent: User, db: AsyncSession
) -> None:
    agent_id = uid(agent)
    response = await client.patch(
        f"{USERS}/me", json={"is_superuser": True}, headers=auth_headers(agent)
    )
    body = assert_error(response, 422, "validation_error")
    assert [e["loc"] for e in body["errors"]] == [["body", "is_superuser"]]
    assert (await stored_user(db, agent_id))["is_superuser"] in (False, 0)


# --------------------------------------------------------------------------------- list users


async def test_list_users_answers_a_page_of_every_account(
    client: httpx.AsyncClient,
    h: dict[str, str],
    superuser: User,
    agent: User,
    other_agent: User,
    inactive_user: User,
) -> None:
    all_ids = [uid(superuser), uid(agent), uid(other_agent), uid(inactive_user)]
    response = await client.get(USERS, headers=h)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"items", "total", "skip", "limit"}
    assert (body["total"], body["skip"], body["limit"]) == (4, 0, 100)
    assert [assert_user(item)["id"] for item in body["items"]] == all_ids
    assert [item["is_active"] for item in body["items"]] == [True, True, True, False]


async def test_list_users_pages_with_skip_and_limit(
    client: httpx.AsyncClient,
    h: dict[str, str],
    superuser: User,
    agent: User,
    other_agent: User,
    inactive_user: User,
) -> None:
    response = await client.get(f"{USERS}?skip=1&limit=2", headers=h)
    assert response.status_code == 200
    body = response.json()
    assert [item["id"] for item in body["items"]] == [uid(agent), uid(other_agent)]
    assert (body["total"], body["skip"], body["limit"]) == (4, 1, 2)


# -------------------------------------------------------------------------------- create user


async def test_create_user_answers_201_with_location(
    client: httpx.AsyncClient, h: dict[str, str], db: AsyncSession
) -> None:
    response = await client.post(
        USERS,
        json={"email": "Sam.Seller@Example.com", "full_name": "Sam Seller", "password": "12345678"},
        headers=h,
    )
    assert response.status_code == 201
    body = assert_user(response.json())
    assert response.headers["location"] == f"/api/v1/users/{body['id']}"
    assert body == {
        "id": body["id"],
        "email": "sam.seller@example.com",
        "full_name": "Sam Seller",
        "is_active": True,
        "is_superuser": False,
        "is_service_account": False,
        "created_at": body["created_at"],
    }
    read = await client.get(response.headers["location"], headers=h)
    assert read.status_code == 200
    assert read.json() == body


async def test_create_user_stores_only_an_argon2_hash_of_the_password(
    client: httpx.AsyncClient, h: dict[str, str], db: AsyncSession
) -> None:
    response = await client.post(
        USERS,
        json={"email": "sam@example.com", "full_name": "Sam", "password": "sam's passphrase"},
        headers=h,
    )
    assert response.status_code == 201
    stored = await stored_user(db, response.json()["id"])
    assert stored["hashed_password"].startswith("$argon2")
    assert "sam's passphrase" not in stored["hashed_password"]
    assert (await login(client, "sam@example.com", "sam's passphrase")).status_code == 200


async def test_create_user_can_make_a_superuser(
    client: httpx.AsyncClient, h: dict[str, str]
) -> None:
    response = await client.post(
        USERS,
        json={
            "email": "chief@example.com",
            "full_name": "Chief",
            "password": "chief passphrase",
            "is_superuser": True,
        },
        headers=h,
    )
    assert response.status_code == 201
    assert response.json()["is_superuser"] is True
    token = (await login(client, "chief@example.com", "chief passphrase")).json()["access_token"]
    listed = await client.get(USERS, headers={"Authorization": f"Bearer {token}"})
    assert listed.status_code == 200


async def test_create_user_with_a_taken_email_in_another_case_is_409_duplicate(
    client: httpx.AsyncClient, h: dict[str, str], agent: User, db: AsyncSession
) -> None:
    users_before = await count_rows(db, "users")
    response = await client.post(
        USERS,
        json={"email": "AGENT@Crm.Example.COM", "full_name": "Copy", "password": "12345678"},
        headers=h,
    )
    assert_error(response, 409, "duplicate")
    assert await count_rows(db, "users") == users_before


async def test_create_user_with_a_short_password_is_422_naming_password(
    client: httpx.AsyncClient, h: dict[str, str], db: AsyncSession
) -> None:
    users_before = await count_rows(db, "users")
    response = await client.post(
        USERS,
        json={"email": "short@example.com", "full_name": "Short", "password": "1234567"},
        headers=h,
    )
    body = assert_error(response, 422, "validation_error")
    assert [e["loc"] for e in body["errors"]] == [["body", "password"]]
    assert await count_rows(db, "users") == users_before


async def test_create_user_with_an_invalid_email_is_422_naming_email(
    client: httpx.AsyncClient, h: dict[str, str], db: AsyncSession
) -> None:
    users_before = await count_rows(db, "users")
    response = await client.post(
        USERS,
        json={"email": "not-an-email", "full_name": "Nobody", "password": "12345678"},
        headers=h,
    )
    body = assert_error(response, 422, "validation_error")
    assert [e["loc"] for e in body["errors"]] == [["body", "email"]]
    assert await count_rows(db, "users") == users_before


# ----------------------------------------------------------------------- read and change user


async def test_read_user_answers_the_account(
    client: httpx.AsyncClient, h: dict[str, str], other_agent: User
) -> None:
    other_id = uid(other_agent)
    response = await client.get(f"{USERS}/{other_id}", headers=h)
    assert response.status_code == 200
    body = assert_user(response.json())
    assert (body["id"], body["email"], body["full_name"]) == (
        other_id,
        "other@crm.example.com",
        "Agent Two",
    )


async def test_read_unknown_user_is_404_user_not_found(
    client: httpx.AsyncClient, h: dict[str, str]
) -> None:
    body = assert_error(await client.get(f"{USERS}/987654", headers=h), 404, "user_not_found")
    assert "987654" in body["detail"]


async def test_deactivating_a_user_locks_out_their_token_and_login(
    client: httpx.AsyncClient, h: dict[str, str], auth_headers: Any, agent: User
) -> None:
    agent_id = uid(agent)
    agent_headers = auth_headers(agent)
    response = await client.patch(f"{USERS}/{agent_id}", json={"is_active": False}, headers=h)
    assert response.status_code == 200
    assert assert_user(response.json())["is_active"] is False
    locked = await client.get(f"{USERS}/me", headers=agent_headers)
    assert_error(locked, 401, "not_authenticated")
    assert locked.headers["www-authenticate"] == "Bearer"
    assert (await login(client, "agent@crm.example.com", PASSWORD)).status_code == 401


async def test_reactivating_a_user_lets_them_back_in(
    client: httpx.AsyncClient, h: dict[str, str], inactive_user: User
) -> None:
    user_id = uid(inactive_user)
    response = await client.patch(f"{USERS}/{user_id}", json={"is_active": True}, headers=h)
    assert response.status_code == 200
    assert response.json()["is_active"] is True
    assert (await login(client, "gone@crm.example.com", PASSWORD)).status_code == 200


async def test_promoting_a_user_gives_them_superuser_rights(
    client: httpx.AsyncClient, h: dict[str, str], auth_headers: Any, agent: User
) -> None:
    agent_id = uid(agent)
    agent_headers = auth_headers(agent)
    assert (await client.get(USERS, headers=agent_headers)).status_code == 403
    response = await client.patch(f"{USERS}/{agent_id}", json={"is_superuser": True}, headers=h)
    assert response.status_code == 200
    assert assert_user(response.json())["is_superuser"] is True
    assert (await client.get(USERS, headers=agent_headers)).status_code == 200


async def test_resetting_a_users_password_switches_their_login(
    client: httpx.AsyncClient, h: dict[str, str], agent: User, db: AsyncSession
) -> None:
    agent_id = uid(agent)
    old_hash = (await stored_user(db, agent_id))["hashed_password"]
    response = await client.patch(f"{USERS}/{agent_id}", json={"password": NEW_PASSWORD}, headers=h)
    assert response.status_code == 200
    assert_user(response.json())
    new_hash = (await stored_user(db, agent_id))["hashed_password"]
    assert new_hash.startswith("$argon2") and new_hash != old_hash
    assert (await login(client, "agent@crm.example.com", NEW_PASSWORD)).status_code == 200
    assert (await login(client, "agent@crm.example.com", PASSWORD)).status_code == 401


async def test_renaming_a_user(
    client: httpx.AsyncClient, h: dict[str, str], agent: User, db: AsyncSession
) -> None:
    agent_id = uid(agent)
    response = await client.patch(
        f"{USERS}/{agent_id}", json={"full_name": "Agent Prime"}, headers=h
    )
    assert response.status_code == 200
    assert response.json()["full_name"] == "Agent Prime"
    assert (await stored_user(db, agent_id))["full_name"] == "Agent Prime"


@pytest.mark.parametrize("change", [{"is_active": False}, {"is_superuser": False}])
async def test_a_superuser_cannot_deactivate_or_demote_themselves(
    client: httpx.AsyncClient,
    h: dict[str, str],
    superuser: User,
    db: AsyncSession,
    change: dict[str, bool],
) -> None:
    boss_id = uid(superuser)
    before = await stored_user(db, boss_id)
    response = await client.patch(f"{USERS}/{boss_id}", json=change, headers=h)
    assert_error(response, 409, "conflict")
    assert await stored_user(db, boss_id) == before
    assert (await client.get(USERS, headers=h)).status_code == 200


async def test_update_user_with_a_short_password_is_422_and_keeps_the_old_one(
    client: httpx.AsyncClient, h: dict[str, str], agent: User, db: AsyncSession
) -> None:
    agent_id = uid(agent)
    before = await stored_user(db, agent_id)
    response = await client.patch(f"{USERS}/{agent_id}", json={"password": "short"}, headers=h)
    body = assert_error(response, 422, "validation_error")
    assert [e["loc"] for e in body["errors"]] == [["body", "password"]]
    assert await stored_user(db, agent_id) == before


# --------------------------------------------------------------------------- no hash, ever


async def test_no_user_response_carries_a_password_hash(
    client: httpx.AsyncClient,
    h: dict[str, str],
    auth_headers: Any,
    agent: User,
    make_user: UserFactory,
) -> None:
    """Every user-returning endpoint, read for anything hash-like (the autouse hook checks too)."""
    agent_id = uid(agent)
    responses = [
        await login(client, "agent@crm.example.com", PASSWORD),
        await client.get(f"{USERS}/me", headers=auth_headers(agent)),
        await client.patch(f"{USERS}/me", json={"full_name": "X"}, headers=auth_headers(agent)),
        await client.get(USERS, headers=h),
        await client.post(
            USERS,
            json={"email": "n@example.com", "full_name": "N", "password": "12345678"},
            headers=h,
        ),
        await client.get(f"{USERS}/{agent_id}", headers=h),
        await client.patch(f"{USERS}/{agent_id}", json={"password": NEW_PASSWORD}, headers=h),
    ]
    assert [r.status_code for r in responses] == [200, 200, 200, 200, 201, 200, 200]
    for response in responses:
        assert "hashed_password" not in response.text
        assert "$argon2" not in response.text
        assert "password" not in response.json()


async def test_login_expires_in_follows_the_configured_lifetime(
    engine: AsyncEngine, db: AsyncSession, agent: User
) -> None:
    with use_settings(make_settings(access_token_expire_minutes=5)):
        async with client_of(app_in_session(engine, db)) as client:
            response = await login(client, "agent@crm.example.com", PASSWORD)
    assert response.status_code == 200
    assert response.json()["expires_in"] == 300
