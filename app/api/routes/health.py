"""Health checks for load balancers and orchestrators (outside the /api/v1 prefix)."""

from __future__ import annotations

from fastapi import APIRouter, Request, status
from sqlalchemy import text

from app.api.deps import KnownQuery
from app.api.errors import error_response, error_responses
from app.schemas.common import Health, Readiness

router = APIRouter(tags=["health"], dependencies=[KnownQuery])


@router.get(
    "/health",
    summary="Is the process alive?",
    response_model=Health,
    status_code=status.HTTP_200_OK,
)
async def health() -> Health:
    return Health()


@router.get(
    "/health/ready",
    summary="Can it serve requests?",
    response_model=Readiness,
    status_code=status.HTTP_200_OK,
    responses=error_responses(503),
)
async def ready(request: Request) -> Readiness:
    """200 when the database answers, 503 with the reason when it does not."""
    try:
        async with request.app.state.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception as exc:
        return error_response(  # type: ignore[return-value]
            503, f"The database is not reachable ({type(exc).__name__}).", "database_unavailable"
        )
    return Readiness()
