"""Bodies shared by every part of the API."""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    MISSING,
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    PlainSerializer,
    TypeAdapter,
    WithJsonSchema,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, PydanticCustomError, PydanticKnownError, core_schema

from app.config import get_settings
from app.models import validation
from app.models.validation import MAX_INT32, UNSTORABLE_DATETIMES

MAX_ID = MAX_INT32  # ids are 32-bit integers in the database


def given(value: Any) -> Any:
    """A body field's value, or None when the client left it out (`MISSING`)."""
    return None if value is MISSING else value


def _whole_number_input(value: Any) -> Any:
    """The integer-not-bool rule before pydantic converts: `true` and `2.0` are no counts or
    ids. Text passes on (a query parameter arrives as text and pydantic parses it)."""
    if isinstance(value, str) or validation.is_whole_number(value):
        return value
    raise PydanticCustomError("int_type", "must be a whole number")


def _json_integer_input(value: Any) -> Any:
    """The rule for a JSON body: a JSON integer, which includes `60.0` (JSON Schema counts a
    number with no fraction as an integer), but not `true` and not the text `"60"`."""
    if validation.is_whole_number(value) or (isinstance(value, float) and value.is_integer()):
        return value
    raise PydanticCustomError("int_type", "must be a whole number")


def whole_number(*constraints: Any) -> Any:
    """A count or an id in a query or from a Python caller (text is parsed), within
    `constraints` (`Field(ge=0)`, a `SettingLimit`). They go inside the rule's validator, so the
    schema shows them as `minimum`/`maximum`."""
    return Annotated[int, *constraints, BeforeValidator(_whole_number_input)]


def json_int(*constraints: Any) -> Any:
    """The same in a JSON body, where text is no number."""
    return Annotated[int, *constraints, BeforeValidator(_json_integer_input)]


QueryId = whole_number(Field(ge=1, le=MAX_ID))
BodyId = json_int(Field(ge=1, le=MAX_ID))


def _number_input(value: Any) -> Any:
    """Money is a JSON number: not text (which pydantic would otherwise parse), not a flag."""
    if validation.is_number(value):
        return value
    raise PydanticCustomError("decimal_type", "must be a number")


MONEY_MAX = Decimal("9999999999999.99")
Money = Annotated[
    Decimal,
    BeforeValidator(_number_input),
    Field(ge=0, le=MONEY_MAX, max_digits=15, decimal_places=2),
    PlainSerializer(float, return_type=float, when_used="json"),
    WithJsonSchema(
        {"type": "number", "minimum": 0, "maximum": float(MONEY_MAX), "multipleOf": 0.01}
    ),
]


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
    """Base of every JSON request body: unknown fields are refused. Every text field's type has
    a pattern that refuses NUL characters (`NO_NUL_PATTERN`, `NOT_BLANK_PATTERN`), so the schema
    says so too; tests/test_api_contract.py checks that none is left without one. Its number
    and flag fields are strict types (`json_int`, `StrictBool`, `StrictFloat`, `Money`): JSON
    `true` is no count, `1` no flag and `"5"` no number, exactly as the schema says. (Not
    `strict=True` for the whole model: FastAPI validates the decoded JSON as Python objects,
    where strict mode would refuse every date and enum given as text.)"""

    model_config = ConfigDict(extra="forbid")


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


# ISO 8601 text: a calendar date, and for a date-time a time of day after it. pydantic alone also
# reads a number as Unix time ("0.5" is 1970-01-01T00:00:00.5Z), which the schema does not allow.
ISO_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
ISO_DATE_TIME = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}")
_DATE_TIME = TypeAdapter(datetime)


def _iso_date_time_input(value: Any) -> Any:
    if isinstance(value, datetime) or (isinstance(value, str) and ISO_DATE_TIME.match(value)):
        return value
    raise PydanticCustomError("datetime_type", "must be an ISO 8601 date-time")


def _iso_date_or_date_time_input(value: Any) -> Any:
    """`2026-11-01` is a whole day (a date); anything longer is a point in time. Parsed here,
    into one or the other, so that a bad value is one error of this field rather than one per
    member of the union."""
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        with contextlib.suppress(ValueError):  # pydantic's ValidationError is a ValueError
            if ISO_DATE.match(value):
                return date.fromisoformat(value)
            if ISO_DATE_TIME.match(value):
                return _DATE_TIME.validate_python(value)
    raise PydanticCustomError("date_or_datetime_type", "must be an ISO 8601 date or date-time")


def _bound_in_range(value: datetime | date) -> datetime | date:
    """A datetime must exist in UTC; a date must have a next day (an end date covers it whole)."""
    if isinstance(value, datetime):
        return storable(to_utc(value))
    if value >= date.max:
        raise ValueError(f"must be before {date.max.isoformat()}")
    return value


UtcDateTime = Annotated[
    datetime,
    BeforeValidator(_iso_date_time_input),
    AfterValidator(to_utc),
    AfterValidator(storable),
]
# A date (a whole UTC day) or a date-time: the bounds of a date range.
DateBound = Annotated[
    datetime | date,
    BeforeValidator(_iso_date_or_date_time_input),
    AfterValidator(_bound_in_range),
]


class ErrorItem(BaseModel):
    loc: list[str | int] = Field(
        description="Where the problem is: the part of the request, then the field, e.g. "
        "['body', 'email'] or ['query', 'status', 0]."
    )
    msg: str = Field(description="What is wrong there, as a sentence naming the field.")


# The code of an error that no service exception names, by HTTP status.
CODE_BY_STATUS = {
    400: "bad_request",
    401: "not_authenticated",
    403: "permission_denied",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    408: "request_timeout",  # written by the server itself (app/server.py)
    409: "conflict",
    412: "precondition_failed",
    413: "request_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    428: "precondition_required",
    429: "too_many_requests",
    500: "internal_error",
    503: "service_unavailable",
}
# The database failed outside a service call (while reading the caller's account, say).
DATABASE_UNAVAILABLE = "database_unavailable"


def _error_codes() -> tuple[str, ...]:
    """Every `code` the API can answer with: each service exception's, and the HTTP ones."""
    from app.services.exceptions import CRMException

    classes, codes = [CRMException], {DATABASE_UNAVAILABLE, *CODE_BY_STATUS.values()}
    while classes:
        cls = classes.pop()
        codes.add(cls.code)
        classes.extend(cls.__subclasses__())
    codes.discard(CRMException.code)  # the base is never raised itself
    return tuple(sorted(codes))


ErrorCode = Literal[_error_codes()]  # type: ignore[valid-type]


class DuplicateOf(BaseModel):
    """A lead that a new one repeats."""

    id: int = Field(description="The lead's id.")
    matched_on: list[Literal["email", "phone"]] = Field(description="What the two share.")


class ErrorResponse(BaseModel):
    """The one shape of every error the API returns."""

    detail: str = Field(description="A sentence for a person: what was wrong, and where.")
    code: ErrorCode = Field(description="A stable snake_case code for programs.")
    errors: list[ErrorItem] | MISSING = Field(
        MISSING, description="Each invalid field or header (422, and 400 for a header)."
    )
    current_version: int | MISSING = Field(
        MISSING,
        description="412 only: the lead's version now (its ETag is in the ETag header).",
    )
    request_id: str | MISSING = Field(
        MISSING,
        description="The request's X-Request-ID (500 only): quote it to find the logged error.",
    )
    duplicates: list[DuplicateOf] | MISSING = Field(
        MISSING,
        description="409 `duplicate` of a new lead only: the live leads you may see with its "
        "email or phone.",
    )
    matched: int | MISSING = Field(
        MISSING,
        description="409 `match_count_changed` of a bulk change by filter only: how many leads "
        "the filter matches now (nothing was changed).",
    )


class Health(BaseModel):
    model_config = ConfigDict(json_schema_serialization_defaults_required=True)

    status: Literal["ok"] = Field("ok", description="Always ok: the process answers.")


class Readiness(BaseModel):
    model_config = ConfigDict(json_schema_serialization_defaults_required=True)

    status: Literal["ok"] = Field("ok", description="ok: the app can serve requests.")
    database: Literal["ok"] = Field("ok", description="ok: the database answered.")
