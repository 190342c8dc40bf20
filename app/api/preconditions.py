"""The conditional request headers a lead's routes read (issue 13): If-Match on its writes and
If-None-Match on its read, parsed into `app.services.preconditions.Precondition`.

Either header is `*` or a comma-separated list of entity tags (`"12-3"`, `W/"12-3"`), as RFC
9110 section 8.8.3 writes them; anything else is a 400 naming the header. If-Match compares
strongly (a weak tag never matches: a write must know the exact version), If-None-Match weakly.
"""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import Depends, Header

from app.config import get_settings
from app.services.exceptions import InvalidHeaderException, PreconditionRequiredException
from app.services.preconditions import ANY_LEAD, Precondition

_TAG = r'(W/)?("[\x21\x23-\x7e\x80-\xff]*")'
_TAG_LIST = re.compile(rf"{_TAG}(?:[ \t]*,[ \t]*{_TAG})*")
_ONE_TAG = re.compile(_TAG)
_MALFORMED = 'must be "*" or a comma-separated list of entity tags, such as "12-3"'


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
            description="The ETag of the copy the client has: 304, no body, if it is current.",
        ),
    ] = None,
) -> Precondition | None:
    return None if value is None else parse_precondition("If-None-Match", value, weak_matches=True)


IfMatch = Annotated[Precondition | None, Depends(if_match)]
IfNoneMatch = Annotated[Precondition | None, Depends(if_none_match)]
