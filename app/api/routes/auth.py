"""/auth: trade an email and password for a bearer token."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from app.api.deps import SessionDep, SettingsDep
from app.api.errors import error_responses
from app.schemas.user import LoginRequest, Token
from app.services.security import create_access_token
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
    responses=error_responses(400, 401, 413, 415, 422, 429),
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
    request: Request,
) -> Token:
    """Send `username` (the email) and `password` as JSON, `{"username": ..., "password":
    ...}`, or as the OAuth2 password form, which is what the docs explorer's Authorize button
    sends; any other Content-Type gets 415. Wrong credentials and inactive accounts get the
    same 401. After `LOGIN_MAX_FAILURES` failures for one email from one client address within
    `LOGIN_FAILURE_WINDOW_SECONDS`, that pair gets 429 with `Retry-After` (seconds) for
    `LOGIN_LOCKOUT_SECONDS`, even with the right password."""
    # Behind a proxy, uvicorn's proxy-headers handling has already put the real client here.
    client_address = request.client.host if request.client else None
    user = await UserService.authenticate(
        db, credentials.username, credentials.password, client_address=client_address
    )
    token, lifetime = create_access_token(
        user.id, settings, version=user.token_version, superuser=user.is_superuser
    )
    return Token(access_token=token, expires_in=lifetime)
