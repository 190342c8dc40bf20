"""Bodies shared by every part of the API."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, Field, field_validator

NUL = "\x00"


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return NUL in value
    if isinstance(value, list | tuple):
        return any(_has_nul(item) for item in value)
    return False


def no_nul(value: Any) -> Any:
    """Refuse text holding a NUL character: PostgreSQL cannot store one, so it would fail as a
    database error there (and be stored on SQLite) instead of being a plain validation error."""
    if _has_nul(value):
        raise ValueError("must not contain NUL (\\u0000) characters")
    return value


class RequestBody(BaseModel):
    """Base of every JSON request body: no text field may hold a NUL character."""

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul_characters(cls, value: Any) -> Any:
        return no_nul(value)


def to_utc(value: datetime) -> datetime:
    """Naive means UTC; an aware value is converted to UTC. A moment with no UTC equivalent
    (`9999-12-31T23:00-05:00` is in the year 10000) is refused rather than overflowing later."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("is outside the range of representable dates") from None


UtcDateTime = Annotated[datetime, AfterValidator(to_utc)]


class ErrorItem(BaseModel):
    loc: list[str | int] = Field(description="Where the problem is, e.g. ['body', 'email'].")
    msg: str


class ErrorResponse(BaseModel):
    """The one shape of every error the API returns."""

    detail: str = Field(description="A sentence for a person.")
    code: str = Field(description="A stable snake_case code for programs.")
    errors: list[ErrorItem] | None = Field(
        default=None, description="Each invalid field (validation errors only)."
    )


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    status: Literal["ok"] = "ok"
    database: Literal["ok"] = "ok"
