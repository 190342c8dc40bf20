"""How every validation problem is worded, whichever layer found it.

A problem is a location (`["body", "lead_score"]`, `["query", "status", 0]`, `["email"]`) and a
predicate ("must be at most 100"). Each becomes one sentence that names the field in plain words
("Lead score must be at most 100."), and a response's `detail` is one sentence too. The model
rules (app/models/validation.py) already speak in predicates; pydantic's errors (the API's
request schemas, `LeadFilters`) are translated here from their error type, so no message reads
like Python ("Input should be", "Value error,", "not None").
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any

from app.models.validation import (
    NO_NUL_PATTERN,
    NOT_BLANK_PATTERN,
    NUL_MESSAGE,
    PHONE_MAX_DIGITS,
    PHONE_MIN_DIGITS,
    PHONE_PATTERN,
    FieldValidationError,
)

LOCATIONS = frozenset({"body", "query", "path", "header", "cookie"})
Loc = Sequence[str | int]


def label(loc: Loc) -> str:
    """The field a location names, in words: `["body", "lead_ids", 2]` -> "Item 3 of lead ids"."""
    # (an empty name is a dict's empty key, as in `{"fields": {"": ...}}`: no name to show)
    names = [part for part in loc if isinstance(part, str) and part and part not in LOCATIONS]
    if not names:
        where = next((part for part in loc if part in LOCATIONS), "body")
        return {"query": "The query", "path": "The path"}.get(str(where), "The request body")
    words = names[-1].replace("_", " ")
    after = loc[loc.index(names[-1]) + 1 :]
    index = next((part for part in after if isinstance(part, int)), None)
    words = f"item {index + 1} of {words}" if index is not None else words
    return words[0].upper() + words[1:]


def sentence(loc: Loc, predicate: str) -> str:
    """One sentence for one problem. A predicate that is already a sentence (it starts with a
    capital letter) is kept as it is."""
    text = predicate.strip().rstrip(".")
    if not text[:1].islower():
        return text + "."
    return f"{label(loc)} {text}."


def summary(sentences: Sequence[str]) -> str:
    """A response's `detail`: the problem itself, or all of them in one sentence."""
    if len(sentences) == 1:
        return sentences[0]
    parts = [s.rstrip(".") for s in sentences]
    parts = [p[:1].lower() + p[1:] if p[1:2].islower() else p for p in parts]
    return f"The request has {len(sentences)} invalid values: {'; '.join(parts)}."


def pydantic_problems(errors: Iterable[Mapping[str, Any]]) -> list[tuple[list[str | int], str]]:
    """(loc, sentence) for each of pydantic's errors."""
    problems = []
    for error in errors:
        loc = [part if isinstance(part, int) else str(part) for part in error["loc"]]
        if error["type"] == "json_invalid":  # loc is ["body", <character position>], kept
            position = loc[1] if len(loc) > 1 else None
            where = f" at character {position}" if isinstance(position, int) else ""
            reason = str(error.get("ctx", {}).get("error", "")).rstrip(".")
            problems.append((loc, f"The request body is not valid JSON{where}: {reason.lower()}."))
            continue
        if error["type"] == "extra_forbidden" and loc:
            problems.append((loc, unknown_name(loc)))
            continue
        problems.append((loc, sentence(loc, predicate(error))))
    return problems


def unknown_name(loc: Loc) -> str:
    """A parameter or field nobody declared: named as the caller spelt it, since it is no field
    a label could describe."""
    name = loc[-1]
    if loc[0] == "query":
        return f"'{name}' is not a query parameter of this operation."
    return f"'{name}' is not a field this request accepts."


def predicate(error: Mapping[str, Any]) -> str:
    """What is wrong with a value, from pydantic's error type and context."""
    kind = str(error["type"])
    ctx = error.get("ctx") or {}
    if kind in ("value_error", "assertion_error"):
        cause = ctx.get("error")
        if isinstance(cause, FieldValidationError):
            return cause.message
        if cause is not None:
            return str(cause)
        return str(error.get("msg", "is not valid")).removeprefix("Value error, ")
    if kind == "string_pattern_mismatch" and ctx.get("pattern") in PATTERN_PREDICATES:
        return PATTERN_PREDICATES[ctx["pattern"]]
    if kind == "string_too_short" and ctx.get("min_length", 1) > 1:
        return f"must be at least {ctx['min_length']} characters"
    wording = PREDICATES.get(kind)
    if wording is None:
        return f"is not valid ({error.get('msg', kind)})"
    return wording.format(**{key: _shown(value) for key, value in ctx.items()})


def _shown(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, str):
        # pydantic lists choices as "'NEW', 'CONTACTED' or 'WON'"; users read NEW, CONTACTED, WON
        return value.replace("'", "").replace(" or ", ", ")
    return str(value)


PATTERN_PREDICATES = {
    NO_NUL_PATTERN: NUL_MESSAGE,
    NOT_BLANK_PATTERN: "must not be blank or contain NUL (\\u0000) characters",
    PHONE_PATTERN: f"must have {PHONE_MIN_DIGITS} to {PHONE_MAX_DIGITS} digits, an optional "
    "leading +, and only spaces, dots, dashes or brackets between them",
}
PREDICATES = {
    "missing": "is required",
    "string_type": "must be text",
    "string_too_short": "must not be empty",
    "string_too_long": "must be at most {max_length} characters",
    "string_pattern_mismatch": "is not in the expected form",
    "string_unicode": "must be valid Unicode text",
    "int_type": "must be a whole number",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "int_parsing_size": "is too large a number",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "finite_number": "must be a finite number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "greater_than": "must be greater than {gt}",
    "greater_than_equal": "must be at least {ge}",
    "less_than": "must be less than {lt}",
    "less_than_equal": "must be at most {le}",
    "multiple_of": "must be a multiple of {multiple_of}",
    "enum": "must be one of {expected}",
    "literal_error": "must be one of {expected}",
    "list_type": "must be a list",
    "set_type": "must be a list",
    "too_short": "must have at least {min_length} items",
    "too_long": "must have at most {max_length} items",
    "dict_type": "must be a JSON object",
    "model_type": "must be a JSON object",
    "model_attributes_type": "must be a JSON object",
    "datetime_type": "must be an ISO 8601 date-time, such as 2026-11-25T17:52:00Z",
    "datetime_parsing": "must be an ISO 8601 date-time, such as 2026-11-25T17:52:00Z",
    "datetime_from_date_parsing": "must be an ISO 8601 date-time, such as 2026-11-25T17:52:00Z",
    "datetime_object_invalid": "is not a valid date-time",
    "date_or_datetime_type": "must be an ISO 8601 date or date-time, such as 2026-11-25",
    "date_type": "must be an ISO 8601 date, such as 2026-11-25",
    "date_parsing": "must be an ISO 8601 date, such as 2026-11-25",
    "date_from_datetime_parsing": "must be an ISO 8601 date, such as 2026-11-25",
    "date_from_datetime_inexact": "must be a date without a time of day",
    "decimal_type": "must be a number",
    "decimal_parsing": "must be a number",
    "decimal_max_digits": "must have at most {max_digits} digits",
    "decimal_max_places": "must have at most {decimal_places} decimal places",
    "decimal_whole_digits": "must have at most {whole_digits} digits before the point",
    "json_type": "must be JSON",
    "is_instance_of": "is not valid",
    "none_required": "must be null",
}
