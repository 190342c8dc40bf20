"""API key bodies (issue 14): what a key is made with, how it is shown, and the key itself,
shown once."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import MISSING, BaseModel, ConfigDict, Field

from app.models.api_key import KEY_NAME_MAX_LENGTH
from app.models.validation import NOT_BLANK_PATTERN
from app.schemas.common import BodyId, RequestBody, UtcDateTime


class ApiKeyCreate(RequestBody):
    """A new key, for yourself or (superusers) for `user_id`. 422 for an `expires_at` that
    has passed."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"name": "nightly export", "scope": "read"}]}
    )

    name: Annotated[
        str, Field(min_length=1, max_length=KEY_NAME_MAX_LENGTH, pattern=NOT_BLANK_PATTERN)
    ] = Field(description="What the key is for, as listed.")
    scope: Literal["read", "write"] = Field(
        description="`read`: GET requests only (every write gets 403); "
        "`write`: whatever the user may do."
    )
    expires_at: UtcDateTime | MISSING = Field(
        MISSING, description="When the key stops working; without it, when revoked."
    )
    user_id: BodyId | MISSING = Field(
        MISSING, description="Whose key (superusers only; default: yours)."
    )


class ApiKeyRead(BaseModel):
    """A key, without the key: its prefix names it."""

    model_config = ConfigDict(from_attributes=True)

    id: int = Field(description="The key's id (`DELETE /api-keys/{id}` revokes it).")
    user_id: int = Field(description="The user the key acts as.")
    name: str = Field(description="What the key is for.")
    prefix: str = Field(description="The key's public part: `crm_<prefix>_...`.")
    scope: Literal["read", "write"] = Field(description="`read` or `write`.")
    created_at: datetime = Field(description="When the key was made.")
    last_used_at: datetime | None = Field(description="When the key was last used (to the minute).")
    expires_at: datetime | None = Field(description="When it stops working, if ever.")


class ApiKeyCreated(ApiKeyRead):
    """The new key. `key` is shown this once: the server keeps only a digest of it."""

    key: str = Field(description="Send it as `Authorization: Bearer crm_...`.")


class ApiKeyPage(BaseModel):
    """One page of keys that have not been revoked, newest first."""

    items: list[ApiKeyRead] = Field(description="The keys of this page.")
    total: int = Field(description="How many such keys there are.")
    skip: int = Field(description="The `skip` asked for.")
    limit: int = Field(description="The `limit` asked for.")
