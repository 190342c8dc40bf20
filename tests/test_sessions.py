"""Sessions and refresh tokens (issue 14): a login starts a session; a refresh rotates its
refresh token; a replaced token is honoured again only within the grace period and revokes
the whole session after it; logging out, ending a session and a password change void the
access tokens concerned at once.

Every token comes from the real login and refresh routes; the database is only read (and
aged, where a test needs time to pass).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings, use_settings
from app.database import upgrade_database
from app.main import create_app
from app.models import AuthSession, RefreshToken, User
from app.services.security import JWT_ALGORITHM, key_id
from tests.helpers import (
    PASSWORD,
    PASSWORD_HASH,
    TEST_SECRET,
    client_of,
    make_settings,
    uid,
)
from tests.log_scan import never_log
from tests.support import committed_database, own_engine

API = "/api/v1"
ME = f"{API}/users/me"
REFRESH = f"{API}/auth/refresh"
SESSIONS = f"{API}/auth/sessions"
AGENT = "agent@crm.example.com"
NEW_PASSWORD = "a brand new passphrase"
GRACE_SECONDS = 10


@pytest.fixture
def settings() -> Iterator[Settings]:
    with use_settings(make_settings(refresh_reuse_grace_seconds=GRACE_SECONDS)) as installed:
        yield installed


async def login(
    client: httpx.AsyncClient, email: str = AGENT, password: str = PASSWORD, **headers: str
) -> dict[str, Any]:
    response = await client.post(
        f"{API}/auth/token", data={"username": email, "password": password}, headers=headers
    )
    assert response.status_code == 200, response.text
    never_log(response.json()["refresh_token"])
    return response.json()


async def refresh(client: httpx.AsyncClient, token: str) -> httpx.Response:
    response = await client.post(REFRESH, json={"refresh_token": token})
    if response.status_code == 200:
        never_log(response.json()["refresh_token"])
    return response


def bearer(pair: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {pair['access_token']}"}


def session_of(pair: dict[str, Any]) -> int:
    return int(jwt.decode(pair["access_token"], options={"verify_signature": False})["sid"])


async def session_row(db: AsyncSession, session_id: int) -> AuthSession:
    query = select(AuthSession).where(AuthSession.id == session_id)
    return (await db.scalars(query.execution_options(populate_existing=True))).one()


async def age_the_refresh(db: AsyncSession, session_id: int, by: timedelta) -> None:
    """Move the session's refresh tokens (when issued, when replaced) `by` into the past."""
    query = select(RefreshToken).where(RefreshToken.session_id == session_id)
    for token in (await db.scalars(query.execution_options(populate_existing=True))).all():
        token.issued_at -= by
        if token.replaced_at is not None:
            token.replaced_at -= by
    await db.commit()


def assert_refused(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.json()["code"] == "not_authenticated"


# ------------------------------------------------------------------------------------ login


async def test_a_login_answers_a_refresh_token_and_its_lifetime(
    client: httpx.AsyncClient, agent: User, settings: Settings
) -> None:
    pair = await login(client)

    assert len(pair["refresh_token"]) >= 43  # 32 random bytes, base64url
    assert pair["refresh_expires_in"] == 14 * 86_400
    assert pair["expires_in"] == 15 * 60


async def test_the_refresh_token_is_stored_only_as_a_digest(
    client: httpx.AsyncClient, db: AsyncSession, agent: User
) -> None:
    pair = await login(client)

    stored = (await db.scalars(select(RefreshToken.digest))).all()
    assert pair["refresh_token"] not in stored
    assert len(stored) == 1 and len(stored[0]) == 64


async def test_each_login_is_a_session_of_its_own_with_its_device(
    client: httpx.AsyncClient, db: AsyncSession, agent: User
) -> None:
    laptop = await login(client, **{"User-Agent": "Laptop/1.0"})
    phone = await login(client, **{"User-Agent": "Phone/2.0"})

    listed = await client.get(SESSIONS, headers=bearer(phone))

    assert listed.status_code == 200, listed.text
    items = listed.json()["items"]
    agents = {item["id"]: (item["user_agent"], item["current"]) for item in items}
    made_by_fixture = 1  # the `agent` fixture's own session
    assert listed.json()["total"] == 2 + made_by_fixture
    assert agents[session_of(laptop)] == ("Laptop/1.0", False)
    assert agents[session_of(phone)] == ("Phone/2.0", True)
    assert items[0]["id"] == session_of(phone)  # newest first
    assert all(item["client_address"] == "127.0.0.1" for item in items[:2])


async def test_an_access_token_names_its_key_and_its_session(
    client: httpx.AsyncClient, agent: User
) -> None:
    pair = await login(client)

    assert jwt.get_unverified_header(pair["access_token"])["kid"] == key_id(TEST_SECRET)
    claims = jwt.decode(pair["access_token"], TEST_SECRET, algorithms=[JWT_ALGORITHM])
    assert claims["sid"] == session_of(pair)


# ---------------------------------------------------------------------------------- refresh


async def test_a_refresh_answers_a_working_access_token_and_a_new_refresh_token(
    client: httpx.AsyncClient, agent: User
) -> None:
    pair = await login(client)

    renewed = await refresh(client, pair["refresh_token"])

    assert renewed.status_code == 200, renewed.text
    new = renewed.json()
    assert new["refresh_token"] != pair["refresh_token"]
    assert session_of(new) == session_of(pair)
    assert (await client.get(ME, headers=bearer(new))).json()["id"] == uid(agent)


async def test_the_new_refresh_token_refreshes_again(
    client: httpx.AsyncClient, agent: User
) -> None:
    first = (await refresh(client, (await login(client))["refresh_token"])).json()

    second = await refresh(client, first["refresh_token"])

    assert second.status_code == 200, second.text
    assert second.json()["refresh_token"] != first["refresh_token"]


async def test_a_refresh_moves_the_sessions_expiry_and_last_use_forward(
    client: httpx.AsyncClient, db: AsyncSession, agent: User
) -> None:
    pair = await login(client)
    before = await session_row(db, session_of(pair))
    await age_the_refresh(db, session_of(pair), timedelta(days=3))
    await db.execute(
        update(AuthSession)
        .where(AuthSession.id == session_of(pair))
        .values(
            expires_at=before.expires_at - timedelta(days=3),
            last_used_at=before.last_used_at - timedelta(days=3),
        )
    )
    await db.commit()

    assert (await refresh(client, pair["refresh_token"])).status_code == 200

    after = await session_row(db, session_of(pair))
    assert after.expires_at > before.expires_at - timedelta(seconds=5)
    assert after.last_used_at > before.last_used_at - timedelta(seconds=5)


async def test_a_refresh_token_past_its_lifetime_is_refused(
    client: httpx.AsyncClient, db: AsyncSession, agent: User
) -> None:
    pair = await login(client)
    await age_the_refresh(db, session_of(pair), timedelta(days=14, seconds=1))

    assert_refused(await refresh(client, pair["refresh_token"]))


async def test_an_unknown_refresh_token_is_refused(client: httpx.AsyncClient, agent: User) -> None:
    await login(client)

    assert_refused(await refresh(client, "not-a-token-anyone-was-given"))


async def test_an_access_token_is_no_refresh_token(client: httpx.AsyncClient, agent: User) -> None:
    pair = await login(client)

    assert_refused(await refresh(client, pair["access_token"][:200]))


async def test_a_deactivated_accounts_refresh_token_is_refused_after_reactivation_too(
    client: httpx.AsyncClient, auth_headers: Any, superuser: User, agent: User
) -> None:
    pair = await login(client)
    boss = auth_headers(superuser)
    for active in (False, True):
        changed = await client.patch(
            f"{API}/users/{uid(agent)}", json={"is_active": active}, headers=boss
        )
        assert changed.status_code == 200, changed.text

    assert_refused(await refresh(client, pair["refresh_token"]))


async def test_a_refresh_body_with_an_unknown_field_is_refused_with_its_name(
    client: httpx.AsyncClient, agent: User
) -> None:
    pair = await login(client)

    response = await client.post(
        REFRESH, json={"refresh_token": pair["refresh_token"], "grant": "x"}
    )

    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["loc"] == ["body", "grant"]


# ---------------------------------------------------------------------- a replaced token again


async def test_a_replaced_token_within_the_grace_period_gets_the_same_pair(
    client: httpx.AsyncClient, agent: User
) -> None:
    pair = await login(client)
    first = (await refresh(client, pair["refresh_token"])).json()

    again = await refresh(client, pair["refresh_token"])

    assert again.status_code == 200, again.text
    assert again.json() == first
    assert (await client.get(ME, headers=bearer(first))).status_code == 200


async def test_a_replaced_token_after_the_grace_period_is_refused(
    client: httpx.AsyncClient, db: AsyncSession, agent: User
) -> None:
    pair = await login(client)
    assert (await refresh(client, pair["refresh_token"])).status_code == 200
    await age_the_refresh(db, session_of(pair), timedelta(seconds=GRACE_SECONDS + 1))

    assert_refused(await refresh(client, pair["refresh_token"]))


async def test_a_replaced_token_after_the_grace_period_revokes_the_whole_session(
    client: httpx.AsyncClient, db: AsyncSession, agent: User
) -> None:
    """Somebody else has a copy: the thief's and the owner's tokens of that session all stop."""
    pair = await login(client)
    newest = (await refresh(client, pair["refresh_token"])).json()
    await age_the_refresh(db, session_of(pair), timedelta(seconds=GRACE_SECONDS + 1))

    await refresh(client, pair["refresh_token"])

    assert_refused(await client.get(ME, headers=bearer(newest)))
    assert_refused(await refresh(client, newest["refresh_token"]))
    assert (await session_row(db, session_of(pair))).revoke_reason == "refresh_reuse"


async def test_a_reuse_revokes_only_its_own_session(
    client: httpx.AsyncClient, db: AsyncSession, agent: User
) -> None:
    stolen = await login(client)
    other_device = await login(client)
    await refresh(client, stolen["refresh_token"])
    await age_the_refresh(db, session_of(stolen), timedelta(seconds=GRACE_SECONDS + 1))

    await refresh(client, stolen["refresh_token"])

    assert (await client.get(ME, headers=bearer(other_device))).status_code == 200


async def test_a_reuse_is_logged_with_the_session_and_without_the_token(
    client: httpx.AsyncClient, db: AsyncSession, agent: User, caplog: pytest.LogCaptureFixture
) -> None:
    pair = await login(client)
    await refresh(client, pair["refresh_token"])
    await age_the_refresh(db, session_of(pair), timedelta(seconds=GRACE_SECONDS + 1))

    with caplog.at_level(logging.WARNING, logger="app.services.sessions"):
        await refresh(client, pair["refresh_token"])

    [record] = [r for r in caplog.records if r.name == "app.services.sessions"]
    assert record.session_id == session_of(pair)
    assert pair["refresh_token"] not in record.getMessage()


async def test_a_token_two_rotations_back_is_refused_even_within_the_grace_period(
    client: httpx.AsyncClient, agent: User
) -> None:
    """Its successor was replaced too: handing that out again would give a dead token."""
    pair = await login(client)
    first = (await refresh(client, pair["refresh_token"])).json()
    assert (await refresh(client, first["refresh_token"])).status_code == 200

    assert_refused(await refresh(client, pair["refresh_token"]))


# ------------------------------------------------------------------ logging out, ending sessions


async def test_logout_voids_the_access_token_at_once(
    client: httpx.AsyncClient, agent: User
) -> None:
    pair = await login(client)

    logged_out = await client.post(f"{API}/auth/logout", headers=bearer(pair))

    assert logged_out.status_code == 204, logged_out.text
    assert_refused(await client.get(ME, headers=bearer(pair)))


async def test_logout_voids_the_refresh_token(client: httpx.AsyncClient, agent: User) -> None:
    pair = await login(client)
    await client.post(f"{API}/auth/logout", headers=bearer(pair))

    assert_refused(await refresh(client, pair["refresh_token"]))


async def test_logout_leaves_the_accounts_other_sessions_alone(
    client: httpx.AsyncClient, agent: User
) -> None:
    leaving, staying = await login(client), await login(client)

    await client.post(f"{API}/auth/logout", headers=bearer(leaving))

    assert (await client.get(ME, headers=bearer(staying))).status_code == 200
    assert (await refresh(client, staying["refresh_token"])).status_code == 200


async def test_ending_another_device_voids_its_tokens_at_once(
    client: httpx.AsyncClient, agent: User
) -> None:
    lost_phone, laptop = await login(client), await login(client)

    ended = await client.delete(f"{SESSIONS}/{session_of(lost_phone)}", headers=bearer(laptop))

    assert ended.status_code == 204, ended.text
    assert_refused(await client.get(ME, headers=bearer(lost_phone)))
    assert_refused(await refresh(client, lost_phone["refresh_token"]))
    assert (await client.get(ME, headers=bearer(laptop))).status_code == 200


async def test_an_ended_session_is_no_longer_listed_nor_ended_twice(
    client: httpx.AsyncClient, agent: User
) -> None:
    gone, here = await login(client), await login(client)
    await client.delete(f"{SESSIONS}/{session_of(gone)}", headers=bearer(here))

    listed = await client.get(SESSIONS, headers=bearer(here))
    again = await client.delete(f"{SESSIONS}/{session_of(gone)}", headers=bearer(here))

    assert session_of(gone) not in {item["id"] for item in listed.json()["items"]}
    assert again.status_code == 404
    assert again.json()["code"] == "session_not_found"


async def test_a_superuser_ending_a_users_session_voids_its_access_token(
    client: httpx.AsyncClient, auth_headers: Any, superuser: User, agent: User
) -> None:
    pair = await login(client)

    ended = await client.delete(
        f"{API}/users/{uid(agent)}/sessions/{session_of(pair)}", headers=auth_headers(superuser)
    )

    assert ended.status_code == 204, ended.text
    assert_refused(await client.get(ME, headers=bearer(pair)))


# ------------------------------------------------------------------------- account changes


async def change_own_password(client: httpx.AsyncClient, pair: dict[str, Any]) -> None:
    changed = await client.patch(
        ME, json={"password": NEW_PASSWORD, "current_password": PASSWORD}, headers=bearer(pair)
    )
    assert changed.status_code == 200, changed.text


async def test_a_password_change_keeps_the_session_it_was_made_in(
    client: httpx.AsyncClient, agent: User
) -> None:
    here = await login(client)

    await change_own_password(client, here)

    assert (await client.get(ME, headers=bearer(here))).status_code == 200
    assert (await refresh(client, here["refresh_token"])).status_code == 200


async def test_a_password_change_ends_every_other_session(
    client: httpx.AsyncClient, db: AsyncSession, agent: User
) -> None:
    elsewhere, here = await login(client), await login(client)

    await change_own_password(client, here)

    assert_refused(await client.get(ME, headers=bearer(elsewhere)))
    assert_refused(await refresh(client, elsewhere["refresh_token"]))
    assert (await session_row(db, session_of(elsewhere))).revoke_reason == "password_change"


async def test_a_deactivation_ends_every_session_of_the_account(
    client: httpx.AsyncClient, db: AsyncSession, auth_headers: Any, superuser: User, agent: User
) -> None:
    first, second = await login(client), await login(client)

    changed = await client.patch(
        f"{API}/users/{uid(agent)}", json={"is_active": False}, headers=auth_headers(superuser)
    )

    assert changed.status_code == 200, changed.text
    for pair in (first, second):
        assert (await session_row(db, session_of(pair))).revoke_reason == "account_change"


async def test_a_login_clears_out_the_users_sessions_that_ended_long_ago(
    client: httpx.AsyncClient, db: AsyncSession, agent: User
) -> None:
    old = await login(client)
    await db.execute(
        update(AuthSession)
        .where(AuthSession.id == session_of(old))
        .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
    )
    await db.commit()

    await login(client)

    assert await db.get(AuthSession, session_of(old), populate_existing=True) is None


# ------------------------------------------------------------- concurrent refreshes, for real

CONCURRENT_REFRESHES = 5


async def test_concurrent_refreshes_with_one_token_all_get_the_same_pair(
    tmp_path: Path, settings: Settings
) -> None:
    """Two tabs (here five) refreshing at the same moment: the first rotates, the others wait
    for its lock and are handed the same pair; none is refused, the session lives on."""
    async with committed_database(tmp_path, "crm_sessions") as url:
        engine = own_engine(url, pool_size=CONCURRENT_REFRESHES + 1)
        try:
            await upgrade_database(engine)
            async with AsyncSession(engine) as session:
                session.add(User(email=AGENT, full_name="Agent", hashed_password=PASSWORD_HASH))
                await session.commit()
            async with client_of(create_app(engine=engine)) as client:
                pair = await login(client)
                answers = await asyncio.gather(
                    *(refresh(client, pair["refresh_token"]) for _ in range(CONCURRENT_REFRESHES))
                )
                bodies = [answer.json() for answer in answers]
                assert [a.status_code for a in answers] == [200] * CONCURRENT_REFRESHES, bodies
                assert all(body == bodies[0] for body in bodies)
                assert (await client.get(ME, headers=bearer(bodies[0]))).status_code == 200
                assert (await refresh(client, bodies[0]["refresh_token"])).status_code == 200
        finally:
            await engine.dispose()


async def test_the_sessions_of_a_user_that_does_not_exist_are_a_404(
    client: httpx.AsyncClient, auth_headers: Any, superuser: User
) -> None:
    response = await client.get(f"{API}/users/987654/sessions", headers=auth_headers(superuser))

    assert response.status_code == 404, response.text
    assert response.json()["code"] == "user_not_found"
