"""The idiomatic peer: the API's list and detail reads written the way a typical tutorial-grade
production FastAPI app writes them, to measure the API against a stack-equal neighbour.

FastAPI + an `AsyncSession` dependency (SQLAlchemy's async engine on asyncpg) + the ORM models
of `app.models` + pydantic `response_model`s (`LeadRead`, `LeadPage`) built with
`model_validate(..., from_attributes=True)` and serialised by FastAPI. The caller is checked as
the API checks it: the API's JWT (`decode_access_token`, the settings' SECRET_KEY), the `User`
loaded with `session.get`, refused unless active and at the token's version; agents see only
their own leads. The SQL is the API's (same WHERE, ORDER BY, LIMIT one more than asked for
`next_cursor`, the count capped at TOTAL_COUNT_CAP), built with `select(Lead)`: no SQL text.

Nothing here is tuned: no custom plans, no raw driver calls, no pre-ping, no hand-made JSON.
It is what the API's ratio to the floor is compared with (issue 12: at least 2x the peer's).
`bench/run.py` starts it with the API's environment (DATABASE_URL, SECRET_KEY):

    uvicorn bench.peer_app:app --loop uvloop --http httptools --port P --workers 1

Pool: DB_POOL_SIZE + DB_MAX_OVERFLOW + DB_READ_POOL_SIZE connections, as many as one API worker
may hold (both its pools), with no overflow, so steady load opens no new connections.

Routes (the API's paths; scenarios list_status, list_filtered, list_deep and detail):
    GET /api/v1/leads?status=NEW&limit=50[&assigned_to=&lead_score_min=&lead_score_max=&skip=]
    GET /api/v1/leads/{lead_id}
    GET /health
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from http import HTTPStatus
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Query
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy import func, literal, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from app.config import get_settings
from app.models import Lead, LeadStatus, User
from app.schemas.filters import LeadFilters, LeadPaging
from app.schemas.lead import LeadPage, LeadRead
from app.services.pagination import encode_cursor
from app.services.security import InvalidToken, decode_access_token

settings = get_settings()
engine = create_async_engine(
    settings.database_url,
    pool_size=settings.db_pool_size + settings.db_max_overflow + settings.db_read_pool_size,
    max_overflow=0,
)
SessionLocal = async_sessionmaker(engine, expire_on_commit=False)
oauth2_scheme = OAuth2PasswordBearer(tokenUrl="/api/v1/auth/token")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield
    await engine.dispose()


app = FastAPI(title="peer", lifespan=lifespan)


async def get_session() -> AsyncIterator[AsyncSession]:
    async with SessionLocal() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session)]


async def get_current_user(
    session: SessionDep, token: Annotated[str, Depends(oauth2_scheme)]
) -> User:
    unauthorized = HTTPException(
        status_code=HTTPStatus.UNAUTHORIZED,
        detail="The access token is invalid or has expired.",
        headers={"WWW-Authenticate": "Bearer"},
    )
    try:
        claims = decode_access_token(token, settings)
    except InvalidToken:
        raise unauthorized from None
    user = await session.get(User, claims.user_id)
    if user is None or not user.is_active or user.token_version != claims.version:
        raise unauthorized
    return user


CurrentUser = Annotated[User, Depends(get_current_user)]


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/api/v1/leads", response_model=LeadPage)
async def list_leads(
    session: SessionDep,
    user: CurrentUser,
    status: Annotated[list[LeadStatus] | None, Query()] = None,
    assigned_to: int | None = None,
    lead_score_min: Annotated[int | None, Query(ge=0, le=100)] = None,
    lead_score_max: Annotated[int | None, Query(ge=0, le=100)] = None,
    skip: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> LeadPage:
    where = []
    if status:
        where.append(Lead.status.in_(status))
    if assigned_to is not None:
        where.append(Lead.assigned_to == assigned_to)
    if not user.is_superuser:
        where.append(Lead.assigned_to == user.id)
    if lead_score_min is not None:
        where.append(Lead.lead_score >= lead_score_min)
    if lead_score_max is not None:
        where.append(Lead.lead_score <= lead_score_max)
    where.append(Lead.archived_at.is_(None))

    cap = settings.total_count_cap
    matching = select(literal(1)).select_from(Lead).where(*where).limit(cap + 1).subquery()
    counted = await session.scalar(select(func.count()).select_from(matching)) or 0
    query = (
        select(Lead)
        .where(*where)
        .order_by(Lead.created_at.desc(), Lead.id.desc())
        .offset(skip)
        .limit(limit + 1)
    )
    leads = list(await session.scalars(query))
    items = leads[:limit]
    next_cursor = None
    if len(leads) > limit:  # the API's cursor, so a client can go on with either server
        paging = LeadPaging(skip=skip, limit=limit)
        filters = LeadFilters(
            status=status,
            assigned_to=assigned_to,
            lead_score_min=lead_score_min,
            lead_score_max=lead_score_max,
        )
        next_cursor = encode_cursor(items[-1], paging, filters.fingerprint(paging))
    return LeadPage(
        items=[LeadRead.model_validate(lead, from_attributes=True) for lead in items],
        total=min(counted, cap),
        total_is_exact=counted <= cap,
        skip=skip,
        limit=limit,
        next_cursor=next_cursor,
    )


@app.get("/api/v1/leads/{lead_id}", response_model=LeadRead)
async def get_lead(lead_id: int, session: SessionDep, user: CurrentUser) -> LeadRead:
    lead = await session.get(Lead, lead_id)
    if lead is None or (not user.is_superuser and lead.assigned_to != user.id):
        raise HTTPException(status_code=HTTPStatus.NOT_FOUND, detail="Lead not found.")
    return LeadRead.model_validate(lead, from_attributes=True)
