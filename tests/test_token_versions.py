"""Token versions: a superuser's password reset or a deactivation voids every access token issued
before, although none of them has expired; other changes to the account leave its tokens alone.
A user's own new password ends their other sessions instead (tests/test_sessions.py), and keeps
the one it was sent from.

Tokens are taken from the real login route wherever the test is about what a login hands out,
and from the `auth_headers` fixture (version 0, like a fresh account) otherwise.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import User
from app.services.security import JWT_ALGORITHM, key_id
from tests.helpers import PASSWORD, TEST_SECRET, TEST_SESSIONS, uid

API = "/api/v1"
ME = f"{API}/users/me"
NEW_PASSWORD = "a brand new passphrase"
INVALID_TOKEN = {
    "detail": "The access token is invalid or has expired.",
    "code": "not_authenticated",
}

Headers = dict[str, str]


def bearer(token: str) -> Headers:
    return {"Authorization": f"Bearer {token}"}


async def login(client: httpx.AsyncClient, email: str, password: str = PASSWORD) -> Headers:
    response = await client.post(
        f"{API}/auth/token", data={"username": email, "password": password}
    )
    assert response.status_code == 200, response.text
    return bearer(response.json()["access_token"])


def assert_voided(response: httpx.Response) -> None:
    """Refused exactly like any other invalid token: nothing says why."""
    assert response.status_code == 401, response.text
    assert response.json() == INVALID_TOKEN
    assert response.headers["WWW-Authenticate"] == "Bearer"


async def stored_version(db: AsyncSession, user_id: int) -> int:
    query = text("SELECT token_version FROM users WHERE id = :id")
    return int(await db.scalar(query, {"id": user_id}))


def signed(user_id: int, **extra: Any) -> Headers:
    """A token for the user's session, with these claims, signed as the app signs."""
    now = datetime.now(UTC)
    claims = {
        "sub": str(user_id),
        "sid": TEST_SESSIONS[user_id],
        "iat": now,
        "exp": now + timedelta(minutes=5),
        "type": "access",
    }
    kid = {"kid": key_id(TEST_SECRET)}
    return bearer(jwt.encode(claims | extra, TEST_SECRET, algorithm=JWT_ALGORITHM, headers=kid))


# --------------------------------------------------------------------------- what a token holds


async def test_a_login_token_carries_the_accounts_token_version(
    client: httpx.AsyncClient, db: AsyncSession, agent: User
) -> None:
    agent_id = uid(agent)
    await db.execute(text("UPDATE users SET token_version = 7 WHERE id = :id"), {"id": agent_id})
    await db.commit()

    headers = await login(client, "agent@crm.example.com")

    token = headers["Authorization"].removeprefix("Bearer ")
    assert jwt.decode(token, TEST_SECRET, algorithms=[JWT_ALGORITHM])["ver"] == 7
    assert (await client.get(ME, headers=headers)).status_code == 200


async def test_a_token_of_another_version_than_the_accounts_is_refused(
    client: httpx.AsyncClient, agent: User
) -> None:
    assert_voided(await client.get(ME, headers=signed(uid(agent), ver=1)))


async def test_a_token_without_a_version_counts_as_version_0(
    client: httpx.AsyncClient, agent: User
) -> None:
    """Tokens issued before versions existed keep working until they expire (every account
    started at 0), and no longer than the next password change."""
    assert (await client.get(ME, headers=signed(uid(agent)))).status_code == 200


async def test_a_token_whose_version_is_not_a_whole_number_is_refused(
    client: httpx.AsyncClient, agent: User
) -> None:
    """Even one that compares equal to the stored version (0.0 == 0)."""
    assert_voided(await client.get(ME, headers=signed(uid(agent), ver=0.0)))


# ------------------------------------------------------------------------- own password change


async def test_changing_your_own_password_voids_the_tokens_of_your_other_logins(
    client: httpx.AsyncClient, agent: User
) -> None:
    elsewhere = await login(client, "agent@crm.example.com")
    here = await login(client, "agent@crm.example.com")
    changed = await client.patch(
        ME, json={"password": NEW_PASSWORD, "current_password": PASSWORD}, headers=here
    )
    assert changed.status_code == 200, changed.text

    assert_voided(await client.get(ME, headers=elsewhere))
    assert (await client.get(ME, headers=here)).status_code == 200


async def test_changing_your_own_password_leaves_the_token_version_alone(
    client: httpx.AsyncClient, db: AsyncSession, agent: User
) -> None:
    """Raising it would void the token the change was sent with too."""
    here = await login(client, "agent@crm.example.com")
    changed = await client.patch(
        ME, json={"password": NEW_PASSWORD, "current_password": PASSWORD}, headers=here
    )
    assert changed.status_code == 200, changed.text

    assert await stored_version(db, uid(agent)) == 0


async def test_a_login_after_your_own_password_change_gives_a_working_token(
    client: httpx.AsyncClient, agent: User
) -> None:
    old = await login(client, "agent@crm.example.com")
    changed = await client.patch(
        ME, json={"password": NEW_PASSWORD, "current_password": PASSWORD}, headers=old
    )
    assert changed.status_code == 200, changed.text

    new = await login(client, "agent@crm.example.com", NEW_PASSWORD)

    assert (await client.get(ME, headers=new)).status_code == 200


# ----------------------------------------------------------------- a superuser's changes


async def test_a_superuser_resetting_a_password_voids_the_users_tokens(
    client: httpx.AsyncClient, auth_headers: Callable[[User], Headers], superuser: User, agent: User
) -> None:
    agent_headers = auth_headers(agent)
    reset = await client.patch(
        f"{API}/users/{uid(agent)}",
        json={"password": NEW_PASSWORD},
        headers=auth_headers(superuser),
    )
    assert reset.status_code == 200, reset.text

    assert_voided(await client.get(ME, headers=agent_headers))


async def test_a_login_after_a_password_reset_gives_a_working_token(
    client: httpx.AsyncClient, auth_headers: Callable[[User], Headers], superuser: User, agent: User
) -> None:
    reset = await client.patch(
        f"{API}/users/{uid(agent)}",
        json={"password": NEW_PASSWORD},
        headers=auth_headers(superuser),
    )
    assert reset.status_code == 200, reset.text

    new = await login(client, "agent@crm.example.com", NEW_PASSWORD)

    assert (await client.get(ME, headers=new)).status_code == 200


async def test_a_token_from_before_a_deactivation_stays_void_after_reactivation(
    client: httpx.AsyncClient, auth_headers: Callable[[User], Headers], superuser: User, agent: User
) -> None:
    agent_headers, boss = auth_headers(agent), auth_headers(superuser)
    for active in (False, True):
        changed = await client.patch(
            f"{API}/users/{uid(agent)}", json={"is_active": active}, headers=boss
        )
        assert changed.status_code == 200, changed.text

    assert_voided(await client.get(ME, headers=agent_headers))


async def test_a_login_after_reactivation_gives_a_working_token(
    client: httpx.AsyncClient, auth_headers: Callable[[User], Headers], superuser: User, agent: User
) -> None:
    boss = auth_headers(superuser)
    for active in (False, True):
        changed = await client.patch(
            f"{API}/users/{uid(agent)}", json={"is_active": active}, headers=boss
        )
        assert changed.status_code == 200, changed.text

    new = await login(client, "agent@crm.example.com")

    assert (await client.get(ME, headers=new)).status_code == 200


async def test_renaming_yourself_keeps_your_token(client: httpx.AsyncClient, agent: User) -> None:
    headers = await login(client, "agent@crm.example.com")
    renamed = await client.patch(ME, json={"full_name": "Agent Prime"}, headers=headers)
    assert renamed.status_code == 200, renamed.text

    assert (await client.get(ME, headers=headers)).status_code == 200


async def test_a_superusers_other_changes_keep_the_users_tokens(
    client: httpx.AsyncClient,
    db: AsyncSession,
    auth_headers: Callable[[User], Headers],
    superuser: User,
    agent: User,
) -> None:
    """Renaming, promoting, demoting, and "activating" an active account void nothing."""
    agent_id = uid(agent)
    agent_headers, boss = auth_headers(agent), auth_headers(superuser)
    for change in (
        {"full_name": "Agent Prime"},
        {"is_superuser": True},
        {"is_superuser": False},
        {"is_active": True},
    ):
        changed = await client.patch(f"{API}/users/{agent_id}", json=change, headers=boss)
        assert changed.status_code == 200, (change, changed.text)

    assert (await client.get(ME, headers=agent_headers)).status_code == 200
    assert await stored_version(db, agent_id) == 0


async def test_each_voiding_change_raises_the_stored_version_by_one(
    client: httpx.AsyncClient,
    db: AsyncSession,
    auth_headers: Callable[[User], Headers],
    superuser: User,
    agent: User,
) -> None:
    agent_id, boss = uid(agent), auth_headers(superuser)
    for change in ({"password": NEW_PASSWORD}, {"is_active": False}, {"is_active": True}):
        changed = await client.patch(f"{API}/users/{agent_id}", json=change, headers=boss)
        assert changed.status_code == 200, (change, changed.text)

    assert await stored_version(db, agent_id) == 2
