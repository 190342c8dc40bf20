"""/auth: log in (a session and its tokens), refresh, log out, and your sessions."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response, status
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from app.api.deps import Caller, ClientAddress, Person, SessionDep, SettingsDep, login_turn
from app.api.errors import error_responses
from app.api.sessions import SessionId, SessionPaging, current_session, session_page, token_pair
from app.schemas.session import RefreshRequest, SessionPage
from app.schemas.user import LoginRequest, Token
from app.services.sessions import RevokeReason, SessionService
from app.services.user_service import UserService

router = APIRouter(prefix="/auth", tags=["auth"])

JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
MULTIPART = "multipart/form-data"
ACCEPTED = (JSON, FORM, MULTIPART)

# One schema for every accepted content type. Written out in full in each: the body is read by
# `login_request`, not by FastAPI, so FastAPI would not list the model among the components.
_LOGIN_SCHEMA = LoginRequest.model_json_schema()


async def login_request(request: Request) -> LoginRequest:
    """The credentials, from a JSON body or from the OAuth2 password form.

    FastAPI reads a body one way per route (a model from JSON, or form fields), so the body is
    read here by its Content-Type and validated with the one model; errors come out as
    FastAPI's own would (422 naming `body.<field>`, malformed JSON included), so they get the
    API's usual error shape. A form value is taken as sent, an empty one included, so that
    the documented schema is exactly what is accepted (`grant_type=` is refused like any
    other grant type but `password`)."""
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    data: Any
    is_json = media_type == JSON or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )
    if is_json:
        body = await request.body()
        try:
            data = json.loads(body)
        except json.JSONDecodeError as exc:
            raise RequestValidationError(
                [
                    {
                        "type": "json_invalid",
                        "loc": ("body", exc.pos),
                        "msg": "JSON decode error",
                        "input": {},
                        "ctx": {"error": exc.msg},
                    }
                ]
            ) from None
        except ValueError:  # not UTF-8 (nor UTF-16/32)
            raise HTTPException(
                status.HTTP_400_BAD_REQUEST, "The request body is not valid UTF-8."
            ) from None
    elif media_type in (FORM, MULTIPART):
        async with request.form() as form:
            return _validated(dict(form.items()))
    elif not media_type and not await request.body():
        data = {}  # nothing sent at all: name the missing fields rather than a body type
    else:
        sent = f"as '{media_type}'" if media_type else "without a Content-Type"
        raise HTTPException(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            f"The login body was sent {sent}; send it as {JSON} "
            f'({{"username", "password"}}) or as the OAuth2 form, {FORM} '
            f"(or {MULTIPART}).",
        )
    return _validated(data)


def _validated(data: Any) -> LoginRequest:
    try:
        return LoginRequest.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError(
            [{**error, "loc": ("body", *error["loc"])} for error in exc.errors()]
        ) from None


@router.post(
    "/token",
    summary="Log in",
    response_model=Token,
    status_code=status.HTTP_200_OK,
    responses=error_responses(400, 401, 413, 415, 422, 429, 503),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {media_type: {"schema": _LOGIN_SCHEMA} for media_type in ACCEPTED},
        }
    },
)
async def login(
    credentials: Annotated[LoginRequest, Depends(login_request)],
    db: SessionDep,
    settings: SettingsDep,
    client_address: ClientAddress,
    request: Request,
) -> Token:
    """Send `username` (the email) and `password` as JSON, `{"username": ..., "password":
    ...}`, or as the OAuth2 password form, which is what the docs explorer's Authorize button
    sends; any other Content-Type gets 415. Wrong credentials and inactive accounts get the
    same 401. After `LOGIN_MAX_FAILURES` failures for one email from one client address within
    `LOGIN_FAILURE_WINDOW_SECONDS`, that pair gets 429 with `Retry-After` (seconds) for
    `LOGIN_LOCKOUT_SECONDS`, even with the right password; so does a client address after
    `LOGIN_MAX_FAILURES_PER_ADDRESS` failures for any emails within the window. 503 with
    `Retry-After` when the server is flooded with logins (`LOGIN_HASH_CONCURRENCY`).

    A login starts a session (`GET /auth/sessions` lists them): the answer carries a short-lived
    access token and the session's refresh token (`POST /auth/refresh`)."""
    async with login_turn(request):
        user = await UserService.authenticate(
            db, credentials.username, credentials.password, client_address=client_address
        )
    issued = await SessionService.start(
        db, user, user_agent=request.headers.get("user-agent"), client_address=client_address
    )
    return token_pair(issued, settings)


@router.post(
    "/refresh",
    summary="Refresh a session",
    response_model=Token,
    status_code=status.HTTP_200_OK,
    responses=error_responses(400, 401, 413, 422, 429),
)
async def refresh_session(
    body: RefreshRequest, db: SessionDep, settings: SettingsDep, client_address: ClientAddress
) -> Token:
    """A new access token and a new refresh token for the session's current refresh token,
    which stops working (each works once). The same token sent again within
    `REFRESH_REUSE_GRACE_SECONDS` (two tabs refreshing at once, a retry after a lost answer)
    gets the same new pair; sent again later, it is taken for a stolen copy, and the whole
    session is revoked: its access tokens stop working at once. 401 for a token that is
    unknown, expired, replaced or of an ended session, and for an inactive account. Refused
    tokens count toward `LOGIN_MAX_FAILURES_PER_ADDRESS` with failed logins: past it, the
    client address gets 429 with `Retry-After`, whatever it sends, until the window has
    passed."""
    issued = await SessionService.refresh(db, body.refresh_token, client_address=client_address)
    return token_pair(issued, settings)


@router.post(
    "/logout",
    summary="Log out",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=error_responses(401),
)
async def logout(db: SessionDep, user: Person, claims: Caller) -> Response:
    """End the calling token's session: its access and refresh tokens stop working at once.
    The account's other sessions go on."""
    await SessionService.revoke(
        db,
        current_session(claims),
        user_id=user.id,
        acting_user_id=user.id,
        reason=RevokeReason.LOGOUT,
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/sessions",
    summary="List your sessions",
    response_model=SessionPage,
    status_code=status.HTTP_200_OK,
    responses=error_responses(401, 422),
)
async def list_my_sessions(
    db: SessionDep, user: Person, claims: Caller, paging: SessionPaging
) -> SessionPage:
    """Your live sessions, newest first; `current` marks the one this token belongs to."""
    return await session_page(db, user.id, user, claims, paging)


@router.delete(
    "/sessions/{session_id}",
    summary="End one of your sessions",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=error_responses(401, 404, 422),
)
async def revoke_my_session(session_id: SessionId, db: SessionDep, user: Person) -> Response:
    """Log a device out: the session's access and refresh tokens stop working at once. 404
    for a session that is not yours or has already ended."""
    await SessionService.revoke(db, session_id, user_id=user.id, acting_user_id=user.id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
