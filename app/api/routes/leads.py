"""/leads: HTTP in, LeadService call, HTTP out. No queries and no rules live here."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response, status
from fastapi.responses import StreamingResponse
from pydantic import MISSING

from app.api.deps import (
    CurrentUser,
    ReadAccess,
    SessionDep,
    Sessions,
    WriteAccess,
    WriteSessions,
)
from app.api.errors import (
    ETAG_HEADER,
    NOT_MODIFIED,
    REPLAYED_HEADER,
    created_at,
    error_responses,
    lead_answer,
    replayable,
)
from app.api.idempotency import OnceDep
from app.api.preconditions import IfMatch, IfNoneMatch
from app.api.render import (
    bulk_or_preview_response,
    lead_or_not_modified,
    lead_response,
    model_response,
    page_response,
)
from app.api.uploads import uploaded_file
from app.schemas.common import MAX_ID, given
from app.schemas.duplicates import DuplicateCandidates, LeadMerge, LeadMergeResult
from app.schemas.filters import LeadExportQuery, LeadListQuery
from app.schemas.history import LeadHistoryPage, LeadHistoryQuery, LeadStatusHistory
from app.schemas.lead import (
    BulkAssign,
    BulkPreview,
    BulkResult,
    BulkStatusUpdate,
    CallCreate,
    LeadCreate,
    LeadPage,
    LeadRead,
    LeadStatistics,
    LeadUpdate,
    NoteCreate,
    RescoreRequest,
    RescoreResult,
)
from app.schemas.lead_import import ImportJob, ImportQuery, ImportReport
from app.schemas.scores import LeadScore
from app.services import LeadService
from app.services.duplicate_candidates import DuplicateCandidates as Candidates
from app.services.lead_changes import LeadChanges
from app.services.lead_creation import LeadCreation
from app.services.lead_duplicates import OnDuplicate
from app.services.lead_export import LeadExport, csv_chunks, jsonl_chunks, lead_batches
from app.services.lead_history import LeadHistory
from app.services.lead_imports import ImportOptions, LeadImports
from app.services.lead_merges import LeadMerges
from app.services.lead_reads import LeadReads
from app.services.lead_rescore import LeadRescore
from app.services.lead_scores import LeadScores

router = APIRouter(prefix="/leads", tags=["leads"])

LeadId = Annotated[int, Path(ge=1, le=MAX_ID, description="The lead's id.")]


LEAD_ERRORS = error_responses(401, 403, 404, 422)
# 400: the body is not JSON text at all (not UTF-8, nested too deeply); 413: it is over the limit.
WRITE_ERRORS = error_responses(400, 401, 403, 404, 409, 413, 422)
# A write to one lead also reads If-Match: 400 malformed, 412 stale, 428 missing when required.
CONDITIONAL_ERRORS = error_responses(400, 412, 428)
ONE_LEAD_WRITE = {**lead_answer(), **WRITE_ERRORS, **CONDITIONAL_ERRORS}
# 400 also for a malformed Idempotency-Key; 409 while its first request runs; 422 for a key
# first used with another request.
ONE_LEAD_ADDITION = {**ONE_LEAD_WRITE, **lead_answer(idempotent=True)}


@router.get(
    "",
    summary="List leads",
    response_model=LeadPage,
    status_code=status.HTTP_200_OK,
    responses=error_responses(401, 422),
)
async def list_leads(access: ReadAccess, query: Annotated[LeadListQuery, Query()]) -> Response:
    """Leads matching every filter given. `status`, `source` and `tags` may repeat
    (`?status=NEW&status=CONTACTED`); tags match leads having any of them. Agents see only
    their own leads. Walk a large result with `cursor` (from `next_cursor`, with the same
    filters and sort), not `skip`.

    Refused with 422 although the schema alone allows them: a `cursor` this API did not hand
    out, or one made for other filters or another sort; `cursor` together with `skip`; a
    `date_range_end` before `date_range_start`; a `lead_score_max` below `lead_score_min`."""
    page = await LeadReads.page(access.reader, query, query, access.claims)
    return page_response(
        page.items,
        total=page.total,
        total_is_exact=page.total_is_exact,
        skip=query.skip,
        limit=query.limit,
        next_cursor=page.next_cursor,
    )


@router.post(
    "",
    summary="Create a lead",
    response_model=LeadRead,
    status_code=status.HTTP_201_CREATED,
    responses={
        **created_at("lead", ETag=ETAG_HEADER, **{"Idempotent-Replayed": REPLAYED_HEADER}),
        **WRITE_ERRORS,
    },
)
async def create_lead(
    body: LeadCreate,
    access: WriteAccess,
    request: Request,
    once: OnceDep,
    sessions: WriteSessions,
    on_duplicate: Annotated[
        OnDuplicate,
        Query(
            description="reject (default): 409 `duplicate` when a live lead you may see has "
            "this email (in any case) or phone, naming them in `duplicates`; allow: create "
            "it anyway."
        ),
    ] = OnDuplicate.REJECT,
) -> Response:
    """Scored automatically unless `lead_score` is given. An agent's lead is assigned to the
    agent; a superuser may name any active user in `assigned_to`, or have an assignment rule
    pick one (`assignment_rule_id`; 404 for a rule that does not exist).

    Refused with 422 although the schema alone allows them: an email whose syntax is invalid
    (the check is stricter than JSON Schema's `format: email`), and a lead with neither an
    email nor a phone number (a blank one counts as none).

    An agent is only told of their own leads: another agent's lead with the same email is not
    revealed, and the lead is created.

    With an `Idempotency-Key`, a retry of the same request gets the first answer again and
    creates nothing: 422 if the key was first used with another body, 409 while the first
    request still runs."""
    # The new lead's URL is this one plus its id (what `url_for("get_lead")` gives, root path
    # included, at a fraction of the cost of searching the routes for it).
    leads_url = request.url.path.rstrip("/")

    def render(lead: Any) -> Response:
        location = {"Location": f"{leads_url}/{lead.id}"}
        return lead_response(lead, status_code=status.HTTP_201_CREATED, headers=location)

    async with once.run(access.claims.user_id, render) as outcome:
        if body.assignment_rule_id is MISSING:
            lead: Any = await LeadCreation.create(
                access.writer, body, access.claims, on_duplicate=on_duplicate
            )
        else:
            async with sessions() as db:
                lead = await LeadService.create_lead(
                    db,
                    body.lead_data(),
                    access.claims.user_id,
                    on_duplicate=on_duplicate,
                    assignment_rule_id=body.assignment_rule_id,
                )
    return outcome.or_render(render, lead)


EXPORT_ANSWER = {
    "description": "The leads, streamed: CSV (a header row, then one row per lead) or JSON "
    "Lines (one lead per line, as GET /leads/{id} answers it).",
    "content": {
        "text/csv": {"schema": {"type": "string"}},
        "application/x-ndjson": {"schema": {"type": "string"}},
    },
    "headers": {
        "Content-Disposition": {
            "description": 'attachment; filename="leads-YYYYMMDD.csv" (or .jsonl)',
            "schema": {"type": "string"},
        }
    },
}
EXPORT_MEDIA_TYPES = {"csv": "text/csv; charset=utf-8", "jsonl": "application/x-ndjson"}


IMPORT_PATH = "/leads/import"
CSV_EXAMPLE = "First Name,Last Name,E-mail,Company Name\nAda,Lovelace,ada@example.com,Acme\n"
CSV_FILE = {"type": "string", "description": "The CSV file, UTF-8 (with or without a BOM)."}
IMPORT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "text/csv": {"schema": CSV_FILE, "example": CSV_EXAMPLE},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {**CSV_FILE, "format": "binary"}},
                    "required": ["file"],
                    "additionalProperties": False,
                },
                "example": {"file": CSV_EXAMPLE},
            },
        },
    }
}
QUEUED = {
    202: {
        "model": ImportJob,
        "description": "The file has more than IMPORT_SYNC_MAX_ROWS rows: it is imported in the "
        "background. Poll the import at `Location` for its progress and report.",
        "headers": {"Location": {"description": "The import's URL.", "schema": {"type": "string"}}},
    }
}


@router.post(
    "/import",
    summary="Import leads from a CSV file",
    response_model=ImportReport,
    status_code=status.HTTP_200_OK,
    responses={**QUEUED, **error_responses(401, 403, 413, 422)},
    openapi_extra=IMPORT_BODY,
)
async def import_leads(
    request: Request, db: SessionDep, user: CurrentUser, query: Annotated[ImportQuery, Query()]
) -> Any:
    """The file as the body (`Content-Type: text/csv`) or as the form field `file`. Its header
    row names the columns (`First Name`, `E-mail`, `Phone Number`, `Company Name`, `Lead Source`,
    `Tags`, ... in any case; `mapping` names others); every row is checked as `POST /leads`
    checks a lead, and the report lists each refused row with its number, column, value and
    why. An agent's rows are their own leads; in upsert mode they update only the agent's own.

    A file of up to IMPORT_SYNC_MAX_ROWS rows is imported at once (200, the report); a larger
    one in the background (202, `Location: /api/v1/imports/{id}`).

    Refused with 422 although the schema alone allows them: a file that is not UTF-8 CSV with
    a first and last name column, more rows than IMPORT_MAX_ROWS, and (a file imported at
    once) with on_error=abort any refused row: nothing is imported then. 413 past
    IMPORT_MAX_BYTES."""
    content = await uploaded_file(request)
    options = ImportOptions(
        mode=query.mode,
        on_error=query.on_error,
        dry_run=query.dry_run,
        delimiter=query.delimiter,
        mapping=query.mapping_dict(),
    )
    answer = await LeadImports.run(db, content, user.id, options)
    if not answer.queued:
        return ImportReport.model_validate(answer.body)
    job = ImportJob.model_validate(answer.body)
    location = str(request.url_for("get_import", import_id=job.import_id).path)
    return model_response(job, status_code=status.HTTP_202_ACCEPTED, headers={"Location": location})


@router.get(
    "/export",
    summary="Export leads",
    response_class=StreamingResponse,
    status_code=status.HTTP_200_OK,
    responses={200: EXPORT_ANSWER, **error_responses(401, 422)},
)
async def export_leads(
    access: ReadAccess, sessions: Sessions, query: Annotated[LeadExportQuery, Query()]
) -> StreamingResponse:
    """Every lead matching the filters (`GET /leads`'s) that the caller may see (an agent: their
    own), in id order, as one consistent snapshot, streamed however many there are. CSV has
    every field of a lead; tags are joined with `;`, times are ISO 8601 UTC, and a text cell
    starting with `=`, `+`, `-`, `@`, a tab or a carriage return gets a `'` in front, so no
    spreadsheet runs it as a formula (the import takes it off again)."""
    scope = await LeadExport.scope(access.reader, access.claims)
    batches = lead_batches(sessions, query, scope)
    chunks = (
        jsonl_chunks(batches) if query.format == "jsonl" else csv_chunks(batches, bom=query.bom)
    )
    name = LeadExport.file_name(query.format)
    return StreamingResponse(
        chunks,
        media_type=EXPORT_MEDIA_TYPES[query.format],
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


@router.get(
    "/statistics",
    summary="Pipeline statistics",
    response_model=LeadStatistics,
    status_code=status.HTTP_200_OK,
    responses=error_responses(401),
)
async def get_lead_statistics(access: ReadAccess) -> LeadStatistics:
    """Counts by status and source, average score, hot leads and conversion rate over the
    leads the caller may see, archived ones left out."""
    return LeadStatistics(**await LeadReads.statistics(access.reader, access.claims))


BULK_ANSWER = replayable(
    "With `lead_ids`, or `filter` and `expected_count`: the leads changed (`BulkResult`). "
    "With `filter` and `dry_run: true`: how many leads the filter matches (`BulkPreview`); "
    "nothing was changed."
)


@router.post(
    "/bulk/status",
    summary="Set the status of many leads",
    response_model=BulkResult | BulkPreview,
    status_code=status.HTTP_200_OK,
    responses={**BULK_ANSWER, **WRITE_ERRORS},
)
async def bulk_update_status(
    body: BulkStatusUpdate, db: SessionDep, user: CurrentUser, once: OnceDep
) -> Response:
    """All or nothing: if any id is missing, not the caller's, or archived, nothing changes.

    By filter: `{"filter": {...}, "status": ..., "dry_run": true}` answers `{"matched": N}`
    and changes nothing; then the same body with `"expected_count": N` instead of `dry_run`
    changes exactly the N live leads the filter matches (an agent's: their own), or nothing:
    409 `match_count_changed` with `matched` (the count now) if the filter matches another
    number of leads by then, 422 naming `filter` past BULK_MAX_IDS matches.

    Refused with 422 although the schema alone allows them: `filter.include_archived: true`
    (archived leads cannot be changed in bulk), a `filter` with crossed date or score ranges.
    Takes an `Idempotency-Key` (see `POST /leads`)."""
    async with once.run(user.id, bulk_or_preview_response) as outcome:
        if body.filters is None:
            result: list[int] | int = await LeadService.bulk_update_status(
                db,
                given(body.lead_ids),
                body.status,
                user_id=user.id,
                note=given(body.note),
                ids_only=True,
            )
        elif body.dry_run:
            result = await LeadService.count_bulk_matches(db, body.filters, user.id)
        else:
            result = await LeadService.bulk_update_status_by_filter(
                db,
                body.filters,
                body.status,
                user.id,
                expected_count=body.expected_count,
                note=given(body.note),
            )
    return outcome.or_render(bulk_or_preview_response, result)


@router.post(
    "/bulk/assign",
    summary="Assign many leads to an agent",
    response_model=BulkResult | BulkPreview,
    status_code=status.HTTP_200_OK,
    responses={**BULK_ANSWER, **WRITE_ERRORS},
)
async def assign_leads(
    body: BulkAssign, db: SessionDep, user: CurrentUser, once: OnceDep
) -> Response:
    """Superusers only; the agent must exist and be active. All or nothing. By filter as
    `POST /leads/bulk/status` (a `dry_run` first, then `expected_count`), with the same
    refusals. Takes an `Idempotency-Key` (see `POST /leads`)."""
    async with once.run(user.id, bulk_or_preview_response) as outcome:
        if body.filters is None:
            result: list[int] | int = await LeadService.assign_leads(
                db,
                given(body.lead_ids),
                agent_user_id=body.agent_user_id,
                assigned_by_user_id=user.id,
                ids_only=True,
            )
        elif body.dry_run:
            result = await LeadService.count_bulk_matches(db, body.filters, user.id, assigning=True)
        else:
            result = await LeadService.assign_leads_by_filter(
                db,
                body.filters,
                body.agent_user_id,
                user.id,
                expected_count=body.expected_count,
            )
    return outcome.or_render(bulk_or_preview_response, result)


@router.post(
    "/rescore",
    summary="Rescore leads under the current rules",
    response_model=RescoreResult,
    status_code=status.HTTP_200_OK,
    responses=error_responses(400, 401, 403, 409, 413, 422),
)
async def rescore_leads(body: RescoreRequest, db: SessionDep, user: CurrentUser) -> RescoreResult:
    """Superusers only. Computes the automatic score of every live lead the `filter` selects
    (all of them without one) under the scoring rules in force (`GET /leads/{id}/score`'s
    table, FREE_EMAIL_DOMAINS and HIGH_VALUE_TAGS as they are now) and stores it where it
    differs: each such lead gets a note line ("Score 60 → 75 (rescore)"), a `lead.updated`
    event and a new version. Manual scores are never changed. One call changes at most
    BULK_MAX_IDS leads, the lowest ids first, so that it stays short on a large table; the
    rest are `remaining`: call again until it is 0. `dry_run: true` counts and changes
    nothing.

    Refused with 422 although the schema alone allows them: `filter.include_archived: true`
    (archived leads are not rescored), a `filter` with crossed date or score ranges."""
    outcome = await LeadRescore.rescore(db, user.id, given(body.filter), dry_run=body.dry_run)
    return RescoreResult(
        matched=outcome.matched, changed=outcome.changed, remaining=outcome.remaining
    )


@router.get(
    "/{lead_id:int}",
    name="get_lead",
    summary="Read a lead",
    response_model=LeadRead,
    status_code=status.HTTP_200_OK,
    responses={**lead_answer(), **NOT_MODIFIED, **LEAD_ERRORS, **error_responses(400)},
)
async def get_lead(lead_id: LeadId, access: ReadAccess, cached: IfNoneMatch) -> Response:
    """Answers 304 without a body when If-None-Match names the lead's current ETag."""
    lead = await LeadReads.lead(access.reader, lead_id, access.claims)
    return lead_or_not_modified(lead, cached)


@router.get(
    "/{lead_id:int}/history",
    summary="A lead's history",
    response_model=LeadHistoryPage,
    status_code=status.HTTP_200_OK,
    responses=LEAD_ERRORS,
)
async def get_lead_history(
    lead_id: LeadId,
    query: Annotated[LeadHistoryQuery, Query()],
    db: SessionDep,
    user: CurrentUser,
) -> LeadHistoryPage:
    """The lead's events, newest first: what changed (`changes`: old and new value of each
    field), who did it (`actor`), when, and the lead's version after it. `field=status` keeps
    the events that changed the status; `type=lead.note_added` lists the notes. Walk it with
    `cursor` (`next_cursor`, same filters). Refused with 422 although the schema allows it: a
    cursor this API did not hand out, or one made for other filters."""
    page = await LeadHistory.events(db, lead_id, user.id, query)
    return LeadHistoryPage.model_validate(page)


@router.get(
    "/{lead_id:int}/duplicates",
    summary="A lead's likely duplicates",
    response_model=DuplicateCandidates,
    status_code=status.HTTP_200_OK,
    responses=LEAD_ERRORS,
)
async def get_lead_duplicates(
    lead_id: LeadId, db: SessionDep, user: CurrentUser
) -> DuplicateCandidates:
    """Live leads that may be the same person: the same email (case aside) or phone, or a
    first name, last name and company alike this lead's (case and accents aside), each with a
    `score` and what matched. An agent is shown only their own leads. Merge the ones that are
    with `POST /leads/{id}/merge`. An archived lead's candidates stay readable, as the lead
    does."""
    found = await Candidates.of_lead(db, lead_id, user.id)
    return DuplicateCandidates.model_validate({"items": found})


@router.get(
    "/{lead_id:int}/score",
    summary="Why a lead has its score",
    response_model=LeadScore,
    status_code=status.HTTP_200_OK,
    responses=LEAD_ERRORS,
)
async def get_lead_score(lead_id: LeadId, db: SessionDep, user: CurrentUser) -> LeadScore:
    """The points table's lines that apply to the lead (`factors`), which with `base` add up
    to the automatic score before the cap of 100, and `version`, naming the rules in force. A
    manual score is shown as stored, its automatic one beside it. An archived lead's stays
    readable, as the lead does."""
    return LeadScore.model_validate(await LeadScores.explain(db, lead_id, user.id))


@router.get(
    "/{lead_id:int}/history/status",
    summary="Time in each status",
    response_model=LeadStatusHistory,
    status_code=status.HTTP_200_OK,
    responses=LEAD_ERRORS,
)
async def get_lead_status_history(
    lead_id: LeadId, db: SessionDep, user: CurrentUser
) -> LeadStatusHistory:
    """Each status the lead has been in, oldest first, with when it began and ended and how
    many seconds it lasted (the current one: until now)."""
    periods = await LeadHistory.status_periods(db, lead_id, user.id)
    return LeadStatusHistory.model_validate({"items": periods})


@router.patch(
    "/{lead_id:int}",
    summary="Change a lead",
    response_model=LeadRead,
    status_code=status.HTTP_200_OK,
    responses=ONE_LEAD_WRITE,
)
async def update_lead(
    lead_id: LeadId, body: LeadUpdate, access: WriteAccess, if_match: IfMatch
) -> Response:
    """Only the fields sent change, and each change is recorded in the notes. `notes` is
    appended as a new line; `tags` replaces the set.

    Refused with 422 although the schema alone allows them: an email whose syntax is invalid
    (stricter than `format: email`), and a change that would leave the lead with neither an
    email nor a phone number. 409 for an archived lead (restore it first)."""
    lead = await LeadChanges.update(access.writer, lead_id, body, access.claims, if_match)
    return lead_response(lead)


@router.delete(
    "/{lead_id:int}",
    summary="Archive or delete a lead",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses={**error_responses(401, 403, 404, 422), **CONDITIONAL_ERRORS},
)
async def delete_lead(
    lead_id: LeadId,
    db: SessionDep,
    user: CurrentUser,
    if_match: IfMatch,
    hard_delete: Annotated[
        bool, Query(description="Remove the lead for good (superusers only).")
    ] = False,
) -> Response:
    """Archives the lead (soft delete, undone by /restore). `hard_delete=true` removes it for
    good and is for superusers only."""
    await LeadService.delete_lead(
        db, lead_id, user_id=user.id, hard_delete=hard_delete, if_match=if_match
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/{lead_id:int}/restore",
    summary="Restore an archived lead",
    response_model=LeadRead,
    status_code=status.HTTP_200_OK,
    responses={**lead_answer(), **LEAD_ERRORS, **error_responses(409), **CONDITIONAL_ERRORS},
)
async def restore_lead(
    lead_id: LeadId, db: SessionDep, user: CurrentUser, if_match: IfMatch
) -> Response:
    """409 for a lead that was merged into another: unmerge that one instead."""
    lead = await LeadService.restore_lead(db, lead_id, user_id=user.id, if_match=if_match)
    return lead_response(lead)


@router.post(
    "/{lead_id:int}/merge",
    summary="Merge duplicates into a lead",
    response_model=LeadMergeResult,
    status_code=status.HTTP_200_OK,
    responses=WRITE_ERRORS,
)
async def merge_leads(
    lead_id: LeadId, body: LeadMerge, db: SessionDep, user: CurrentUser
) -> LeadMergeResult:
    """Folds the leads in `merge_ids` into this one, in one transaction: fields as `fields`
    says (else this lead's own value, else the first one found), tags united, call attempts
    added, the latest contact date kept, notes interleaved in time order with a line naming
    the merged leads, and the score computed again unless it is manual. The merged leads are
    archived with `merged_into_id`. Each lead gets a `lead.merged` event. A superuser may merge
    any leads, an agent only their own: another's, like a lead that does not exist, is 404,
    whether in the path or in `merge_ids`. 409 if one of them is archived.
    Refused with 422 although the schema allows it: a `fields` value that is neither this
    lead's id nor one of `merge_ids`, `merge_ids` naming this lead or one lead twice, and
    fields that would leave the lead with neither email nor phone."""
    lead, merged = await LeadMerges.merge(
        db, lead_id, body.merge_ids, user_id=user.id, fields=body.fields
    )
    return LeadMergeResult.model_validate({"lead": lead, "merged": merged})


@router.post(
    "/{lead_id:int}/unmerge",
    summary="Undo the last merge into a lead",
    response_model=LeadMergeResult,
    status_code=status.HTTP_200_OK,
    responses=WRITE_ERRORS,
)
async def unmerge_leads(lead_id: LeadId, db: SessionDep, user: CurrentUser) -> LeadMergeResult:
    """Brings back the leads of this lead's last merge and gives every field of every one of
    them the value it had before (from the `lead.merged` events); each gets a `lead.unmerged`
    event. 409 if nothing was merged into it, or if any of them changed since the merge (the
    answer names the change): undoing it would undo that change too."""
    lead, restored = await LeadMerges.unmerge(db, lead_id, user_id=user.id)
    return LeadMergeResult.model_validate({"lead": lead, "merged": restored})


@router.post(
    "/{lead_id:int}/notes",
    summary="Add a note to a lead",
    response_model=LeadRead,
    status_code=status.HTTP_200_OK,
    responses=ONE_LEAD_ADDITION,
)
async def add_lead_note(
    lead_id: LeadId,
    body: NoteCreate,
    db: SessionDep,
    user: CurrentUser,
    if_match: IfMatch,
    once: OnceDep,
) -> Response:
    """Takes an `Idempotency-Key` (see `POST /leads`)."""
    async with once.run(user.id, lead_response) as outcome:
        lead = await LeadService.add_lead_note(
            db, lead_id, body.text, user_id=user.id, if_match=if_match
        )
    return outcome.or_render(lead_response, lead)


@router.post(
    "/{lead_id:int}/calls",
    summary="Record a call attempt",
    response_model=LeadRead,
    status_code=status.HTTP_200_OK,
    responses=ONE_LEAD_ADDITION,
)
async def record_call_attempt(
    lead_id: LeadId,
    db: SessionDep,
    user: CurrentUser,
    if_match: IfMatch,
    once: OnceDep,
    body: CallCreate | None = None,
) -> Response:
    """Adds one to `call_attempts`, sets `last_contact_date` to now, and notes the call.
    Takes an `Idempotency-Key` (see `POST /leads`)."""
    note = given(body.note) if body else None
    async with once.run(user.id, lead_response) as outcome:
        lead = await LeadService.record_call_attempt(
            db, lead_id, user_id=user.id, note=note, if_match=if_match
        )
    return outcome.or_render(lead_response, lead)
