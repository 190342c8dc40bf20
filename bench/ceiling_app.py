"""How fast can `GET /leads/{id}` be on this project's stack, before any of the API's own work?

The floor (`floor_app.py`) is Starlette + asyncpg. The API is FastAPI + SQLAlchemy's async
engine + auth + the service. This app sits between them. Each route is one step further down the
stack the API must use, and none of them checks a token or calls the service. Their req/s, next
to the floor's, show how much of the ratio target each layer leaves:

    /nodb/leads/{id}     FastAPI only: no database, a one-field JSON answer
    /driver/leads/{id}   + a connection from the app's SQLAlchemy pool (`create_engine`: pre-ping,
                         custom plans), the floor's SQL run on the raw asyncpg connection
    /engine/leads/{id}   + the SQL run through SQLAlchemy Core (`conn.execute(text(...))`)
    /session/leads/{id}  + an `AsyncSession` from a dependency, as the API's routes get one

Run it beside the floor and drive both with the benchmark's request list:

    DATABASE_URL=postgresql+asyncpg://postgres@127.0.0.1:5432/crm_bench \\
        uvicorn bench.ceiling_app:app --loop uvloop --http httptools --port 8112 \\
        --log-level warning
    sed 's#/api/v1#/session#' bench/results/requests-detail-superuser.tsv > /tmp/ceiling.tsv
    wrk -t2 -c32 -d8s -s bench/wrk_requests.lua http://127.0.0.1:8112 -- /tmp/ceiling.tsv

(bench/README.md, "The stack's own ceiling", has the figures.)
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends, FastAPI, Request
from fastapi.responses import Response
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.database import create_engine, create_session_factory
from bench import queries
from bench.floor_app import _json

DETAIL_SQL = queries.detail_sql(0).text  # `... WHERE leads.id = $1`
DETAIL = text(DETAIL_SQL.replace("$1", ":lead_id"))


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    app.state.engine = create_engine()
    app.state.read_session_factory = create_session_factory(app.state.engine, read_only=True)
    yield
    await app.state.engine.dispose()


app = FastAPI(lifespan=lifespan)


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    async with request.app.state.read_session_factory() as session:
        yield session


def _lead(row: object) -> Response:
    if row is None:
        return _json({"detail": "Lead not found.", "code": "lead_not_found"}, 404)
    return _json(queries.lead_json(row, datetime.now(UTC)))  # type: ignore[arg-type]


@app.get("/nodb/leads/{lead_id}")
async def no_database(lead_id: int) -> Response:
    return _json({"id": lead_id})


@app.get("/driver/leads/{lead_id}")
async def pool_and_driver(lead_id: int, request: Request) -> Response:
    async with request.app.state.engine.connect() as conn:
        raw = await conn.get_raw_connection()
        row = await raw.driver_connection.fetchrow(DETAIL_SQL, lead_id)
    return _lead(row)


@app.get("/engine/leads/{lead_id}")
async def engine_core(lead_id: int, request: Request) -> Response:
    async with request.app.state.engine.connect() as conn:
        row = (await conn.execute(DETAIL, {"lead_id": lead_id})).mappings().first()
    return _lead(row)


@app.get("/session/leads/{lead_id}")
async def session_core(lead_id: int, db: Annotated[AsyncSession, Depends(get_session)]) -> Response:
    conn = await db.connection()
    row = (await conn.execute(DETAIL, {"lead_id": lead_id})).mappings().first()
    return _lead(row)
