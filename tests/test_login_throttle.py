"""Login throttling: `LOGIN_MAX_FAILURES` failed logins for one email from one client address
within the window lock that pair out (429 with Retry-After) for the lockout period.

The app here allows 3 failures instead of the default 10 (each failure costs an argon2 check);
the first test shows the default.

Time is moved by rewriting the stored failure times (`age_failures`), never by sleeping: that is
exactly what the passing of time looks like to the throttle. The HTTP client comes from
127.0.0.1 (httpx's ASGI transport); `client_from` makes clients at other addresses.

The PostgreSQL test at the end fires many failing logins at once, each on its own connection,
and checks that no more than the limit of them got as far as the password.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import ValidationError
from sqlalchemy import func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.config import Settings, use_settings
from app.database import upgrade_database
from app.models import LoginFailure, User
from app.models.types import utcnow
from app.services import user_service
from app.services.exceptions import AuthenticationException, TooManyAttemptsException
from app.services.login_throttle import REFRESH_ATTEMPTS
from app.services.user_service import LOGIN_FAILED, UserService
from tests.helpers import (
    PASSWORD,
    PASSWORD_HASH,
    app_in_session,
    client_of,
    make_settings,
    postgres_only,
)
from tests.support import (
    own_engine,
    postgres_url,
    run_together,
    server_launcher,
    throwaway_database,
)

TOKEN_URL = "/api/v1/auth/token"
AGENT = "agent@crm.example.com"
WRONG = "not the password at all"
DEFAULT_LIMIT = 10
LIMIT = 3  # LOGIN_MAX_FAILURES of the app here
LOCKOUT = timedelta(minutes=15)  # the default window and lockout
HERE = "127.0.0.1"
ELSEWHERE = "198.51.100.7"

FAILURES = LoginFailure.__table__
ClientFrom = Callable[[str], httpx.AsyncClient]


async def login(client: httpx.AsyncClient, email: str, password: str) -> httpx.Response:
    return await client.post(TOKEN_URL, data={"username": email, "password": password})


async def fail(client: httpx.AsyncClient, email: str = AGENT, times: int = LIMIT) -> None:
    """`times` failed logins, each an ordinary 401."""
    for n in range(times):
        response = await login(client, email, WRONG)
        assert response.status_code == 401, (n, response.text)


async def age_failures(db: AsyncSession, by: timedelta) -> None:
    """Let `by` pass, as far as the stored failures can tell. Row by row in Python, since
    SQLite has no arithmetic on the stored timestamps."""
    rows = (await db.execute(select(FAILURES.c.id, FAILURES.c.failed_at))).all()
    for row_id, failed_at in rows:
        await db.execute(
            update(FAILURES).where(FAILURES.c.id == row_id).values(failed_at=failed_at - by)
        )
    await db.commit()


async def add_failures(
    db: AsyncSession, email: str, address: str, ago: timedelta, count: int
) -> None:
    row = {"email": email, "client_address": address, "failed_at": utcnow() - ago}
    await db.execute(insert(FAILURES), [row] * count)
    await db.commit()


async def failure_count(db: AsyncSession, email: str = AGENT, address: str = HERE) -> int:
    query = select(func.count()).where(
        LoginFailure.email == email, LoginFailure.client_address == address
    )
    return int(await db.scalar(query) or 0)


def assert_locked(response: httpx.Response) -> int:
    """A 429 in the API's error shape with a whole number of seconds to wait; that number."""
    assert response.status_code == 429, response.text
    body = response.json()
    assert set(body) == {"detail", "code"}
    assert body["code"] == "too_many_attempts"
    retry_after = response.headers["Retry-After"]
    assert retry_after.isdigit(), retry_after
    return int(retry_after)


@pytest.fixture
def settings() -> Iterator[Settings]:
    """The settings in force in this module (overrides conftest's): LIMIT failures."""
    with use_settings(make_settings(login_max_failures=LIMIT)) as installed:
        yield installed


@contextlib.asynccontextmanager
async def client_with(
    settings: Settings, engine: AsyncEngine, db: AsyncSession
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of an app with these settings in force, its requests running in the test's
    session."""
    with use_settings(settings):
        async with client_of(app_in_session(engine, db)) as client:
            yield client


@pytest.fixture
async def client_from(app: FastAPI) -> AsyncIterator[ClientFrom]:
    """`client_from(address)`: an HTTP client whose requests come from that address."""
    opened: list[httpx.AsyncClient] = []

    def make(address: str) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=app, client=(address, 40_000))
        opened.append(httpx.AsyncClient(transport=transport, base_url="http://testserver"))
        return opened[-1]

    yield make
    for client in opened:
        await client.aclose()


# ------------------------------------------------------------------------------- the lockout


async def test_by_default_ten_failures_make_even_the_right_password_get_429_with_retry_after(
    engine: AsyncEngine, db: AsyncSession, agent: User
) -> None:
    async with client_with(make_settings(), engine, db) as client:
        await fail(client, times=DEFAULT_LIMIT)

        response = await login(client, AGENT, PASSWORD)

    retry_after = assert_locked(response)
    assert 0 < retry_after <= LOCKOUT.total_seconds()


async def test_the_last_failure_before_the_limit_is_still_an_ordinary_401(
    client: httpx.AsyncClient, agent: User
) -> None:
    await fail(client, times=LIMIT - 1)

    response = await login(client, AGENT, WRONG)

    assert response.status_code == 401
    assert response.json() == {"detail": LOGIN_FAILED, "code": "not_authenticated"}


async def test_a_locked_out_login_does_not_check_the_password(
    client: httpx.AsyncClient, agent: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No argon2 work for a locked pair, so hammering it costs the server next to nothing."""
    await fail(client)
    checked: list[str] = []
    real = user_service.check_password

    async def counting(password: str, hashed: str | None) -> bool:
        checked.append(password)
        return await real(password, hashed)

    monkeypatch.setattr(user_service, "check_password", counting)

    assert_locked(await login(client, AGENT, PASSWORD))
    assert checked == []


async def test_attempts_while_locked_out_are_not_counted(
    client: httpx.AsyncClient, db: AsyncSession, agent: User
) -> None:
    """Otherwise an attacker who keeps trying would keep the owner locked out for ever."""
    await fail(client)

    for password in (WRONG, PASSWORD, WRONG):
        assert_locked(await login(client, AGENT, password))

    assert await failure_count(db) == LIMIT


async def test_unknown_emails_are_locked_out_exactly_like_known_ones(
    client: httpx.AsyncClient, agent: User
) -> None:
    """Same answers in the same order, so the lockout tells nobody which accounts exist."""
    answers: dict[str, list[Any]] = {}
    for email in (AGENT, "nobody@crm.example.com"):
        responses = [await login(client, email, WRONG) for _ in range(LIMIT + 1)]
        answers[email] = [(r.status_code, r.json()["code"]) for r in responses]

    assert answers[AGENT] == answers["nobody@crm.example.com"]
    assert answers[AGENT][-1] == (429, "too_many_attempts")


async def test_the_email_is_compared_case_insensitively(
    client: httpx.AsyncClient, agent: User
) -> None:
    await fail(client, email="  Agent@CRM.Example.com ")

    assert_locked(await login(client, AGENT, PASSWORD))


async def test_a_username_that_is_no_email_is_throttled_without_being_stored(
    client: httpx.AsyncClient, db: AsyncSession
) -> None:
    """People type passwords into the username field; only a digest of it is kept."""
    typed = "hunter2 my secret"
    await fail(client, email=typed)

    assert_locked(await login(client, typed, WRONG))
    stored = set(await db.scalars(select(LoginFailure.email)))
    assert len(stored) == 1
    assert typed not in next(iter(stored))


# --------------------------------------------------------------------------- per pair only


async def test_another_address_can_still_log_in_to_a_locked_out_account(
    client: httpx.AsyncClient, client_from: ClientFrom, agent: User
) -> None:
    await fail(client)

    response = await login(client_from(ELSEWHERE), AGENT, PASSWORD)

    assert response.status_code == 200, response.text


async def test_another_account_can_still_log_in_from_a_locked_out_address(
    client: httpx.AsyncClient, agent: User, other_agent: User
) -> None:
    await fail(client)

    response = await login(client, "other@crm.example.com", PASSWORD)

    assert response.status_code == 200, response.text


async def test_failures_are_counted_per_client_address(
    client: httpx.AsyncClient, client_from: ClientFrom, db: AsyncSession, agent: User
) -> None:
    await fail(client_from(ELSEWHERE), times=3)

    assert await failure_count(db, address=ELSEWHERE) == 3
    assert await failure_count(db, address=HERE) == 0


# ------------------------------------------------------------------------------------- time


async def test_login_works_again_once_the_lockout_has_passed(
    client: httpx.AsyncClient, db: AsyncSession, agent: User
) -> None:
    await fail(client)
    assert_locked(await login(client, AGENT, PASSWORD))

    await age_failures(db, LOCKOUT + timedelta(seconds=1))

    response = await login(client, AGENT, PASSWORD)
    assert response.status_code == 200, response.text


async def test_retry_after_counts_down_to_the_end_of_the_lockout(
    client: httpx.AsyncClient, db: AsyncSession, agent: User
) -> None:
    await fail(client)

    await age_failures(db, LOCKOUT - timedelta(seconds=60))

    assert 55 <= assert_locked(await login(client, AGENT, PASSWORD)) <= 60


async def test_failures_spread_wider_than_the_window_do_not_lock(
    client: httpx.AsyncClient, db: AsyncSession, agent: User
) -> None:
    """Nine failures just over a window ago and one now are ten, but not ten in one window."""
    await add_failures(db, AGENT, HERE, LOCKOUT + timedelta(seconds=30), LIMIT - 1)
    await fail(client, times=1)

    response = await login(client, AGENT, PASSWORD)

    assert response.status_code == 200, response.text


async def test_failures_too_old_to_matter_are_deleted_on_the_pairs_next_attempt(
    client: httpx.AsyncClient, db: AsyncSession, agent: User
) -> None:
    """Old enough: older than a window plus a lockout. Other pairs' rows are left alone."""
    await add_failures(db, AGENT, HERE, 2 * LOCKOUT + timedelta(seconds=1), 5)
    await add_failures(db, AGENT, HERE, 2 * LOCKOUT - timedelta(seconds=30), 2)
    await add_failures(db, AGENT, ELSEWHERE, 2 * LOCKOUT + timedelta(seconds=1), 4)

    await fail(client, times=1)

    assert await failure_count(db) == 2 + 1
    assert await failure_count(db, address=ELSEWHERE) == 4


async def test_a_successful_login_clears_the_pairs_failures(
    client: httpx.AsyncClient, db: AsyncSession, agent: User
) -> None:
    await fail(client, times=LIMIT - 1)
    assert (await login(client, AGENT, PASSWORD)).status_code == 200

    assert await failure_count(db) == 0


async def test_after_a_success_the_count_starts_again_from_zero(
    client: httpx.AsyncClient, agent: User
) -> None:
    await fail(client, times=LIMIT - 1)
    assert (await login(client, AGENT, PASSWORD)).status_code == 200

    await fail(client, times=LIMIT - 1)

    assert (await login(client, AGENT, PASSWORD)).status_code == 200


# --------------------------------------------------------------------------------- settings


SHORT = {"login_max_failures": 2, "login_failure_window_seconds": 60, "login_lockout_seconds": 30}


async def test_the_lockout_follows_the_setting(
    engine: AsyncEngine, db: AsyncSession, agent: User
) -> None:
    async with client_with(make_settings(**SHORT), engine, db) as client:
        await fail(client, times=2)
        assert 0 < assert_locked(await login(client, AGENT, PASSWORD)) <= 30
        await age_failures(db, timedelta(seconds=31))
        response = await login(client, AGENT, PASSWORD)
    assert response.status_code == 200, response.text


async def test_the_window_follows_the_setting(
    engine: AsyncEngine, db: AsyncSession, agent: User
) -> None:
    """Two failures 61 seconds apart are not two within a 60-second window."""
    await add_failures(db, AGENT, HERE, timedelta(seconds=61), 1)
    async with client_with(make_settings(**SHORT), engine, db) as client:
        await fail(client, times=1)
        response = await login(client, AGENT, PASSWORD)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    "setting",
    [
        {"login_max_failures": 0},
        {"login_failure_window_seconds": 0},
        {"login_lockout_seconds": 0},
    ],
    ids=["max-failures", "window", "lockout"],
)
def test_the_throttle_cannot_be_configured_away(setting: dict[str, int]) -> None:
    with pytest.raises(ValidationError):
        Settings(_env_file=None, **setting)


async def test_the_login_route_documents_the_429(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    responses = spec["paths"][TOKEN_URL]["post"]["responses"]
    assert responses["429"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorResponse"
    }


# ------------------------------------------------------------------------- the service alone


async def test_authenticate_without_an_address_is_throttled_too(
    db: AsyncSession, agent: User, settings: Settings
) -> None:
    """Callers that know no address (scripts) share one pair per email: never unthrottled."""
    for _ in range(LIMIT):
        with pytest.raises(AuthenticationException):
            await UserService.authenticate(db, AGENT, WRONG)

    with pytest.raises(TooManyAttemptsException) as locked:
        await UserService.authenticate(db, AGENT, PASSWORD)
    assert locked.value.retry_after > 0


# ---------------------------------------------------------------- PostgreSQL: real races

RACERS = 4 * LIMIT


@postgres_only
async def test_concurrent_failures_never_get_past_the_limit() -> None:
    """Every attempt holds its own connection and all start together, so without the per-pair
    lock most of them would pass the check before any failure was recorded."""
    async with throwaway_database("crm_throttle") as name:
        url = postgres_url(name)
        engine = own_engine(url, pool_size=1)
        try:
            await upgrade_database(engine)
            async with AsyncSession(engine) as session:
                session.add(User(email=AGENT, full_name="Agent", hashed_password=PASSWORD_HASH))
                await session.commit()
        finally:
            await engine.dispose()

        def attempt(session: AsyncSession) -> Any:
            return UserService.authenticate(session, AGENT, WRONG, client_address=ELSEWHERE)

        with use_settings(make_settings(login_max_failures=LIMIT)):
            results = await run_together(url, [attempt] * RACERS, seconds=120)

        engine = own_engine(url, pool_size=1)
        try:
            async with AsyncSession(engine) as session:
                stored = await session.scalar(text("SELECT count(*) FROM login_failures"))
        finally:
            await engine.dispose()

    kinds = [type(result).__name__ for result in results]
    assert kinds.count("AuthenticationException") == LIMIT, kinds
    assert kinds.count("TooManyAttemptsException") == RACERS - LIMIT, kinds
    assert stored == LIMIT


# ------------------------------------------------------------------ one address, many emails

PER_ADDRESS = 5  # LOGIN_MAX_FAILURES_PER_ADDRESS of the app in these tests


@pytest.fixture
def per_address(settings: Settings) -> Iterator[Settings]:
    """The module's settings, with the per-address limit at PER_ADDRESS (installed after
    them, so in force)."""
    with use_settings(
        settings.model_copy(update={"login_max_failures_per_address": PER_ADDRESS})
    ) as installed:
        yield installed


async def spray(client: httpx.AsyncClient, times: int = PER_ADDRESS) -> None:
    """`times` failures, each for an email never tried before."""
    for n in range(times):
        response = await login(client, f"nobody{n}@crm.example.com", WRONG)
        assert response.status_code == 401, (n, response.text)


async def test_failures_spread_over_many_emails_lock_the_address_out(
    per_address: Settings, client_from: ClientFrom, agent: User
) -> None:
    attacker = client_from(ELSEWHERE)
    await spray(attacker)

    assert_locked(await login(attacker, "someone.else@crm.example.com", WRONG))


async def test_a_locked_address_is_refused_the_right_password_too(
    per_address: Settings, client_from: ClientFrom, agent: User
) -> None:
    attacker = client_from(ELSEWHERE)
    await spray(attacker)

    assert_locked(await login(attacker, AGENT, PASSWORD))


async def test_an_address_lockout_leaves_other_addresses_alone(
    per_address: Settings, client_from: ClientFrom, agent: User
) -> None:
    await spray(client_from(ELSEWHERE))

    assert (await login(client_from(HERE), AGENT, PASSWORD)).status_code == 200


async def test_the_address_lockout_lifts_once_its_failures_leave_the_window(
    per_address: Settings, client_from: ClientFrom, db: AsyncSession, agent: User
) -> None:
    attacker = client_from(ELSEWHERE)
    await spray(attacker)
    retry_after = assert_locked(await login(attacker, AGENT, PASSWORD))
    assert 0 < retry_after <= LOCKOUT.total_seconds()

    await age_failures(db, LOCKOUT + timedelta(seconds=1))

    assert (await login(attacker, AGENT, PASSWORD)).status_code == 200


async def test_fewer_failures_than_the_address_limit_lock_nothing(
    per_address: Settings, client_from: ClientFrom, agent: User
) -> None:
    attacker = client_from(ELSEWHERE)
    await spray(attacker, PER_ADDRESS - 1)

    assert (await login(attacker, AGENT, PASSWORD)).status_code == 200


async def test_the_address_limit_defaults_to_50() -> None:
    assert make_settings().login_max_failures_per_address == 50


async def test_old_failures_of_an_address_are_cleared_on_its_next_attempt(
    per_address: Settings, client_from: ClientFrom, db: AsyncSession, agent: User
) -> None:
    """One-off emails are never tried again, so their pairs' rows would pile up under a
    spray: the address's own attempts clear what is too old to count."""
    attacker = client_from(ELSEWHERE)
    await spray(attacker, 3)
    await age_failures(db, LOCKOUT * 2 + timedelta(seconds=1))

    await login(attacker, "fresh@crm.example.com", WRONG)

    stored = await db.scalar(select(func.count()).select_from(FAILURES))
    assert stored == 1


# ------------------------------------------------------------------ refused refresh tokens

REFRESH_URL = "/api/v1/auth/refresh"


async def refresh(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.post(REFRESH_URL, json={"refresh_token": token})


async def guess_refresh_tokens(client: httpx.AsyncClient, times: int = PER_ADDRESS) -> None:
    """`times` refresh tokens made up, each an ordinary 401."""
    for n in range(times):
        response = await refresh(client, f"made-up-refresh-token-{n}")
        assert response.status_code == 401, (n, response.text)


async def test_refused_refresh_tokens_lock_the_address_out_of_refreshing(
    per_address: Settings, client_from: ClientFrom
) -> None:
    attacker = client_from(ELSEWHERE)
    await guess_refresh_tokens(attacker)

    assert_locked(await refresh(attacker, "one-more-guess"))


async def test_a_locked_address_is_refused_a_valid_refresh_token_too(
    per_address: Settings, client_from: ClientFrom, agent: User
) -> None:
    """Else the lockout would tell a right guess from a wrong one."""
    attacker = client_from(ELSEWHERE)
    pair = (await login(attacker, AGENT, PASSWORD)).json()
    await guess_refresh_tokens(attacker)

    assert_locked(await refresh(attacker, pair["refresh_token"]))


async def test_refused_refreshes_count_toward_the_address_limit_of_logins(
    per_address: Settings, client_from: ClientFrom, agent: User
) -> None:
    attacker = client_from(ELSEWHERE)
    await guess_refresh_tokens(attacker, PER_ADDRESS - 1)
    await spray(attacker, 1)

    assert_locked(await login(attacker, AGENT, PASSWORD))


async def test_a_refresh_lockout_leaves_other_addresses_alone(
    per_address: Settings, client_from: ClientFrom, agent: User
) -> None:
    pair = (await login(client_from(HERE), AGENT, PASSWORD)).json()
    await guess_refresh_tokens(client_from(ELSEWHERE))

    assert (await refresh(client_from(HERE), pair["refresh_token"])).status_code == 200


async def test_a_few_refused_refreshes_lock_nothing_though_more_than_the_login_limit(
    per_address: Settings, client_from: ClientFrom, agent: User
) -> None:
    """An office whose tokens all expired overnight sends a refused refresh per browser: only
    the address's looser limit applies, not a pair's LOGIN_MAX_FAILURES."""
    office = client_from(ELSEWHERE)
    pair = (await login(office, AGENT, PASSWORD)).json()
    await guess_refresh_tokens(office, LIMIT + 1)  # under PER_ADDRESS

    assert (await refresh(office, pair["refresh_token"])).status_code == 200


async def test_a_replaced_refresh_token_sent_again_counts_as_refused(
    per_address: Settings, client_from: ClientFrom, db: AsyncSession, agent: User
) -> None:
    client = client_from(ELSEWHERE)
    pair = (await login(client, AGENT, PASSWORD)).json()
    assert (await refresh(client, pair["refresh_token"])).status_code == 200
    with use_settings(per_address.model_copy(update={"refresh_reuse_grace_seconds": 0})):
        assert (await refresh(client, pair["refresh_token"])).status_code == 401

    assert await failure_count(db, email=REFRESH_ATTEMPTS, address=ELSEWHERE) == 1


async def test_a_successful_refresh_records_no_failure(
    per_address: Settings, client_from: ClientFrom, db: AsyncSession, agent: User
) -> None:
    client = client_from(ELSEWHERE)
    pair = (await login(client, AGENT, PASSWORD)).json()
    assert (await refresh(client, pair["refresh_token"])).status_code == 200

    assert await db.scalar(select(func.count()).select_from(FAILURES)) == 0


async def test_the_refresh_route_documents_the_429(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    responses = spec["paths"][REFRESH_URL]["post"]["responses"]
    assert responses["429"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorResponse"
    }


# ------------------------------------------------------------- a forwarded address, spoofed


def test_a_client_changing_x_forwarded_for_each_try_is_locked_out_all_the_same(
    tmp_path: Path,
) -> None:
    """By default no proxy is trusted (FORWARDED_ALLOW_IPS is empty): the header a local
    client makes up each time is not its address, so its guesses count against one pair."""
    with server_launcher(wait_until_ready=True) as start:
        server = start(tmp_path, LOGIN_MAX_FAILURES=str(LIMIT))
        with server.client() as client:
            answers = [
                client.post(
                    TOKEN_URL,
                    data={"username": AGENT, "password": WRONG},
                    headers={"X-Forwarded-For": f"203.0.113.{n}"},
                ).status_code
                for n in range(LIMIT + 1)
            ]

    assert answers == [401] * LIMIT + [429]


# ---------------------------------------------------------------- a flood of password checks


async def test_a_login_that_gets_no_turn_at_the_password_checks_gets_503_and_retry_after(
    app: FastAPI, client: httpx.AsyncClient, agent: User, settings: Settings
) -> None:
    turns = app.state.login_turns
    for _ in range(settings.login_hash_concurrency):
        await turns.acquire()  # every turn taken, as by a flood of other logins
    try:
        with use_settings(settings.model_copy(update={"login_queue_seconds": 0.05})):
            response = await login(client, AGENT, PASSWORD)
    finally:
        for _ in range(settings.login_hash_concurrency):
            turns.release()

    assert response.status_code == 503, response.text
    assert response.json()["code"] == "login_busy"
    assert response.headers["Retry-After"] == "1"
    assert (await login(client, AGENT, PASSWORD)).status_code == 200


async def test_a_busy_login_records_no_failure(
    app: FastAPI, client: httpx.AsyncClient, db: AsyncSession, agent: User, settings: Settings
) -> None:
    """Refused before the password was looked at: not a guess, so not counted as one."""
    turns = app.state.login_turns
    for _ in range(settings.login_hash_concurrency):
        await turns.acquire()
    try:
        with use_settings(settings.model_copy(update={"login_queue_seconds": 0.05})):
            await login(client, AGENT, WRONG)
    finally:
        for _ in range(settings.login_hash_concurrency):
            turns.release()

    assert await failure_count(db) == 0
