"""Every field rule, written once: the models' `@validates` hooks, the services' argument checks
and the API schemas all call these.

The rules raise `FieldValidationError`, a plain `ValueError` that names the field and says what
is wrong as a predicate ("must be a whole number"); the service layer turns it into its own
`ValidationException`, whose message is a sentence built from the two. Models never import the
service layer.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from enum import Enum
from typing import TypeVar

from email_validator import EmailNotValidError, validate_email

from app.models.types import TAG_MAX_LENGTH

NAME_MAX_LENGTH = 100
EMAIL_MAX_LENGTH = 254
PHONE_MIN_DIGITS = 7
PHONE_MAX_DIGITS = 15
PHONE_MAX_LENGTH = 40
PHONE_SEPARATORS = re.compile(r"[\s.\-()]")
PHONE_SHAPE = re.compile(r"\+?\d+")
# What `phone_number` accepts, as one regular expression: blank (no phone), or separators
# anywhere, an optional leading + and 7-15 digits. The API schema publishes it as the phone
# field's `pattern`.
PHONE_PATTERN = (
    rf"^(?:\s*|[\s.\-()]*\+?(?:[\s.\-()]*\d){{{PHONE_MIN_DIGITS},{PHONE_MAX_DIGITS}}}[\s.\-()]*)$"
)
# The API schema's `pattern`s for text, saying what `no_nul` and `required_text` check: no NUL
# anywhere, and for required text (names, tags, notes) at least one character that is not
# white space.
NO_NUL_PATTERN = r"^[^\x00]*$"
NOT_BLANK_PATTERN = r"^[^\x00]*[^\s\x00][^\x00]*$"

# A lead nobody can reach is useless: said of `email` when neither it nor a phone is given.
NO_CONTACT = "is required when there is no phone number"

E = TypeVar("E", bound=Enum)


class FieldValidationError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def is_whole_number(value: object) -> bool:
    """An int that is not a bool (`True` is an int in Python, never a count or an id here)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> bool:
    """An int, float or Decimal that is not a bool."""
    return isinstance(value, int | float | Decimal) and not isinstance(value, bool)


def no_nul(field: str, value: str) -> str:
    """PostgreSQL cannot store NUL in text; refusing it everywhere keeps both databases alike
    (on PostgreSQL it would fail as a database error instead of a validation error)."""
    if "\x00" in value:
        raise FieldValidationError(field, NUL_MESSAGE)
    return value


NUL_MESSAGE = "must not contain NUL (\\u0000) characters"


def enum_member(enum_cls: type[E], field: str, value: object) -> E:
    """A member of `enum_cls` from itself or its value, in any case and untrimmed (Python
    callers); the API's schemas accept only the exact values, as the OpenAPI document lists."""
    if isinstance(value, enum_cls):
        return value
    if isinstance(value, str):
        try:
            return enum_cls(value.strip().upper())
        except ValueError:
            pass
    raise FieldValidationError(field, f"must be one of {enum_values(enum_cls)}")


def enum_values(enum_cls: type[Enum]) -> str:
    return ", ".join(str(member.value) for member in enum_cls)


def required_text(field: str, value: object, max_length: int = NAME_MAX_LENGTH) -> str:
    if value is None:
        raise FieldValidationError(field, "is required")
    if not isinstance(value, str):
        raise FieldValidationError(field, "must be text")
    value = no_nul(field, value).strip()
    if not value:
        raise FieldValidationError(field, "must not be blank")
    if len(value) > max_length:
        raise FieldValidationError(field, f"must be at most {max_length} characters")
    return value


def optional_text(field: str, value: object, max_length: int) -> str | None:
    """Trimmed text, or None for a missing or blank value."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise FieldValidationError(field, "must be text")
    value = no_nul(field, value).strip()
    if len(value) > max_length:
        raise FieldValidationError(field, f"must be at most {max_length} characters")
    return value or None


def email_address(field: str, value: object, *, lowercase: bool = False) -> str | None:
    """Syntax check only (no DNS lookup), returning the normalised form."""
    text = optional_text(field, value, EMAIL_MAX_LENGTH)
    if text is None:
        return None
    try:
        normalized = validate_email(text, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        # email-validator explains in sentences of its own; here they become one clause
        reason = str(exc).rstrip(".").replace(". ", "; ")
        reason = reason[:1].lower() + reason[1:]
        raise FieldValidationError(field, f"is not a valid email address: {reason}") from None
    return normalized.lower() if lowercase else normalized


def phone_number(field: str, value: object) -> str | None:
    """International form: optional leading +, 7-15 digits once separators are removed."""
    text = optional_text(field, value, PHONE_MAX_LENGTH)
    if text is None:
        return None
    compact = PHONE_SEPARATORS.sub("", text)
    if not PHONE_SHAPE.fullmatch(compact):
        raise FieldValidationError(
            field, "must be digits with an optional leading + (spaces, dots, dashes, () allowed)"
        )
    digits = len(compact.lstrip("+"))
    if not PHONE_MIN_DIGITS <= digits <= PHONE_MAX_DIGITS:
        raise FieldValidationError(
            field, f"must have {PHONE_MIN_DIGITS} to {PHONE_MAX_DIGITS} digits, not {digits}"
        )
    return compact


MAX_INT32 = 2**31 - 1
# asyncpg sends exactly these two instants as PostgreSQL's -infinity and infinity, and reads
# those back as naive datetimes: stored, either would come back changed. Nothing a lead records
# happens at either, so both are refused on every database alike.
UNSTORABLE_DATETIMES = frozenset(
    {datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC)}
)


def integer_in_range(field: str, value: object, low: int, high: int | None = None) -> int:
    if not is_whole_number(value):
        raise FieldValidationError(field, "must be a whole number")
    assert isinstance(value, int)
    if value < low or (high is not None and value > high):
        bound = f"from {low} to {high}" if high is not None else f"at least {low}"
        raise FieldValidationError(field, f"must be a whole number {bound}, not {value}")
    return value


def flag(field: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise FieldValidationError(field, "must be true or false")
    return value


def probability(field: str, value: object) -> float | None:
    if value is None:
        return None
    if not is_number(value):
        raise FieldValidationError(field, "must be a number")
    number = float(value)  # type: ignore[arg-type]
    if not 0.0 <= number <= 1.0:  # also refuses NaN
        raise FieldValidationError(field, f"must be between 0.0 and 1.0, not {value}")
    return number


def money(field: str, value: object) -> Decimal | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise FieldValidationError(field, "must be a number")
    try:
        amount = Decimal(str(value)) if isinstance(value, int | float | str) else value
    except InvalidOperation:
        raise FieldValidationError(field, "must be a number") from None
    if not isinstance(amount, Decimal) or not amount.is_finite():
        raise FieldValidationError(field, "must be a finite number")
    if amount < 0:
        raise FieldValidationError(field, f"must not be negative, not {value}")
    if amount.as_tuple().exponent < -2 or amount.adjusted() >= 13:  # type: ignore[operator]
        raise FieldValidationError(field, "must have at most 13 digits and 2 decimals")
    return amount


def aware_datetime(field: str, value: object) -> datetime | None:
    """A point in time in UTC; naive values are read as UTC, plain dates as midnight UTC."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise FieldValidationError(field, "must be an ISO 8601 date-time") from None
    if isinstance(value, date) and not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day, tzinfo=UTC)
    if not isinstance(value, datetime):
        raise FieldValidationError(field, "must be a date-time")
    try:
        moment = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError:  # e.g. 9999-12-31T23:00-05:00 is in the year 10000 in UTC
        raise FieldValidationError(field, "is outside the range of dates") from None
    if moment in UNSTORABLE_DATETIMES:
        raise FieldValidationError(field, "is outside the range of dates that can be stored")
    return moment


def normalize_tag(field: str, value: object) -> str:
    if not isinstance(value, str):
        raise FieldValidationError(field, "must hold only text")
    tag = no_nul(field, value).strip().lower()
    if not tag:
        raise FieldValidationError(field, "must not hold a blank tag")
    if len(tag) > TAG_MAX_LENGTH:
        raise FieldValidationError(
            field, f"must not hold a tag longer than {TAG_MAX_LENGTH} characters (lowercased)"
        )
    return tag


def tag_list(field: str, values: object) -> list[str]:
    """Lowercased, trimmed, duplicates dropped, first-seen order kept."""
    if values is None:
        return []
    if isinstance(values, str) or not isinstance(values, Iterable):
        raise FieldValidationError(field, "must be a list of tags")
    return list(dict.fromkeys(normalize_tag(field, value) for value in values))
