"""Bodies shared by every part of the API."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    field_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, PydanticKnownError, core_schema

from app.config import get_settings
from app.models.validation import UNSTORABLE_DATETIMES

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


@dataclass(frozen=True)
class SettingLimit:
    """The upper limit named by a setting (`Settings.<setting>`), on a text's length, a list's
    items or a number: `Annotated[str, Field(min_length=1), SettingLimit("note_max_length")]`.

    A `Field(max_length=...)` is fixed when the module is imported; this reads `get_settings()`
    each time a value is validated and each time the OpenAPI document is generated, so the
    limit enforced and the limit documented (`maxLength`, `maxItems` or `maximum`) are always
    the one configured. The errors are pydantic's own, so a refusal reads like any other.
    """

    setting: str

    def limit(self) -> int:
        return int(getattr(get_settings(), self.setting))

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        return core_schema.no_info_after_validator_function(self._check, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(schema)
        target = handler.resolve_ref_schema(json_schema)
        keyword = {"string": "maxLength", "array": "maxItems"}.get(target.get("type"), "maximum")
        target[keyword] = self.limit()
        return json_schema

    def _check(self, value: Any) -> Any:
        limit = self.limit()
        if isinstance(value, str):
            if len(value) > limit:
                raise PydanticKnownError("string_too_long", {"max_length": limit})
        elif isinstance(value, list | tuple):
            if len(value) > limit:
                raise PydanticKnownError(
                    "too_long",
                    {"field_type": "List", "max_length": limit, "actual_length": len(value)},
                )
        elif value > limit:
            raise PydanticKnownError("less_than_equal", {"le": limit})
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


def storable(value: datetime) -> datetime:
    """The first and the last microsecond of the calendar are refused: the PostgreSQL driver
    stores them as -infinity and infinity (see UNSTORABLE_DATETIMES)."""
    if value in UNSTORABLE_DATETIMES:
        raise ValueError("is outside the range of dates that can be stored")
    return value


UtcDateTime = Annotated[datetime, AfterValidator(to_utc), AfterValidator(storable)]


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
    request_id: str | None = Field(
        default=None,
        description="The request's X-Request-ID (500 only): quote it to find the logged error.",
    )


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    status: Literal["ok"] = "ok"
    database: Literal["ok"] = "ok"
