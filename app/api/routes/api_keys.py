"""/api-keys: keys for scripts and integrations, made, listed and revoked by a person who
logged in (never by a key)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response, status

from app.api.deps import Person, SessionDep
from app.api.errors import created_at, error_responses
from app.api.sessions import Paging, SessionPaging
from app.schemas.api_key import ApiKeyCreate, ApiKeyCreated, ApiKeyPage, ApiKeyRead
from app.schemas.common import MAX_ID
from app.services.api_keys import ApiKeyService
from app.services.security import MAX_SESSION_ID

router = APIRouter(prefix="/api-keys", tags=["api-keys"])

KeyId = Annotated[int, Path(ge=1, le=MAX_SESSION_ID, description="The key's id.")]


@router.post(
    "",
    summary="Make an API key",
    response_model=ApiKeyCreated,
    status_code=status.HTTP_201_CREATED,
    responses={**created_at("API key"), **error_responses(400, 401, 403, 404, 409, 413, 422)},
)
async def create_api_key(
    body: ApiKeyCreate, db: SessionDep, user: Person, request: Request, response: Response
) -> ApiKeyCreated:
    """The answer's `key` is shown this once. A superuser may make one for another user
    (`user_id`, e.g. a service account): 404 for no such user, 409 for an inactive one. 403
    for an agent naming someone else, and for a caller that is itself an API key. 422 for an
    `expires_at` that has already passed (a rule about the time now, which the schema cannot
    state)."""
    data = body.model_dump(exclude_unset=True)
    row, key = await ApiKeyService.create(db, data, acting_user_id=user.id)
    response.headers["Location"] = str(request.url_for("get_api_key", key_id=row.id).path)
    return ApiKeyCreated.model_validate({**ApiKeyRead.model_validate(row).model_dump(), "key": key})


@router.get(
    "",
    summary="List API keys",
    response_model=ApiKeyPage,
    status_code=status.HTTP_200_OK,
    responses=error_responses(401, 403, 422),
)
async def list_api_keys(
    db: SessionDep,
    user: Person,
    paging: SessionPaging,
    user_id: Annotated[
        int | None, Query(ge=1, le=MAX_ID, description="Whose keys (superusers; default: yours).")
    ] = None,
) -> ApiKeyPage:
    """The keys not revoked, newest first: name, prefix, scope, created, last used, expiry;
    never the key."""
    rows, total = await ApiKeyService.list_keys(
        db, acting_user_id=user.id, user_id=user_id, skip=paging.skip, limit=paging.limit
    )
    return _page(rows, total, paging)


@router.get(
    "/{key_id}",
    summary="Read an API key",
    response_model=ApiKeyRead,
    status_code=status.HTTP_200_OK,
    responses=error_responses(401, 403, 404, 422),
)
async def get_api_key(key_id: KeyId, db: SessionDep, user: Person) -> ApiKeyRead:
    """One key, never the key itself. Yours, or anyone's for a superuser; 404 for a key that
    is not, or is revoked."""
    return ApiKeyRead.model_validate(await ApiKeyService.get(db, key_id, acting_user_id=user.id))


@router.delete(
    "/{key_id}",
    summary="Revoke an API key",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=error_responses(401, 403, 404, 422),
)
async def revoke_api_key(key_id: KeyId, db: SessionDep, user: Person) -> Response:
    """The key stops working at once. Yours, or anyone's for a superuser; 404 for a key that
    is not, or is already revoked."""
    await ApiKeyService.revoke(db, key_id, acting_user_id=user.id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def _page(rows: list, total: int, paging: Paging) -> ApiKeyPage:
    items = [ApiKeyRead.model_validate(row) for row in rows]
    return ApiKeyPage(items=items, total=total, skip=paging.skip, limit=paging.limit)
