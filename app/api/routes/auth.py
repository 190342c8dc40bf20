"""/auth: trade an email and password for a bearer token."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, status
from fastapi.security import OAuth2PasswordRequestForm

from app.api.deps import SessionDep, SettingsDep
from app.api.errors import error_responses
from app.schemas.user import Token
from app.services.security import create_access_token
from app.services.user_service import UserService

router = APIRouter(prefix="/auth", tags=["auth"])


@router.post(
    "/token",
    summary="Log in",
    response_model=Token,
    status_code=status.HTTP_200_OK,
    responses=error_responses(401, 413, 422, 429),
    openapi_extra={
        "requestBody": {
            "content": {
                "application/x-www-form-urlencoded": {
                    "example": {"username": "admin@example.com", "password": "a long passphrase"}
                }
            }
        }
    },
)
async def login(
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
    db: SessionDep,
    settings: SettingsDep,
    request: Request,
) -> Token:
    """OAuth2 password flow (form fields `username` = email, `password`), which is what the
    docs explorer's Authorize button sends. Wrong credentials and inactive accounts get the
    same 401. After `LOGIN_MAX_FAILURES` failures for one email from one client address within
    `LOGIN_FAILURE_WINDOW_SECONDS`, that pair gets 429 with `Retry-After` (seconds) for
    `LOGIN_LOCKOUT_SECONDS`, even with the right password."""
    # Behind a proxy, uvicorn's proxy-headers handling has already put the real client here.
    client_address = request.client.host if request.client else None
    user = await UserService.authenticate(
        db, form.username, form.password, client_address=client_address
    )
    token, lifetime = create_access_token(user.id, settings, version=user.token_version)
    return Token(access_token=token, expires_in=lifetime)
