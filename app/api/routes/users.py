"""/users: your own account, and (for superusers) everyone's."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response, status
from pydantic import MISSING

from app.api.deps import Caller, CurrentUser, Person, SessionDep, refuse_api_keys
from app.api.errors import created_at, error_responses
from app.api.sessions import SessionId, SessionPaging, session_page
from app.schemas.common import MAX_ID, SettingLimit
from app.schemas.session import SessionPage
from app.schemas.user import UserCreate, UserPage, UserRead, UserSelfUpdate, UserUpdate
from app.services.sessions import SessionService
from app.services.user_service import UserService

router = APIRouter(prefix="/users", tags=["users"])

UserId = Annotated[int, Path(ge=1, le=MAX_ID, description="The user's id.")]


@router.get(
    "/me",
    summary="Read your account",
    response_model=UserRead,
    status_code=status.HTTP_200_OK,
    responses=error_responses(401),
)
async def get_me(user: CurrentUser) -> UserRead:
    return UserRead.model_validate(user)


@router.patch(
    "/me",
    summary="Change your name or password",
    response_model=UserRead,
    status_code=status.HTTP_200_OK,
    responses=error_responses(400, 401, 413, 422),
)
async def update_me(
    body: UserSelfUpdate, db: SessionDep, user: CurrentUser, claims: Caller
) -> UserRead:
    """Only the fields sent change. A new `password` needs `current_password`, your password
    now: without it, or with a wrong one, the answer is 422 naming `current_password` (a rule
    the schema alone cannot state). A new password logs you out everywhere else: every other
    session ends at once; this one goes on."""
    if body.password is not MISSING:
        refuse_api_keys(claims)
    changed = await UserService.update_me(db, user.id, body, current_session_id=claims.session_id)
    return UserRead.model_validate(changed)


@router.get(
    "",
    summary="List users",
    response_model=UserPage,
    status_code=status.HTTP_200_OK,
    responses=error_responses(401, 403, 422),
)
async def list_users(
    db: SessionDep,
    user: CurrentUser,
    skip: Annotated[int, Query(ge=0, le=MAX_ID, description="Accounts to skip.")] = 0,
    limit: Annotated[
        int, Query(ge=1, description="Accounts per page."), SettingLimit("page_max_limit")
    ] = 100,
) -> UserPage:
    """Superusers only."""
    users, total = await UserService.list_users(db, acting_user_id=user.id, skip=skip, limit=limit)
    items = [UserRead.model_validate(u) for u in users]
    return UserPage(items=items, total=total, skip=skip, limit=limit)


@router.post(
    "",
    summary="Create a user",
    response_model=UserRead,
    status_code=status.HTTP_201_CREATED,
    responses={**created_at("user"), **error_responses(400, 401, 403, 409, 413, 422)},
)
async def create_user(
    body: UserCreate, db: SessionDep, user: CurrentUser, request: Request, response: Response
) -> UserRead:
    """Superusers only. 409 when the email is taken (compared case-insensitively). An email
    whose syntax is invalid is refused with 422 (the check is stricter than JSON Schema's
    `format: email`)."""
    created = await UserService.create_user(db, body, acting_user_id=user.id)
    response.headers["Location"] = str(request.url_for("get_user", user_id=created.id).path)
    return UserRead.model_validate(created)


@router.get(
    "/{user_id:int}",
    name="get_user",
    summary="Read a user",
    response_model=UserRead,
    status_code=status.HTTP_200_OK,
    responses=error_responses(401, 403, 404, 422),
)
async def get_user(user_id: UserId, db: SessionDep, user: CurrentUser) -> UserRead:
    """Superusers read anyone; others only themselves."""
    return UserRead.model_validate(await UserService.get_user(db, user_id, acting_user_id=user.id))


@router.patch(
    "/{user_id:int}",
    summary="Change a user",
    response_model=UserRead,
    status_code=status.HTTP_200_OK,
    responses=error_responses(400, 401, 403, 404, 409, 413, 422),
)
async def update_user(
    user_id: UserId, body: UserUpdate, db: SessionDep, user: CurrentUser
) -> UserRead:
    """Superusers only: name, active flag, superuser flag, password. Deactivating a user locks
    their tokens out at once."""
    return UserRead.model_validate(
        await UserService.update_user(db, user_id, body, acting_user_id=user.id)
    )


@router.get(
    "/{user_id}/sessions",
    summary="List a user's sessions",
    response_model=SessionPage,
    status_code=status.HTTP_200_OK,
    responses=error_responses(401, 403, 404, 422),
)
async def list_user_sessions(
    user_id: UserId, db: SessionDep, user: Person, claims: Caller, paging: SessionPaging
) -> SessionPage:
    """The user's live sessions, newest first. Superusers, or the user themselves (as
    `GET /auth/sessions`). 404 for a user that does not exist."""
    return await session_page(db, user_id, user, claims, paging)


@router.delete(
    "/{user_id}/sessions/{session_id}",
    summary="End a user's session",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=error_responses(401, 403, 404, 422),
)
async def revoke_user_session(
    user_id: UserId, session_id: SessionId, db: SessionDep, user: Person
) -> Response:
    """Log one of the user's devices out at once. Superusers, or the user themselves. 404 for
    a session that is not that user's or has already ended."""
    await SessionService.revoke(db, session_id, user_id=user_id, acting_user_id=user.id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
