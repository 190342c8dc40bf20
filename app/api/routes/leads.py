"""/leads: HTTP in, LeadService call, HTTP out. No queries and no rules live here."""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Response, status
from pydantic import AfterValidator, BeforeValidator

from app.api.deps import CurrentUser, SessionDep
from app.api.errors import error_responses
from app.api.render import lead_response, page_response
from app.models import LeadSource, LeadStatus
from app.schemas.common import SettingLimit, no_nul, to_utc
from app.schemas.lead import (
    MAX_ID,
    BulkAssign,
    BulkResult,
    BulkStatusUpdate,
    CallCreate,
    LeadCreate,
    LeadPage,
    LeadRead,
    LeadStatistics,
    LeadUpdate,
    NoteCreate,
)
from app.services import LeadService
from app.services.exceptions import ValidationException
from app.services.lead_filters import SORT_FIELDS

router = APIRouter(prefix="/leads", tags=["leads"])

LeadId = Annotated[int, Path(ge=1, le=MAX_ID, description="The lead's id.")]
_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _date_or_datetime(value: Any) -> Any:
    """`2026-11-01` is a whole day; anything longer is a point in time."""
    if isinstance(value, str) and _DATE_ONLY.match(value):
        return date.fromisoformat(value)
    return value


def _bound_in_range(value: datetime | date) -> datetime | date:
    """A datetime must exist in UTC; a date must have a next day (an end date covers it whole)."""
    if isinstance(value, datetime):
        return to_utc(value)
    if value >= date.max:
        raise ValueError(f"must be before {date.max.isoformat()}")
    return value


DateBound = Annotated[
    datetime | date, BeforeValidator(_date_or_datetime), AfterValidator(_bound_in_range)
]
SortField = Literal[SORT_FIELDS]  # type: ignore[valid-type]

LIST_PARAMS = frozenset(
    {
        "status",
        "source",
        "assigned_to",
        "date_range_start",
        "date_range_end",
        "lead_score_min",
        "lead_score_max",
        "search",
        "is_hot_leads_only",
        "tags",
        "include_archived",
        "skip",
        "limit",
        "sort_by",
        "sort_order",
        "cursor",
        "exact_total",
    }
)


async def _no_unknown_params(request: Request, user: CurrentUser) -> None:
    """A misspelt filter must not silently return everything. (Takes the user so that an
    anonymous caller hears about the missing token first.)"""
    unknown = sorted(set(request.query_params) - LIST_PARAMS)
    if unknown:
        raise ValidationException(
            f"Unknown query parameter(s): {', '.join(unknown)}.",
            errors=[
                {"loc": ["query", name], "msg": "is not a known parameter"} for name in unknown
            ],
        )


LEAD_ERRORS = error_responses(401, 403, 404, 422)
# 400: the body is not JSON text at all (not UTF-8, nested too deeply); 413: it is over the limit.
WRITE_ERRORS = error_responses(400, 401, 403, 404, 409, 413, 422)


@router.get(
    "",
    summary="List leads",
    response_model=LeadPage,
    status_code=status.HTTP_200_OK,
    responses=error_responses(401, 422),
    dependencies=[Depends(_no_unknown_params)],
)
async def list_leads(
    db: SessionDep,
    user: CurrentUser,
    status_: Annotated[list[LeadStatus] | None, Query(alias="status")] = None,
    source: Annotated[list[LeadSource] | None, Query()] = None,
    assigned_to: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    date_range_start: Annotated[DateBound | None, Query()] = None,
    date_range_end: Annotated[DateBound | None, Query()] = None,
    lead_score_min: Annotated[int | None, Query(ge=0, le=100)] = None,
    lead_score_max: Annotated[int | None, Query(ge=0, le=100)] = None,
    search: Annotated[str | None, Query(max_length=200), AfterValidator(no_nul)] = None,
    is_hot_leads_only: bool = False,
    tags: Annotated[list[str] | None, Query(max_length=50), AfterValidator(no_nul)] = None,
    include_archived: bool = False,
    skip: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
    limit: Annotated[int, Query(ge=1), SettingLimit("page_max_limit")] = 100,
    sort_by: SortField = "created_at",
    sort_order: Literal["asc", "desc"] = "desc",
    cursor: Annotated[
        str | None, Query(max_length=500, description="`next_cursor` of the previous page.")
    ] = None,
    exact_total: Annotated[
        bool, Query(description="Count every match, however many (slow on huge results).")
    ] = False,
) -> Response:
    """Leads matching every filter given. `status`, `source` and `tags` may repeat
    (`?status=NEW&status=CONTACTED`); tags match leads having any of them. Agents see only
    their own leads. Walk a large result with `cursor` (from `next_cursor`), not `skip`."""
    page = await LeadService.list_leads(
        db,
        status=status_,
        source=source,
        assigned_to=assigned_to,
        date_range_start=date_range_start,
        date_range_end=date_range_end,
        lead_score_min=lead_score_min,
        lead_score_max=lead_score_max,
        search=search,
        is_hot_leads_only=is_hot_leads_only,
        tags=tags,
        skip=skip,
        limit=limit,
        sort_by=sort_by,
        sort_order=sort_order,
        user_id=user.id,
        include_archived=include_archived,
        cursor=cursor,
        exact_total=exact_total,
    )
    return page_response(
        page.items,
        total=page.total,
        total_is_exact=page.total_is_exact,
        skip=skip,
        limit=limit,
        next_cursor=page.next_cursor,
    )


@router.post(
    "",
    summary="Create a lead",
    response_model=LeadRead,
    status_code=status.HTTP_201_CREATED,
    responses=WRITE_ERRORS,
)
async def create_lead(
    body: LeadCreate, db: SessionDep, user: CurrentUser, request: Request
) -> Response:
    """Scored automatically unless `lead_score` is given. An agent's lead is assigned to the
    agent; a superuser may name any active user in `assigned_to`."""
    lead = await LeadService.create_lead(db, body, user_id=user.id)
    location = str(request.url_for("get_lead", lead_id=lead.id).path)
    return lead_response(lead, status_code=status.HTTP_201_CREATED, headers={"Location": location})


@router.get(
    "/statistics",
    summary="Pipeline statistics",
    response_model=LeadStatistics,
    status_code=status.HTTP_200_OK,
    responses=error_responses(401),
)
async def lead_statistics(db: SessionDep, user: CurrentUser) -> LeadStatistics:
    """Counts by status and source, average score, hot leads and conversion rate over the
    leads the caller may see, archived ones left out."""
    return LeadStatistics(**await LeadService.get_lead_statistics(db, user_id=user.id))


@router.post(
    "/bulk/status",
    summary="Set the status of many leads",
    response_model=BulkResult,
    status_code=status.HTTP_200_OK,
    responses=WRITE_ERRORS,
)
async def bulk_status(body: BulkStatusUpdate, db: SessionDep, user: CurrentUser) -> BulkResult:
    """All or nothing: if any id is missing, not the caller's, or archived, nothing changes."""
    lead_ids = await LeadService.bulk_update_status(
        db, body.lead_ids, body.status, user_id=user.id, note=body.note, ids_only=True
    )
    return BulkResult(updated_count=len(lead_ids), lead_ids=lead_ids)


@router.post(
    "/bulk/assign",
    summary="Assign many leads to an agent",
    response_model=BulkResult,
    status_code=status.HTTP_200_OK,
    responses=WRITE_ERRORS,
)
async def bulk_assign(body: BulkAssign, db: SessionDep, user: CurrentUser) -> BulkResult:
    """Superusers only; the agent must exist and be active. All or nothing."""
    lead_ids = await LeadService.assign_leads(
        db,
        body.lead_ids,
        agent_user_id=body.agent_user_id,
        assigned_by_user_id=user.id,
        ids_only=True,
    )
    return BulkResult(updated_count=len(lead_ids), lead_ids=lead_ids)


@router.get(
    "/{lead_id}",
    name="get_lead",
    summary="Read a lead",
    response_model=LeadRead,
    status_code=status.HTTP_200_OK,
    responses=LEAD_ERRORS,
)
async def get_lead(lead_id: LeadId, db: SessionDep, user: CurrentUser) -> Response:
    lead = await LeadService.get_lead_by_id(db, lead_id, user_id=user.id, check_assignment=True)
    return lead_response(lead)


@router.patch(
    "/{lead_id}",
    summary="Change a lead",
    response_model=LeadRead,
    status_code=status.HTTP_200_OK,
    responses=WRITE_ERRORS,
)
async def update_lead(
    lead_id: LeadId, body: LeadUpdate, db: SessionDep, user: CurrentUser
) -> Response:
    """Only the fields sent change, and each change is recorded in the notes. `notes` is
    appended as a new line; `tags` replaces the set."""
    lead = await LeadService.update_lead(db, lead_id, body, user_id=user.id)
    return lead_response(lead)


@router.delete(
    "/{lead_id}",
    summary="Archive or delete a lead",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=error_responses(401, 403, 404, 422),
)
async def delete_lead(
    lead_id: LeadId, db: SessionDep, user: CurrentUser, hard_delete: bool = False
) -> Response:
    """Archives the lead (soft delete, undone by /restore). `hard_delete=true` removes it for
    good and is for superusers only."""
    await LeadService.delete_lead(db, lead_id, user_id=user.id, hard_delete=hard_delete)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/{lead_id}/restore",
    summary="Restore an archived lead",
    response_model=LeadRead,
    status_code=status.HTTP_200_OK,
    responses=LEAD_ERRORS,
)
async def restore_lead(lead_id: LeadId, db: SessionDep, user: CurrentUser) -> Response:
    lead = await LeadService.restore_lead(db, lead_id, user_id=user.id)
    return lead_response(lead)


@router.post(
    "/{lead_id}/notes",
    summary="Add a note to a lead",
    response_model=LeadRead,
    status_code=status.HTTP_200_OK,
    responses=WRITE_ERRORS,
)
async def add_note(
    lead_id: LeadId, body: NoteCreate, db: SessionDep, user: CurrentUser
) -> Response:
    lead = await LeadService.add_lead_note(db, lead_id, body.text, user_id=user.id)
    return lead_response(lead)


@router.post(
    "/{lead_id}/calls",
    summary="Record a call attempt",
    response_model=LeadRead,
    status_code=status.HTTP_200_OK,
    responses=WRITE_ERRORS,
)
async def record_call(
    lead_id: LeadId,
    db: SessionDep,
    user: CurrentUser,
    body: CallCreate | None = None,
) -> Response:
    """Adds one to `call_attempts`, sets `last_contact_date` to now, and notes the call."""
    note = body.note if body else None
    lead = await LeadService.record_call_attempt(db, lead_id, user_id=user.id, note=note)
    return lead_response(lead)
