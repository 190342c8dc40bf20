"""User and token bodies. No schema here has a field for a password hash, so no response can
carry one."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import MISSING, BaseModel, ConfigDict, Field, StrictBool

from app.models.user import FULL_NAME_MAX_LENGTH
from app.models.validation import EMAIL_MAX_LENGTH, NO_NUL_PATTERN, NOT_BLANK_PATTERN
from app.schemas.common import RequestBody
from app.services.security import MAX_PASSWORD_LENGTH, MIN_PASSWORD_LENGTH

Password = Annotated[
    str,
    Field(
        min_length=MIN_PASSWORD_LENGTH,
        max_length=MAX_PASSWORD_LENGTH,
        pattern=NO_NUL_PATTERN,
        description=f"{MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} characters.",
    ),
]
FullName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=FULL_NAME_MAX_LENGTH,
        pattern=NOT_BLANK_PATTERN,
        description="The name shown to colleagues; trimmed, not blank.",
    ),
]
Email = Annotated[
    str,
    Field(
        max_length=EMAIL_MAX_LENGTH,
        pattern=NO_NUL_PATTERN,
        description="The login: an email address (syntax checked, stricter than `format: "
        "email`), compared case-insensitively and stored lowercased.",
    ),
]


class UserRead(BaseModel):
    """An account. No password or hash is ever shown."""

    model_config = ConfigDict(from_attributes=True)

    id: int = Field(description="The user's id.")
    email: str = Field(description="The login email, lowercased.")
    full_name: str = Field(description="The name shown to colleagues.")
    is_active: bool = Field(description="Inactive accounts cannot log in or be assigned leads.")
    is_superuser: bool = Field(description="Superusers see every lead and manage accounts.")
    is_service_account: bool = Field(
        description="An integration's account: it acts through API keys and cannot log in."
    )
    created_at: datetime = Field(description="When the account was created.")


class UserPage(BaseModel):
    """One page of accounts, by id."""

    items: list[UserRead] = Field(description="The accounts of this page.")
    total: int = Field(description="How many accounts there are.")
    skip: int = Field(description="The `skip` asked for.")
    limit: int = Field(description="The `limit` asked for.")


class UserCreate(RequestBody):
    """A new account (superusers only); 409 when the email is taken. A service account (an
    integration's) has no password and cannot log in: it acts only through its API keys. Every
    other account needs a `password` (422 naming it otherwise)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "email": "sam@example.com",
                    "full_name": "Sam Seller",
                    "password": "a long passphrase",
                    "is_superuser": False,
                }
            ]
        },
    )

    email: Email
    full_name: FullName
    password: Password | MISSING = Field(
        MISSING, description="Required, except for a service account (which has none)."
    )
    is_superuser: StrictBool | MISSING = Field(
        MISSING, description="A superuser account; false if left out."
    )
    is_service_account: StrictBool | MISSING = Field(
        MISSING, description="An integration's account: API keys only, no password login."
    )


class UserUpdate(RequestBody):
    """A superuser's change to an account: only the fields sent change. A new password or a
    deactivation logs the account out everywhere."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"is_active": False}]})

    full_name: FullName | MISSING = MISSING
    is_active: StrictBool | MISSING = Field(
        MISSING, description="false deactivates the account (not your own)."
    )
    is_superuser: StrictBool | MISSING = Field(
        MISSING, description="Promote or demote (not yourself)."
    )
    password: Password | MISSING = Field(MISSING, description="A new password for the account.")


class UserSelfUpdate(RequestBody):
    """A user's change to their own account. A new `password` needs `current_password`; the
    schema cannot say so, the server answers 422 naming `current_password` without it."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"password": "a new long passphrase", "current_password": "the old one"}]
        },
    )

    full_name: FullName | MISSING = MISSING
    password: Password | MISSING = Field(MISSING, description="A new password.")
    current_password: (
        Annotated[str, Field(max_length=MAX_PASSWORD_LENGTH, pattern=NO_NUL_PATTERN)] | MISSING
    ) = Field(MISSING, description="Your password now: required with `password`.")


class Token(BaseModel):
    model_config = ConfigDict(json_schema_serialization_defaults_required=True)

    access_token: str = Field(description="Send it as `Authorization: Bearer <token>`.")
    token_type: Literal["bearer"] = Field("bearer", description="Always bearer.")
    expires_in: int = Field(description="Seconds until the access token expires.")
    refresh_token: str = Field(
        description="Trade it at `POST /auth/refresh` for a new pair before it expires. "
        "Each one works once: the refresh hands out its successor."
    )
    refresh_expires_in: int = Field(
        description="Seconds until the refresh token expires (each refresh starts a new term)."
    )


class LoginRequest(BaseModel):
    """The body of `POST /auth/token`, as a JSON object or as the OAuth2 password form (what
    the docs' Authorize button sends): the same fields either way. Unknown fields (an OAuth2
    client's `client_id`, say) are ignored, as RFC 6749 (section 3.2) asks of a token
    endpoint."""

    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={
            "examples": [{"username": "admin@example.com", "password": "a long passphrase"}]
        },
    )

    username: str = Field(description="The account's email address.")
    password: str = Field(description="The account's password.")
    grant_type: Literal["password"] = Field(
        default="password", description="OAuth2's grant type; only `password` is supported."
    )
    scope: str = Field(default="", description="OAuth2 scopes; accepted and not used.")
