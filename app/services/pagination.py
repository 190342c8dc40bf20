"""Keyset pagination: an opaque cursor that says "after this row" instead of "skip N rows".

`skip=100000` makes the database produce and throw away 100,000 rows; a cursor seeks straight
to the last row of the previous page through the sort index, so every page costs the same. And
rows inserted meanwhile cannot shift the pages, since a page starts after a row, not at a
position.

The cursor is URL-safe base64 of a small JSON document: the sort key and order it belongs to,
the last row's sort value and its id, and a digest of the filters. It is opaque to clients; a
cursor made for another sort or other filters is refused.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, or_, tuple_
from sqlalchemy.sql.elements import ColumnElement

from app.models import Lead, LeadStatus
from app.models.validation import MAX_INT32, is_whole_number, no_nul
from app.schemas.filters import LeadPaging
from app.services.exceptions import ValidationException
from app.services.lead_filters import LEADS, NULLABLE_SORTS, STATUS_POSITION, sort_column

DATETIME_SORTS = frozenset({"created_at", "updated_at", "last_contact_date"})
TEXT_SORTS = frozenset({"last_name", "company"})


@dataclass(frozen=True)
class Cursor:
    sort_by: str
    sort_order: str
    value: Any
    id: int


def sort_value(lead: Lead, sort_by: str) -> Any:
    """The value a lead sorts by, as the cursor stores it."""
    if sort_by == "status":
        return STATUS_POSITION[LeadStatus(lead.status)]
    value = getattr(lead, sort_by)
    return value.isoformat() if isinstance(value, datetime) else value


def encode_cursor(lead: Lead, paging: LeadPaging, fingerprint: str) -> str:
    document = {
        "s": paging.sort_by,
        "o": paging.sort_order,
        "v": sort_value(lead, paging.sort_by),
        "i": lead.id,
        "f": fingerprint,
    }
    return pack(document)


def pack(document: dict[str, Any]) -> str:
    """A cursor's document as the opaque token clients pass back: URL-safe base64 of JSON."""
    # ensure_ascii=False: a sort value in any script costs its UTF-8 bytes, not six per letter
    raw = json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def unpack(token: str) -> Any:
    """The document of a `pack`ed token; ValueError (or binascii.Error) for anything else."""
    return json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))


# What a token that is no cursor of ours raises while it is read.
NOT_A_CURSOR = (
    ValueError,
    KeyError,
    TypeError,
    OverflowError,
    binascii.Error,
    json.JSONDecodeError,
)


def decode_cursor(token: str, paging: LeadPaging, fingerprint: str) -> Cursor:
    """The cursor's position, if it was made for this very list: the same sort and the same
    filters (`LeadFilters.fingerprint`). Followed under other filters it would start a page at
    a row of another result."""
    try:
        document = unpack(token)
        cursor = Cursor(
            document["s"],
            document["o"],
            _checked_value(document["s"], document["v"]),
            _checked_id(document["i"]),
        )
        made_for = document["f"]
    except NOT_A_CURSOR:
        raise ValidationException.at("cursor", "is not a cursor this API handed out") from None
    if (cursor.sort_by, cursor.sort_order, made_for) != (
        paging.sort_by,
        paging.sort_order,
        fingerprint,
    ):
        raise ValidationException.at(
            "cursor",
            "was made for other filters or another sort; ask with the same ones, or start "
            "again without a cursor",
        )
    return cursor


def _checked_id(value: Any) -> int:
    if not is_whole_number(value) or not 1 <= value <= MAX_INT32:
        raise ValueError("not a lead id")
    return value


def _checked_value(sort_by: Any, value: Any) -> Any:
    """The last row's sort value, of the type its column holds. The cursor is the client's
    text: a value of another type (a string for a score, a number too big for the column, a NUL
    in a name) would otherwise reach the database and fail there instead of being refused."""
    if value is None and sort_by in NULLABLE_SORTS:
        return None
    if sort_by in DATETIME_SORTS and isinstance(value, str):
        moment = datetime.fromisoformat(value)
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    if sort_by in TEXT_SORTS and isinstance(value, str):
        return no_nul("cursor", value)
    if is_whole_number(value):
        if sort_by == "lead_score" and 0 <= value <= 100:
            return value
        if sort_by == "status" and 0 <= value < len(STATUS_POSITION):
            return value
    raise ValueError(f"not a {sort_by} value")


def after(cursor: Cursor) -> ColumnElement[bool]:
    """Rows that come after the cursor's row in its order (empty values last, ties by id)."""
    column = sort_column(cursor.sort_by)
    descending = cursor.sort_order == "desc"
    if cursor.sort_by not in NULLABLE_SORTS:
        if descending:
            return tuple_(column, LEADS.id) < tuple_(cursor.value, cursor.id)
        return tuple_(column, LEADS.id) > tuple_(cursor.value, cursor.id)
    beyond_id = LEADS.id < cursor.id if descending else LEADS.id > cursor.id
    if cursor.value is None:  # already among the empty values, which come last
        return and_(column.is_(None), beyond_id)
    beyond_value = column < cursor.value if descending else column > cursor.value
    return or_(beyond_value, and_(column == cursor.value, beyond_id), column.is_(None))


# --- id cursors: a page of rows newest first, the next page below the last id -----------------

MAX_ROW_ID = 2**63 - 1  # BIGINT: an id a cursor names must bind as one
NOT_OURS = "is not a cursor this API handed out"


def id_cursor(last_id: int, made_for: str) -> str:
    """The cursor of the page after one ending at `last_id`, for the query `made_for` names."""
    return pack({"b": last_id, "f": made_for})


def id_before(token: str | None, made_for: str, mismatch: str) -> int | None:
    """The id the page `token` asks for starts below; None without a cursor. 422 naming
    `cursor` for a token that is no `id_cursor`, and (`mismatch`) for one made for another
    query, which it would walk with gaps."""
    if token is None:
        return None
    try:
        document = unpack(token)
        before, given_for = document["b"], document["f"]
        if not is_whole_number(before) or not 0 < before <= MAX_ROW_ID:
            raise ValueError(before)
    except NOT_A_CURSOR:
        raise ValidationException.at("cursor", NOT_OURS) from None
    if given_for != made_for:
        raise ValidationException.at("cursor", mismatch)
    return int(before)
