"""Keyset pagination: an opaque cursor that says "after this row" instead of "skip N rows".

`skip=100000` makes the database produce and throw away 100,000 rows; a cursor seeks straight
to the last row of the previous page through the sort index, so every page costs the same. And
rows inserted meanwhile cannot shift the pages, since a page starts after a row, not at a
position.

The cursor is URL-safe base64 of a small JSON document: the sort key and order it belongs to,
the last row's sort value and its id. It is opaque to clients; a cursor made for another sort is
refused.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, or_, tuple_
from sqlalchemy.sql.elements import ColumnElement

from app.models import Lead, LeadStatus
from app.services.exceptions import ValidationException
from app.services.lead_filters import NULLABLE_SORTS, STATUS_POSITION, sort_column

DATETIME_SORTS = frozenset({"created_at", "updated_at", "last_contact_date"})


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


def encode_cursor(lead: Lead, sort_by: str, sort_order: str) -> str:
    document = {"s": sort_by, "o": sort_order, "v": sort_value(lead, sort_by), "i": lead.id}
    raw = json.dumps(document, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(token: str, sort_by: str, sort_order: str) -> Cursor:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        document = json.loads(raw)
        cursor = Cursor(document["s"], document["o"], document["v"], int(document["i"]))
        if cursor.sort_by in DATETIME_SORTS and cursor.value is not None:
            cursor = Cursor(
                cursor.sort_by, cursor.sort_order, datetime.fromisoformat(cursor.value), cursor.id
            )
    except (ValueError, KeyError, TypeError, binascii.Error, json.JSONDecodeError):
        raise ValidationException(
            "cursor is not a cursor this API handed out.", field="cursor"
        ) from None
    if (cursor.sort_by, cursor.sort_order) != (sort_by, sort_order):
        raise ValidationException(
            f"cursor belongs to sort_by={cursor.sort_by}, sort_order={cursor.sort_order}; "
            "ask with the same sort or start again without a cursor.",
            field="cursor",
        )
    return cursor


def after(cursor: Cursor) -> ColumnElement[bool]:
    """Rows that come after the cursor's row in its order (empty values last, ties by id)."""
    column = sort_column(cursor.sort_by)
    descending = cursor.sort_order == "desc"
    if cursor.sort_by not in NULLABLE_SORTS:
        if descending:
            return tuple_(column, Lead.id) < tuple_(cursor.value, cursor.id)
        return tuple_(column, Lead.id) > tuple_(cursor.value, cursor.id)
    beyond_id = Lead.id < cursor.id if descending else Lead.id > cursor.id
    if cursor.value is None:  # already among the empty values, which come last
        return and_(column.is_(None), beyond_id)
    beyond_value = column < cursor.value if descending else column > cursor.value
    return or_(beyond_value, and_(column == cursor.value, beyond_id), column.is_(None))
