"""User and token bodies. No schema here has a field for a password hash, so no response can
carry one."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.models.user import FULL_NAME_MAX_LENGTH
from app.models.validation import EMAIL_MAX_LENGTH
from app.schemas.common import RequestBody
from app.services.security import MAX_PASSWORD_LENGTH, MIN_PASSWORD_LENGTH

Password = Annotated[str, Field(min_length=MIN_PASSWORD_LENGTH, max_length=MAX_PASSWORD_LENGTH)]
FullName = Annotated[str, Field(min_length=1, max_length=FULL_NAME_MAX_LENGTH)]


class UserRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    email: str
    full_name: str
    is_active: bool
    is_superuser: bool
    created_at: datetime


class UserPage(BaseModel):
    items: list[UserRead]
    total: int
    skip: int
    limit: int


class UserCreate(RequestBody):
    model_config = ConfigDict(
        extra="forbid",
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

    email: Annotated[str, Field(max_length=EMAIL_MAX_LENGTH)]
    full_name: FullName
    password: Password
    is_superuser: bool = False


class UserUpdate(RequestBody):
    """A superuser's change to an account."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"is_active": False}]}
    )

    full_name: FullName | None = None
    is_active: bool | None = None
    is_superuser: bool | None = None
    password: Password | None = None


class UserSelfUpdate(RequestBody):
    """A user's change to their own account; a new password needs the current one."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"password": "a new long passphrase", "current_password": "the old one"}]
        },
    )

    full_name: FullName | None = None
    password: Password | None = None
    current_password: Annotated[str, Field(max_length=MAX_PASSWORD_LENGTH)] | None = None


class Token(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int = Field(description="Seconds until the token expires.")


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
