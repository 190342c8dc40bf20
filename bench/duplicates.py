"""Duplicate candidates at a million leads (issue 16): `GET /leads/{id}/duplicates` timed from
one client against one `python -m app` (uvloop + httptools) on PostgreSQL, as a superuser
(every lead is a candidate) and as an agent (their own only), for the same random leads each
time. The floor, in the same run and for the same leads: `GET /leads/{id}`, the cheapest
authenticated read of one lead through the same server. See bench/README.md ("Results, issue
16: duplicate candidates").

    python bench/duplicates.py \\
        --database-url postgresql+asyncpg://postgres@127.0.0.1:5432/crm_bench [--leads 300]

The database is the seeded one of bench/README.md (`seed-demo --leads 1000000 --agents 50`),
whose 40 first names and 40 last names make every name a common one: the hard case for a
trigram search. Each lead is asked for twice, the first pass discarded: the first call on a
new database connection loads `unaccent`'s dictionary (about 80 ms, once per connection).
Prints p50, p95 and max per role, the floor's p50 and the ratio of the two p50s. Target: under
50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402
import httpx  # noqa: E402
import uvloop  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from app.config import normalize_database_url  # noqa: E402
from bench.run import (  # noqa: E402
    API,
    RESULTS_DIR,
    Server,
    admin_token,
    app_env,
    free_port,
    log,
    log_in,
)

AGENT_EMAIL, AGENT_PASSWORD = "agent1@demo.example.com", "demo-agent-password"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python bench/duplicates.py", description=__doc__)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--leads", type=int, default=300, help="random leads per role")
    parser.add_argument("--seed", type=int, default=16)
    return parser.parse_args(argv)


async def pick_leads(dsn: str, count: int, seed: int) -> tuple[list[int], list[int]]:
    """`count` random live leads, and `count` random live leads of the agent's."""
    connection = await asyncpg.connect(dsn)
    try:
        top = await connection.fetchval("SELECT max(id) FROM leads")
        agent = await connection.fetchval("SELECT id FROM users WHERE email = $1", AGENT_EMAIL)
        rng = random.Random(seed)
        sample = rng.sample(range(1, top + 1), min(top, count * 3))
        anyone = await connection.fetch(
            "SELECT id FROM leads WHERE id = ANY($1) AND archived_at IS NULL", sample
        )
        own = await connection.fetch(
            "SELECT id FROM leads WHERE assigned_to = $1 AND archived_at IS NULL", agent
        )
    finally:
        await connection.close()
    own_ids = [row["id"] for row in own]
    return [row["id"] for row in anyone][:count], rng.sample(own_ids, min(count, len(own_ids)))


async def timed(client: httpx.AsyncClient, token: str, paths: list[str]) -> list[float]:
    headers = {"Authorization": f"Bearer {token}"}
    timings = []
    for path in paths:
        began = time.perf_counter()
        response = await client.get(path, headers=headers)
        timings.append((time.perf_counter() - began) * 1000)
        response.raise_for_status()
    return timings


def summary(timings: list[float]) -> dict[str, float]:
    ordered = sorted(timings)
    return {
        "p50_ms": round(statistics.median(ordered), 2),
        "p95_ms": round(ordered[int(len(ordered) * 0.95) - 1], 2),
        "max_ms": round(ordered[-1], 2),
    }


async def measure(client: httpx.AsyncClient, token: str, ids: list[int]) -> dict[str, Any]:
    duplicates = [f"{API}/leads/{i}/duplicates" for i in ids]
    reads = [f"{API}/leads/{i}" for i in ids]
    await timed(client, token, duplicates)  # warm: connections, caches
    await timed(client, token, reads)
    found = await timed(client, token, duplicates)
    floor = await timed(client, token, reads)
    result = {"leads": len(ids), **summary(found), "floor_p50_ms": summary(floor)["p50_ms"]}
    result["ratio_p50_to_floor"] = round(result["p50_ms"] / result["floor_p50_ms"], 1)
    return result


async def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    url = normalize_database_url(args.database_url)
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    anyone, own = await pick_leads(dsn, args.leads, args.seed)
    env = app_env(url, RUN_IMPORT_WORKER="false")
    port = free_port()
    server = Server("duplicates-api", [sys.executable, "-m", "app", "--port", str(port)], env, port)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    try:
        log(f"starting the app (1 worker) on port {port}")
        await server.start("/health/ready")
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            admin = await admin_token(client, env)
            agent = await log_in(client, AGENT_EMAIL, AGENT_PASSWORD)
            if agent is None:
                raise SystemExit(f"error: cannot log in as {AGENT_EMAIL}: seed the database")
            results["superuser"] = await measure(client, admin, anyone)
            log(f"superuser: {results['superuser']}")
            results["agent"] = await measure(client, agent, own)
            log(f"agent: {results['agent']}")
    finally:
        server.stop()
    print(json.dumps(results, indent=2))
    (RESULTS_DIR / "duplicates.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    uvloop.install()
    raise SystemExit(asyncio.run(main()))
