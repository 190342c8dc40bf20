"""The conditional request headers a lead's routes read (issue 13): If-Match on its writes and
If-None-Match on its read, parsed into `app.services.preconditions.Precondition`.

Either header is `*` or a comma-separated list of entity tags (`"12-3"`, `W/"12-3"`), as RFC
9110 section 8.8.3 writes them (ASCII only: this API's tags are); anything else is a 400 naming
the header. The document states the same grammar as a pattern, which the API checks itself
(FastAPI would answer 422). If-Match compares
strongly (a weak tag never matches: a write must know the exact version), If-None-Match weakly.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import Depends, Header

from app.config import get_settings
from app.services.exceptions import InvalidHeaderException, PreconditionRequiredException
from app.services.preconditions import ANY_LEAD, Precondition

_TAG = r'(W/)?("[\x21\x23-\x7e]*")'
_TAG_LIST = re.compile(rf"{_TAG}(?:[ \t]*,[ \t]*{_TAG})*")
# The same grammar for the OpenAPI document (ECMA regex), so a client sees what is accepted.
_SCHEMA_TAG = '(W/)?"[!#-~]*"'
TAGS_PATTERN = rf"^[ \t]*(\*|{_SCHEMA_TAG}([ \t]*,[ \t]*{_SCHEMA_TAG})*)[ \t]*$"
_ONE_TAG = re.compile(_TAG)
_MALFORMED = 'must be "*" or a comma-separated list of entity tags, such as "12-3"'


def text_header(pattern: str) -> Any:
    """The JSON Schema of an optional text header: a string of `pattern` (not "string or
    null": an absent header is no null, and a client cannot send one)."""

    def schema(field_schema: dict[str, Any]) -> None:
        field_schema.pop("anyOf", None)
        field_schema.update(type="string", pattern=pattern)

    return schema


def parse_precondition(header: str, value: str, *, weak_matches: bool) -> Precondition:
    value = value.strip(" \t")
    if value == "*":
        return ANY_LEAD
    if not _TAG_LIST.fullmatch(value):
        raise InvalidHeaderException(header, _MALFORMED)
    tags = frozenset(tag for weak, tag in _ONE_TAG.findall(value) if weak_matches or not weak)
    return Precondition(tags)


async def if_match(
    value: Annotated[
        str | None,
        Header(
            alias="If-Match",
            json_schema_extra=text_header(TAGS_PATTERN),
            description=(
                'Change the lead only if it still has this ETag (or any of a list; "*": any '
                "existing lead). Otherwise 412, the lead unchanged. Required (428 without it) "
                "when the server sets REQUIRE_IF_MATCH."
            ),
        ),
    ] = None,
) -> Precondition | None:
    if value is None:
        if get_settings().require_if_match:
            raise PreconditionRequiredException()
        return None
    return parse_precondition("If-Match", value, weak_matches=False)


async def if_none_match(
    value: Annotated[
        str | None,
        Header(
            alias="If-None-Match",
            json_schema_extra=text_header(TAGS_PATTERN),
            description="The ETag of the copy the client has: 304, no body, if it is current.",
        ),
    ] = None,
) -> Precondition | None:
    return None if value is None else parse_precondition("If-None-Match", value, weak_matches=True)


IfMatch = Annotated[Precondition | None, Depends(if_match)]
IfNoneMatch = Annotated[Precondition | None, Depends(if_none_match)]
