"""/auth: trade an email and password for a bearer token."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, status
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
    responses=error_responses(401, 413, 422),
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
    form: Annotated[OAuth2PasswordRequestForm, Depends()], db: SessionDep, settings: SettingsDep
) -> Token:
    """OAuth2 password flow (form fields `username` = email, `password`), which is what the
    docs explorer's Authorize button sends. Wrong credentials and inactive accounts get the
    same 401."""
    user = await UserService.authenticate(db, form.username, form.password)
    token, lifetime = create_access_token(user.id, settings)
    return Token(access_token=token, expires_in=lifetime)
