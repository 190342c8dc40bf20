"""Session bodies: the refresh request and the sessions a user can see and end (issue 14)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from app.models.validation import NO_NUL_PATTERN
from app.schemas.common import RequestBody

REFRESH_TOKEN_MAX_LENGTH = 200


class RefreshRequest(RequestBody):
    """The refresh token a login or the last refresh handed out."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"refresh_token": "kHqX0d0t6...the token you were given"}]}
    )

    refresh_token: Annotated[
        str, Field(min_length=1, max_length=REFRESH_TOKEN_MAX_LENGTH, pattern=NO_NUL_PATTERN)
    ] = Field(description="The refresh token, as it was handed out.")


class SessionRead(BaseModel):
    """One login on one device, live until it is logged out, revoked or left unrefreshed for
    `REFRESH_TOKEN_EXPIRE_DAYS`."""

    model_config = ConfigDict(from_attributes=True)

    id: int = Field(description="The session's id (`DELETE /auth/sessions/{id}` ends it).")
    created_at: datetime = Field(description="When the login happened.")
    last_used_at: datetime = Field(description="The login or the latest refresh.")
    expires_at: datetime = Field(description="When it ends unless refreshed before.")
    user_agent: str | None = Field(description="The User-Agent the login was sent with.")
    client_address: str | None = Field(description="The address the login came from.")
    current: bool = Field(description="Whether this is the session of the calling token.")


class SessionPage(BaseModel):
    """One page of a user's live sessions, newest first."""

    items: list[SessionRead] = Field(description="The sessions of this page.")
    total: int = Field(description="How many live sessions there are.")
    skip: int = Field(description="The `skip` asked for.")
    limit: int = Field(description="The `limit` asked for.")
