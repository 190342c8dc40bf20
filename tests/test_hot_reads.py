"""The hot reads (app/services/lead_reads.py): a lead, a page and the statistics check the
caller's account in the same statement as the data, and still answer exactly as before for a
deactivated account, a revoked token, a stale superuser hint and a missing lead.

On PostgreSQL these run the compiled statements on the session's raw asyncpg connection, the
road the served app takes (app/services/reader.py); on SQLite, through SQLAlchemy.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy import bindparam, func, literal, select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.config import Settings, use_settings
from app.main import create_app
from app.models import User
from app.services.exceptions import DatabaseUnavailableException
from app.services.reader import AsyncpgReader, CompiledStatements
from app.services.user_service import UserService
from tests.helpers import (
    PASSWORD,
    TEST_DATABASE_URL,
    LeadFactory,
    add_session,
    change_user,
    claims_bearer,
    client_of,
    make_settings,
    postgres_only,
    sql_statements,
    uid,
)
from tests.support import migrate, postgres_fetch, postgres_url, throwaway_database

LEADS = "/api/v1/leads"
STATISTICS = f"{LEADS}/statistics"
HOT_PATHS = ("detail", "list", "statistics")
INVALID = {
    "detail": "The access token is invalid or has expired.",
    "code": "not_authenticated",
}


def postgres_dsn_of(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def path_of(which: str, lead_id: int) -> str:
    return {"detail": f"{LEADS}/{lead_id}", "list": LEADS, "statistics": STATISTICS}[which]


@pytest.fixture
async def agent_lead(make_lead: LeadFactory, agent: User) -> int:
    return uid(await make_lead(owner=agent))


# --- one round trip ---------------------------------------------------------------------------


@pytest.mark.parametrize("which", HOT_PATHS)
@pytest.mark.parametrize("role", ["agent", "superuser"])
async def test_a_hot_read_is_one_statement_with_the_account_check(
    client: httpx.AsyncClient,
    db: AsyncSession,
    settings: Settings,
    agent_lead: int,
    agent: User,
    superuser: User,
    which: str,
    role: str,
) -> None:
    caller = agent if role == "agent" else superuser
    headers = claims_bearer(settings, uid(caller), superuser=role == "superuser")
    async with sql_statements(db) as statements:
        response = await client.get(path_of(which, agent_lead), headers=headers)
    assert response.status_code == 200, response.text
    reads = [s for s in statements if s.lstrip().upper().startswith(("SELECT", "WITH"))]
    assert len(reads) == 1, reads
    assert "users" in reads[0] and ("leads" in reads[0] or "lead_stats" in reads[0])


# --- the account is refused: 401 on every hot path --------------------------------------------


# How an account stops a token it issued: deactivated, or its token version raised (a password
# change). The token is the same either way; only the stored account changed.
REFUSALS = {"deactivated": {"is_active": False}, "token_revoked": {"token_version": 1}}


@pytest.mark.parametrize("which", HOT_PATHS)
@pytest.mark.parametrize("refusal", list(REFUSALS))
async def test_a_refused_account_gets_401_on_every_hot_path(
    client: httpx.AsyncClient,
    db: AsyncSession,
    settings: Settings,
    agent_lead: int,
    agent: User,
    which: str,
    refusal: str,
) -> None:
    agent_id = uid(agent)
    headers = claims_bearer(settings, agent_id, version=0, superuser=False)
    await change_user(db, agent_id, **REFUSALS[refusal])
    response = await client.get(path_of(which, agent_lead), headers=headers)
    assert response.status_code == 401
    assert response.json() == INVALID
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("which", HOT_PATHS)
async def test_a_token_of_a_deleted_account_gets_401_on_every_hot_path(
    client: httpx.AsyncClient, settings: Settings, agent_lead: int, which: str
) -> None:
    response = await client.get(
        path_of(which, agent_lead), headers=claims_bearer(settings, 999_999)
    )
    assert response.status_code == 401
    assert response.json() == INVALID


@pytest.mark.parametrize("which", HOT_PATHS)
async def test_the_current_token_version_still_reads_on_every_hot_path(
    client: httpx.AsyncClient,
    db: AsyncSession,
    settings: Settings,
    agent_lead: int,
    agent: User,
    which: str,
) -> None:
    agent_id = uid(agent)
    await change_user(db, agent_id, token_version=3)
    headers = claims_bearer(settings, agent_id, version=3, superuser=False)
    response = await client.get(path_of(which, agent_lead), headers=headers)
    assert response.status_code == 200, response.text


# --- bad parameters from a refused account: still 401 first -------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        f"{LEADS}?limit=abc",  # the query model refuses it
        f"{LEADS}?tags=%20",  # the filters refuse it while the statement is built
        f"{LEADS}?cursor=not-a-cursor-of-ours",  # the cursor is refused
        f"{LEADS}?colour=red",  # a parameter the operation does not declare
        f"{LEADS}/1?colour=red",
        f"{STATISTICS}?colour=red",
    ],
)
async def test_a_deactivated_account_with_bad_parameters_hears_401_not_422(
    client: httpx.AsyncClient, db: AsyncSession, settings: Settings, agent: User, path: str
) -> None:
    agent_id = uid(agent)
    headers = claims_bearer(settings, agent_id, superuser=False)
    await change_user(db, agent_id, is_active=False)
    response = await client.get(path, headers=headers)
    assert response.status_code == 401, response.text


@pytest.mark.parametrize(
    "path", [f"{LEADS}?limit=abc", f"{LEADS}?tags=%20", f"{LEADS}?cursor=x", f"{LEADS}?colour=red"]
)
async def test_an_active_account_with_bad_parameters_hears_422(
    client: httpx.AsyncClient, settings: Settings, agent: User, path: str
) -> None:
    response = await client.get(path, headers=claims_bearer(settings, uid(agent), superuser=False))
    assert response.status_code == 422, response.text


# --- a missing lead, and one that is not the caller's ---------------------------------------------


async def test_a_missing_lead_is_404_for_an_active_caller(
    client: httpx.AsyncClient, settings: Settings, superuser: User
) -> None:
    headers = claims_bearer(settings, uid(superuser), superuser=True)
    response = await client.get(f"{LEADS}/987654", headers=headers)
    assert response.status_code == 404
    assert response.json()["code"] == "lead_not_found"


async def test_another_agents_lead_reads_as_missing(
    client: httpx.AsyncClient, settings: Settings, agent_lead: int, other_agent: User
) -> None:
    headers = claims_bearer(settings, uid(other_agent), superuser=False)
    response = await client.get(f"{LEADS}/{agent_lead}", headers=headers)
    assert response.status_code == 404


async def test_a_missing_lead_for_a_deactivated_account_is_401_not_404(
    client: httpx.AsyncClient, db: AsyncSession, settings: Settings, agent: User
) -> None:
    agent_id = uid(agent)
    headers = claims_bearer(settings, agent_id, superuser=False)
    await change_user(db, agent_id, is_active=False)
    response = await client.get(f"{LEADS}/987654", headers=headers)
    assert response.status_code == 401


# --- the superuser hint is only a hint ------------------------------------------------------------


@pytest.mark.parametrize("which", ["list", "statistics"])
async def test_a_demoted_superusers_old_token_sees_only_their_own_leads(
    client: httpx.AsyncClient,
    db: AsyncSession,
    settings: Settings,
    make_lead: LeadFactory,
    agent: User,
    make_user: Callable[..., Any],
    which: str,
) -> None:
    boss = await make_user(superuser=True)
    boss_id = uid(boss)
    await make_lead(owner=agent)
    await make_lead(owner=boss)
    headers = claims_bearer(settings, boss_id, superuser=True)
    await change_user(db, boss_id, is_superuser=False)
    response = await client.get(path_of(which, 0), headers=headers)
    assert response.status_code == 200
    body = response.json()
    if which == "list":
        assert [item["assigned_to"] for item in body["items"]] == [boss_id]
    else:
        assert body["total_leads"] == 1


@pytest.mark.parametrize("which", ["list", "statistics"])
async def test_a_promoted_agents_old_token_sees_every_lead(
    client: httpx.AsyncClient,
    db: AsyncSession,
    settings: Settings,
    make_lead: LeadFactory,
    agent: User,
    other_agent: User,
    which: str,
) -> None:
    await make_lead(owner=agent)
    await make_lead(owner=other_agent)
    agent_id = uid(agent)
    headers = claims_bearer(settings, agent_id, superuser=False)
    await change_user(db, agent_id, is_superuser=True)
    response = await client.get(path_of(which, 0), headers=headers)
    assert response.status_code == 200
    body = response.json()
    assert (body["total"] if which == "list" else body["total_leads"]) == 2


@pytest.mark.parametrize("which", HOT_PATHS)
@pytest.mark.parametrize("role", ["agent", "superuser"])
async def test_a_token_without_the_hint_reads_as_its_account_allows(
    client: httpx.AsyncClient,
    settings: Settings,
    make_lead: LeadFactory,
    agent: User,
    other_agent: User,
    superuser: User,
    which: str,
    role: str,
) -> None:
    """Tokens issued before the hint existed carry none: the account's own flag decides."""
    lead = uid(await make_lead(owner=agent))
    await make_lead(owner=other_agent)
    caller = agent if role == "agent" else superuser
    response = await client.get(path_of(which, lead), headers=claims_bearer(settings, uid(caller)))
    assert response.status_code == 200, response.text
    body = response.json()
    if which == "list":
        assert body["total"] == (1 if role == "agent" else 2)
    elif which == "statistics":
        assert body["total_leads"] == (1 if role == "agent" else 2)
    else:
        assert body["id"] == lead


async def test_a_forged_hint_grants_nothing(
    client: httpx.AsyncClient,
    settings: Settings,
    make_lead: LeadFactory,
    agent: User,
    other_agent: User,
) -> None:
    """The hint is signed like the rest of the token, and even so it is only compared with
    the stored flag: an agent's token claiming superuser still reads only the agent's leads."""
    theirs = uid(await make_lead(owner=other_agent))
    await make_lead(owner=agent)
    headers = claims_bearer(settings, uid(agent), superuser=True)
    page = await client.get(LEADS, headers=headers)
    assert page.status_code == 200 and page.json()["total"] == 1
    assert (await client.get(f"{LEADS}/{theirs}", headers=headers)).status_code == 404
    statistics = await client.get(STATISTICS, headers=headers)
    assert statistics.json()["total_leads"] == 1


# --- pages ---------------------------------------------------------------------------------------


async def test_an_empty_page_still_counts_the_matches_before_it(
    client: httpx.AsyncClient, settings: Settings, make_lead: LeadFactory, superuser: User
) -> None:
    for _ in range(3):
        await make_lead()
    headers = claims_bearer(settings, uid(superuser), superuser=True)
    response = await client.get(f"{LEADS}?skip=10", headers=headers)
    assert response.status_code == 200
    body = response.json()
    assert body["items"] == [] and body["total"] == 3 and body["next_cursor"] is None


async def test_a_page_kept_for_one_agent_is_never_served_to_another(
    client: httpx.AsyncClient,
    settings: Settings,
    make_lead: LeadFactory,
    agent: User,
    other_agent: User,
    superuser: User,
) -> None:
    """The same query from each caller in turn: every one sees exactly their own leads (page
    statements are kept by role, scope and query: `_PAGE_STATEMENTS`)."""
    mine = {uid(await make_lead(owner=agent, status="NEW")) for _ in range(2)}
    theirs = {uid(await make_lead(owner=other_agent, status="NEW"))}
    query = {"status": "NEW", "limit": 10}
    for _ in range(2):
        for caller, expected in ((agent, mine), (other_agent, theirs), (superuser, mine | theirs)):
            headers = claims_bearer(settings, uid(caller), superuser=caller.is_superuser)
            body = (await client.get(LEADS, params=query, headers=headers)).json()
            assert {item["id"] for item in body["items"]} == expected
            assert body["total"] == len(expected)


async def test_a_page_served_again_shows_the_leads_as_they_are_now(
    client: httpx.AsyncClient, settings: Settings, make_lead: LeadFactory, agent: User
) -> None:
    headers = claims_bearer(settings, uid(agent), superuser=False)
    query = {"status": "NEW"}
    await make_lead(owner=agent, status="NEW")
    assert (await client.get(LEADS, params=query, headers=headers)).json()["total"] == 1
    await make_lead(owner=agent, status="NEW")
    assert (await client.get(LEADS, params=query, headers=headers)).json()["total"] == 2


async def test_a_changed_count_cap_applies_to_a_page_served_before(
    client: httpx.AsyncClient, settings: Settings, make_lead: LeadFactory, agent: User
) -> None:
    headers = claims_bearer(settings, uid(agent), superuser=False)
    for _ in range(5):
        await make_lead(owner=agent)
    with use_settings(settings.model_copy(update={"total_count_cap": 2})):
        capped = (await client.get(LEADS, headers=headers)).json()
    assert (capped["total"], capped["total_is_exact"]) == (2, False)
    body = (await client.get(LEADS, headers=headers)).json()
    assert (body["total"], body["total_is_exact"]) == (5, True)


@pytest.fixture
async def zeds(settings: Settings, make_lead: LeadFactory, superuser: User) -> dict[str, str]:
    """Five leads named Zed (tagged zed) among three others; a superuser's headers."""
    for _ in range(5):
        await make_lead(first_name="Zed", tags=["zed"])
    for _ in range(3):
        await make_lead(first_name="Ann")
    return claims_bearer(settings, uid(superuser), superuser=True)


# A search counts a short page from its own rows; other filters always run the count
# (`page_with_total`): each is checked both ways.
SEARCHING = pytest.mark.parametrize("search", [{"search": "zed"}, {"tags": "zed"}])


@SEARCHING
async def test_a_page_that_is_not_full_counts_the_leads_skipped_and_its_own(
    client: httpx.AsyncClient, zeds: dict[str, str], search: dict[str, str]
) -> None:
    params = {**search, "skip": 3, "limit": 10}
    body = (await client.get(LEADS, params=params, headers=zeds)).json()
    assert (len(body["items"]), body["total"], body["total_is_exact"]) == (2, 5, True)


@SEARCHING
async def test_a_full_page_counts_the_matches_beyond_it(
    client: httpx.AsyncClient, zeds: dict[str, str], search: dict[str, str]
) -> None:
    params = {**search, "skip": 1, "limit": 2}
    body = (await client.get(LEADS, params=params, headers=zeds)).json()
    assert (len(body["items"]), body["total"]) == (2, 5)


@SEARCHING
async def test_the_last_page_reached_by_cursor_counts_every_match(
    client: httpx.AsyncClient, zeds: dict[str, str], search: dict[str, str]
) -> None:
    """After a cursor a short page is not the count: the leads before the cursor count too."""
    first = (await client.get(LEADS, params={**search, "limit": 3}, headers=zeds)).json()
    params = {**search, "limit": 3, "cursor": first["next_cursor"]}
    last = (await client.get(LEADS, params=params, headers=zeds)).json()
    assert (len(last["items"]), last["total"], last["next_cursor"]) == (2, 5, None)


async def test_a_page_keeps_its_order_and_cursor_through_the_account_join(
    client: httpx.AsyncClient, settings: Settings, make_lead: LeadFactory, superuser: User
) -> None:
    scores = [40, 90, 10, 70, 55]
    for score in scores:
        await make_lead(lead_score=score)
    headers = claims_bearer(settings, uid(superuser), superuser=True)
    first = await client.get(f"{LEADS}?sort_by=lead_score&sort_order=asc&limit=3", headers=headers)
    body = first.json()
    assert [item["lead_score"] for item in body["items"]] == [10, 40, 55]
    second = await client.get(
        f"{LEADS}?sort_by=lead_score&sort_order=asc&limit=3&cursor={body['next_cursor']}",
        headers=headers,
    )
    assert [item["lead_score"] for item in second.json()["items"]] == [70, 90]


# --- the retry on a dead connection (PostgreSQL: the raw asyncpg road) --------------------------


def lent_in_turn(connections: list[Any]) -> tuple[Any, list[Any]]:
    """An `acquire` for AsyncpgReader lending `connections` one per call, and the list of
    those it lent."""
    lent: list[Any] = []

    @contextlib.asynccontextmanager
    async def acquire() -> AsyncIterator[Any]:
        connection = connections[len(lent)]
        lent.append(connection)
        yield connection

    return acquire, lent


@postgres_only
async def test_a_read_on_a_connection_found_dead_before_sending_goes_to_another_once(
    engine: AsyncEngine,
) -> None:
    dead = await asyncpg.connect(postgres_dsn_of(TEST_DATABASE_URL))
    await dead.close()
    live = await asyncpg.connect(postgres_dsn_of(TEST_DATABASE_URL))
    try:
        acquire, lent = lent_in_turn([dead, live])
        reader = AsyncpgReader(CompiledStatements(engine.dialect), acquire, 5.0)
        rows = await reader.rows(select(literal(41) + bindparam("n")), {"n": 1})
    finally:
        await live.close()
    assert rows == [(42,)]
    assert lent == [dead, live]


@postgres_only
async def test_a_read_whose_connection_dies_while_it_runs_is_not_repeated(
    engine: AsyncEngine,
) -> None:
    """Its statement may have been killed on purpose: 503 at once, no second try."""
    victim = await asyncpg.connect(postgres_dsn_of(TEST_DATABASE_URL))
    killer = await asyncpg.connect(postgres_dsn_of(TEST_DATABASE_URL))
    spare = await asyncpg.connect(postgres_dsn_of(TEST_DATABASE_URL))
    try:
        acquire, lent = lent_in_turn([victim, spare])
        reader = AsyncpgReader(CompiledStatements(engine.dialect), acquire, 30.0)
        read = asyncio.create_task(reader.rows(select(func.pg_sleep(20))))
        for _ in range(500):  # until the statement runs in the database (at most 5 s)
            running = await killer.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND state = 'active'",
                victim.get_server_pid(),
            )
            if running:
                break
            await asyncio.sleep(0.01)
        await killer.execute("SELECT pg_terminate_backend($1)", victim.get_server_pid())
        with pytest.raises(DatabaseUnavailableException):
            await asyncio.wait_for(read, 10)
    finally:
        for connection in (victim, killer, spare):
            await connection.close()
    assert lent == [victim]


# --- where the served app's hot reads get their connections ---------------------------------


@postgres_only
@pytest.mark.parametrize(("read_pool_size", "most_connections"), [(0, 2 + 1), (3, 2 + 3 + 1)])
async def test_the_read_pool_adds_at_most_its_size_in_connections(
    read_pool_size: int, most_connections: int
) -> None:
    """The app (its lifespan run, as a server runs it) under concurrent reads opens at most
    DB_POOL_SIZE + DB_READ_POOL_SIZE connections, and the one the live stream LISTENs on; with
    DB_READ_POOL_SIZE=0 the hot reads borrow from SQLAlchemy's pool, and answer the same."""
    async with throwaway_database("crm_read_pool") as name:
        await migrate(name)
        settings = make_settings(
            database_url=postgres_url(name), db_pool_size=2, db_read_pool_size=read_pool_size
        )
        with use_settings(settings):
            app = create_app()
            async with app.router.lifespan_context(app):
                async with app.state.session_factory() as db:
                    boss = await UserService.create_user(
                        db,
                        {
                            "email": "b@x.io",
                            "full_name": "B",
                            "password": PASSWORD,
                            "is_superuser": True,
                        },
                        acting_user_id=None,
                    )
                    boss_id = boss.id
                    session = await add_session(db, boss_id)
                headers = claims_bearer(settings, boss_id, superuser=True, session=session)
                async with client_of(app) as client:
                    created = await client.post(
                        LEADS,
                        headers=headers,
                        json={"first_name": "A", "last_name": "B", "phone": "5550100"},
                    )
                    paths = [f"{LEADS}/{created.json()['id']}", LEADS, STATISTICS] * 10
                    answers = await asyncio.gather(*(client.get(p, headers=headers) for p in paths))
                connections = await postgres_fetch(
                    name,
                    "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database()",
                )
    assert [a.status_code for a in answers] == [200] * len(paths)
    assert connections[0]["n"] - 1 <= most_connections  # less the query's own connection
