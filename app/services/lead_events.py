"""Writing a lead's events (app/models/lead_event.py) in the transaction of its change.

Every write path builds its event with `event_values`: the changed fields as
`{"field": {"old": ..., "new": ...}}`, each value as the API renders it (enums as their
values, money as a number, times as ISO 8601 in UTC), so a consumer reads the same values in
an event as in the lead. The request's `X-Request-ID` reaches the event through
`current_request_id`, which `app.api.observability.RequestObserver` sets for each request.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from datetime import datetime
from decimal import Decimal
from itertools import chain
from typing import Any

import orjson
from sqlalchemy import String, bindparam, case, cast, func, insert, literal, select, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from app.models import LeadEvent, LeadEventType
from app.models.types import utcnow

current_request_id: ContextVar[str | None] = ContextVar("current_request_id", default=None)

JSON_OPTIONS = orjson.OPT_UTC_Z
_events = LeadEvent.__table__
# What a write path writes (the dispatcher alone sets `dispatched_at` and `dispatch_order`).
DISPATCHER_COLUMNS = frozenset({"dispatched_at", "dispatch_order"})
EVENT_COLUMNS = tuple(
    column
    for column in _events.c
    if not column.primary_key and column.key not in DISPATCHER_COLUMNS
)


def event_parameters() -> dict[str, Any]:
    """Typed parameters for every column of an event (`event_<column>`), for statements that
    write one: `bound(event_values(...))` fills them."""
    return {c.key: bindparam(f"event_{c.key}", type_=c.type) for c in EVENT_COLUMNS}


def bound(values: dict[str, Any]) -> dict[str, Any]:
    """An event's values as the parameters of `event_parameters`."""
    return {f"event_{name}": value for name, value in values.items()}


# One event from parameters: one shape, compiled once.
INSERT_EVENT = insert(_events).values(event_parameters())


def json_default(value: Any) -> Any:
    """What orjson cannot write itself: money goes out as a JSON number, as `Money` says."""
    if isinstance(value, Decimal):
        return float(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def rendered(value: Any) -> Any:
    """`value` as the API's JSON renders it (app/api/render.py uses the same options)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, tuple):
        value = list(value)
    return orjson.loads(orjson.dumps(value, default=json_default, option=JSON_OPTIONS))


def changes_between(
    before: Mapping[str, Any], after: Mapping[str, Any], fields: Iterable[str]
) -> dict[str, dict[str, Any]]:
    return {
        name: {"old": rendered(before.get(name)), "new": rendered(after.get(name))}
        for name in fields
    }


def event_values(
    type_: LeadEventType,
    lead_id: Any,
    actor_id: int | None,
    version: Any,
    *,
    assigned_to: Any,
    changes: dict[str, Any] | None = None,
    note: str | None = None,
    at: datetime | None = None,
    import_id: int | None = None,
) -> dict[str, Any]:
    """One event's row. `assigned_to` is the lead's assignee after the change (who the live
    stream shows it to). `lead_id`, `version`, `assigned_to` and `changes` may be SQL
    expressions (a bulk INSERT ... SELECT, an INSERT's RETURNING)."""
    return {
        "lead_id": lead_id,
        "type": type_.value,
        "actor_id": actor_id,
        "occurred_at": at or utcnow(),
        "changes": {} if changes is None else changes,
        "note": note,
        "request_id": current_request_id.get(),
        "lead_version": version,
        "assigned_to": assigned_to,
        "import_id": import_id,
    }


def json_object(dialect_name: str, pairs: Mapping[str, Any]) -> ColumnElement[Any]:
    """SQL building the JSON object `pairs` (keys and SQL values) with the database's own
    function, for events written set-based from the rows they describe."""
    build = func.jsonb_build_object if dialect_name == "postgresql" else func.json_object
    return build(
        *chain.from_iterable((literal(key, String), value) for key, value in pairs.items())
    )


def field_change(dialect_name: str, field: str, old: Any, new: Any) -> ColumnElement[Any]:
    """SQL for one field's `changes` (`{"field": {"old": ..., "new": ...}}`), or `{}` on a row
    where the value does not change."""
    return case(
        (old.is_not_distinct_from(new), json_object(dialect_name, {})),
        else_=json_object(
            dialect_name, {field: json_object(dialect_name, {"old": old, "new": new})}
        ),
    )


def record(db: AsyncSession, values: dict[str, Any]) -> None:
    """Add one event to the session's transaction (one INSERT, sent with the next flush)."""
    db.add(LeadEvent(**values))


ERASED = {"old": None, "new": None}


async def erase_event_values(db: AsyncSession, lead_id: int) -> None:
    """A hard delete erases the lead's personal data from its events too: each event keeps its
    type, actor, time and the names of the fields it changed, but every old and new value, and
    the note's text, become null. One UPDATE, the JSON rebuilt in SQL by each database's own
    aggregate."""
    erased = literal(orjson.dumps(ERASED).decode())
    if db.get_bind().dialect.name == "postgresql":
        key = func.jsonb_object_keys(_events.c.changes).column_valued("key")
        rebuilt = func.jsonb_object_agg(key, cast(erased, postgresql.JSONB))
        empty = cast(literal("{}"), postgresql.JSONB)
    else:
        fields = func.json_each(_events.c.changes).table_valued("key").alias("field")
        rebuilt = func.json_group_object(fields.c.key, func.json(erased))
        empty = func.json(literal("{}"))
    scrubbed = select(func.coalesce(rebuilt, empty)).scalar_subquery()
    await db.execute(
        update(_events)
        .where(_events.c.lead_id == lead_id)
        .values(changes=scrubbed, note=None)
        .execution_options(synchronize_session=False)
    )
