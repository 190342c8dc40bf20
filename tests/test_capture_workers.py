"""Capture forms and assignment rules across server processes (issue 17): the rate limit and
round robin's turn are held in the database, so they hold whichever process a submission
reaches. Real `python -m app` processes on one database: four on PostgreSQL, two on a SQLite
file; each submission comes from an address of its own (X-Forwarded-For, from a trusted
proxy), except in the rate limit's test."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from tests.helpers import ON_POSTGRES, PASSWORD, TEST_SECRET, wait_for_a_fresh_minute
from tests.support import Server, postgres_url, server_launcher, throwaway_database_sync

ADMIN_EMAIL = "chief@capture.example.com"
API = "/api/v1"
CAPTURES = 100


@dataclass
class Cluster:
    servers: list[Server]
    admin: dict[str, str]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    folder = tmp_path_factory.mktemp("capture")
    settings = {
        "ADMIN_EMAIL": ADMIN_EMAIL,
        "ADMIN_PASSWORD": PASSWORD,
        "SECRET_KEY": TEST_SECRET,
        "FORWARDED_ALLOW_IPS": "127.0.0.1",
        "RUN_WEBHOOK_WORKER": "false",
        "RUN_IMPORT_WORKER": "false",
        "LOG_LEVEL": "WARNING",
    }
    with contextlib.ExitStack() as stack:
        count = 2
        if ON_POSTGRES:
            name = stack.enter_context(throwaway_database_sync("crm_capture", migrated=True))
            settings["DATABASE_URL"] = postgres_url(name)
            count = 4
        start = stack.enter_context(server_launcher(wait_until_ready=True))
        # The first migrates (SQLite) and makes the admin; the others find both done.
        servers = [start(folder, **settings) for _ in range(count)]
        with servers[0].client() as client:
            token = client.post(
                f"{API}/auth/token", data={"username": ADMIN_EMAIL, "password": PASSWORD}
            )
            assert token.status_code == 200, token.text
        yield Cluster(servers, {"Authorization": f"Bearer {token.json()['access_token']}"})


def call(cluster: Cluster, method: str, path: str, **kwargs: object) -> httpx.Response:
    with cluster.servers[0].client() as client:
        response = client.request(method, f"{API}{path}", headers=cluster.admin, **kwargs)  # type: ignore[arg-type]
    assert response.status_code < 300, response.text
    return response


def new_agents(cluster: Cluster, count: int, tag: str) -> list[int]:
    return [
        call(
            cluster,
            "POST",
            "/users",
            json={
                "email": f"{tag}{n}@capture.example.com",
                "full_name": f"Agent {tag}{n}",
                "password": PASSWORD,
            },
        ).json()["id"]
        for n in range(count)
    ]


def round_robin_form(cluster: Cluster, agents: list[int], tag: str) -> str:
    rule = call(
        cluster,
        "POST",
        "/assignment-rules",
        json={"name": f"rule {tag}", "strategy": "round_robin", "agent_ids": agents},
    ).json()
    form = call(
        cluster,
        "POST",
        "/capture-forms",
        json={"name": f"form {tag}", "tags": [tag], "assignment_rule_id": rule["id"]},
    ).json()
    return str(form["public_key"])


def assignees_in_order(cluster: Cluster, tag: str) -> list[int]:
    """The assignee of each lead of the form (its tag), in the order the leads were made."""
    leads = call(cluster, "GET", "/leads", params={"tags": tag, "limit": 1000}).json()["items"]
    return [lead["assigned_to"] for lead in sorted(leads, key=lambda lead: lead["id"])]


async def capture(clients: list[httpx.AsyncClient], key: str, n: int, tag: str) -> httpx.Response:
    """Submission `n`, through server n mod N, from an address of its own."""
    return await clients[n % len(clients)].post(
        f"{API}/capture/{key}",
        data={
            "first_name": "Visitor",
            "last_name": f"{tag}{n}",
            "email": f"{tag}{n}@visitor.example",
        },
        headers={"X-Forwarded-For": f"10.{n // 250}.{n % 250}.7"},
    )


@contextlib.asynccontextmanager
async def clients_of(cluster: Cluster) -> Iterator[list[httpx.AsyncClient]]:  # type: ignore[misc]
    async with contextlib.AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(
                httpx.AsyncClient(base_url=server.base_url, timeout=60.0)
            )
            for server in cluster.servers
        ]


async def test_round_robin_over_several_processes_gives_each_active_agent_a_fair_share(
    cluster: Cluster,
) -> None:
    *active, retired = new_agents(cluster, 4, "fair")
    call(cluster, "PATCH", f"/users/{retired}", json={"is_active": False})
    key = round_robin_form(cluster, [*active, retired], "fair")

    async with clients_of(cluster) as clients:
        answers = await asyncio.gather(*(capture(clients, key, n, "fair") for n in range(CAPTURES)))

    assert [a.status_code for a in answers] == [202] * CAPTURES, [
        a.text for a in answers if a.status_code != 202
    ][:3]
    shares = Counter(assignees_in_order(cluster, "fair"))
    assert sum(shares.values()) == CAPTURES
    assert set(shares) == set(active)
    assert sorted(shares.values()) == [33, 33, 34]


def next_in(cycle: list[int], agent: int) -> int:
    return cycle[(cycle.index(agent) + 1) % len(cycle)]


async def test_an_agent_deactivated_mid_run_gets_no_more_and_the_rest_keep_their_turns(
    cluster: Cluster,
) -> None:
    agents = new_agents(cluster, 4, "mid")
    first, second, third, leaving = agents
    key = round_robin_form(cluster, agents, "mid")

    async with clients_of(cluster) as clients:
        done = 0
        a_third_done = asyncio.Event()

        async def counted(n: int) -> httpx.Response:
            nonlocal done
            response = await capture(clients, key, n, "mid")
            done += 1
            if done == CAPTURES // 3:
                a_third_done.set()
            return response

        async def deactivate_after_a_third() -> None:
            await a_third_done.wait()
            await asyncio.to_thread(
                call, cluster, "PATCH", f"/users/{leaving}", json={"is_active": False}
            )

        *answers, _ = await asyncio.gather(
            *(counted(n) for n in range(CAPTURES)), deactivate_after_a_third()
        )
        after = [await capture(clients, key, CAPTURES + n, "mid") for n in range(6)]

    assert [a.status_code for a in [*answers, *after]] == [202] * (CAPTURES + 6)
    order = assignees_in_order(cluster, "mid")
    assert len(order) == CAPTURES + 6
    last_turn = max(i for i, agent in enumerate(order) if agent == leaving)
    # Every lead went to the next agent in turn: of all four until the leaving agent's last
    # lead, of the other three after it (which the six sent after the run show too).
    for i in range(len(order) - 1):
        cycle = agents if i <= last_turn else [first, second, third]
        assert order[i + 1] == next_in(cycle, order[i]), (i, order)
    assert 0 < last_turn < CAPTURES - 6, order
    stayed = Counter(agent for agent in order if agent != leaving)
    assert max(stayed.values()) - min(stayed.values()) <= 1


def test_the_rate_limit_holds_across_processes(cluster: Cluster) -> None:
    form = call(cluster, "POST", "/capture-forms", json={"name": "rate"}).json()
    wait_for_a_fresh_minute()

    answers = []
    for n in range(12):  # alternating between two processes, all from one address
        with cluster.servers[n % 2].client() as client:
            answers.append(
                client.post(
                    f"{API}/capture/{form['public_key']}",
                    data={"first_name": "R", "last_name": f"R{n}", "email": f"r{n}@rate.example"},
                )
            )

    assert [a.status_code for a in answers] == [202] * 10 + [429, 429]
    assert int(answers[-1].headers["Retry-After"]) >= 1
    stored = call(cluster, "GET", "/leads", params={"search": "rate.example"}).json()
    assert stored["total"] == 10
