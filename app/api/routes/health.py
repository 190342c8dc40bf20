"""Health checks for load balancers and orchestrators (outside the /api/v1 prefix).

`/health/ready` answers within READY_DEADLINE_SECONDS (1.5 s) whatever the database does: a
load balancer waits a few seconds at most, and a check that hangs is as bad as one that fails.
It reports the database down only when the database itself does not answer, never because the
app is busy: `app.database.check_database` borrows an idle pooled connection if there is one,
and otherwise opens a connection of its own for the check, so it never queues behind requests
for the pool (with every pooled connection in a slow search it used to wait the pool timeout,
10 s, and then say "unreachable", so a load balancer would have pulled a healthy instance).
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request, status

from app.api.deps import KnownQuery, SettingsDep
from app.api.errors import error_response, error_responses
from app.database import check_database
from app.schemas.common import Health, Readiness
from app.services.faults import reason, record_fault

router = APIRouter(tags=["health"], dependencies=[KnownQuery])

READY_DEADLINE_SECONDS = 1.5


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
async def ready(request: Request, settings: SettingsDep) -> Readiness:
    """200 when the database answers, 503 with the reason when it does not."""
    try:
        async with asyncio.timeout(READY_DEADLINE_SECONDS):
            await check_database(request.app.state.engine, settings)
    except Exception as exc:
        record_fault(exc, "GET /health/ready")
        return error_response(  # type: ignore[return-value]
            503, f"The database is not reachable ({reason(exc)}).", "database_unavailable"
        )
    return Readiness()
