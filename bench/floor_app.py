"""The floor: the API's list, detail and statistics responses from the least code that can make
them, to measure the API against on the same machine, database and load.

Starlette + an asyncpg pool + orjson, no auth, no ORM, no validation; the SQL comes from
`bench/queries.py` (the same SQL as the API, count included). `bench/run.py` starts it with

    FLOOR_DATABASE_URL=postgresql://... uvicorn bench.floor_app:app --loop uvloop \\
        --http httptools --port P --workers 1

(uvloop and httptools, like the API and the peer: issue 12.)

Settings (environment): FLOOR_DATABASE_URL (required), FLOOR_POOL_SIZE (connections, default
20 = what one app worker may hold by default: DB_POOL_SIZE 10 + DB_MAX_OVERFLOW 0 +
DB_READ_POOL_SIZE 10), FLOOR_COUNT_CAP (count at most this many matching rows, as issue 5's
capped `total`; empty or 0 = exact counts).

Routes (the API's, minus the /api/v1 prefix):
    GET /leads?status=NEW&limit=50&...&scope=AGENT_ID   (scope: the agent filter the API adds)
    GET /leads/statistics[?scope=AGENT_ID]
    GET /leads/{id}
    GET /health
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import asyncpg
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bench import queries

JSON_OPTIONS = orjson.OPT_UTC_Z


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):  # estimated_value: the API sends money as a JSON number
        return float(value)
    raise TypeError


def _json(content: Any, status_code: int = 200) -> Response:
    return Response(
        orjson.dumps(content, default=_default, option=JSON_OPTIONS),
        status_code=status_code,
        media_type="application/json",
    )


def _count_cap() -> int | None:
    value = os.environ.get("FLOOR_COUNT_CAP", "").strip()
    return int(value) if value and int(value) > 0 else None


COUNT_CAP = _count_cap()


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    size = int(os.environ.get("FLOOR_POOL_SIZE", "20"))
    app.state.pool = await asyncpg.create_pool(
        os.environ["FLOOR_DATABASE_URL"], min_size=size, max_size=size
    )
    try:
        yield
    finally:
        await app.state.pool.close()


def _scope(request: Request) -> int | None:
    scope = request.query_params.get("scope")
    return int(scope) if scope else None


async def list_leads(request: Request) -> Response:
    params: dict[str, Any] = {}
    for name in request.query_params:
        values = request.query_params.getlist(name)
        params[name] = values if name in ("status", "source", "tags") else values[-1]
    query = queries.ListQuery.from_params(params, scope_user_id=_scope(request))
    count, page = queries.count_sql(query, COUNT_CAP), queries.page_sql(query)
    async with request.app.state.pool.acquire() as conn:
        counted = await conn.fetchval(count.text, *count.args)
        rows = await conn.fetch(page.text, *page.args)
    return _json(queries.page_json(rows, counted, query, COUNT_CAP))


async def get_lead(request: Request) -> Response:
    sql = queries.detail_sql(int(request.path_params["lead_id"]))
    async with request.app.state.pool.acquire() as conn:
        row = await conn.fetchrow(sql.text, *sql.args)
    if row is None:
        return _json({"detail": "Lead not found.", "code": "lead_not_found"}, 404)
    return _json(queries.lead_json(row, datetime.now(UTC)))


async def statistics(request: Request) -> Response:
    sql = queries.statistics_sql(_scope(request))
    async with request.app.state.pool.acquire() as conn:
        rows = await conn.fetch(sql.text, *sql.args)
    return _json(queries.statistics_json(rows))


async def health(request: Request) -> Response:
    return _json({"status": "ok"})


app = Starlette(
    routes=[
        Route("/health", health),
        Route("/leads", list_leads),
        Route("/leads/statistics", statistics),
        Route("/leads/{lead_id:int}", get_lead),
    ],
    lifespan=lifespan,
)
