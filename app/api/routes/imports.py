"""/imports: the CSV imports run in the background (issue 16), for their progress and report."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, status

from app.api.deps import CurrentUser, SessionDep
from app.api.errors import error_responses
from app.schemas.common import MAX_ID
from app.schemas.lead_import import ImportJob
from app.services.lead_imports import ImportJobs

router = APIRouter(prefix="/imports", tags=["leads"])

ImportId = Annotated[int, Path(ge=1, le=MAX_ID, description="The import's id.")]


@router.get(
    "/{import_id}",
    summary="Follow an import",
    response_model=ImportJob,
    status_code=status.HTTP_200_OK,
    responses=error_responses(401, 403, 404, 422),
)
async def get_import(import_id: ImportId, db: SessionDep, user: CurrentUser) -> ImportJob:
    """How far the import has got (`processed_rows` of `total_rows`) and, once it has ended,
    its report. Only whoever sent the file, or a superuser, sees it: 404 for anyone else."""
    return ImportJob.model_validate(await ImportJobs.status(db, import_id, user.id))
