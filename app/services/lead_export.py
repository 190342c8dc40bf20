"""Every lead a caller may see, streamed as CSV or JSON Lines (issue 16).

One statement, read through a server-side cursor (`yield_per`) in one read-only transaction: the
export is one consistent snapshot of the leads, in id order, and the process holds one batch
of rows at a time however many leads there are. Each lead is rendered as the API renders it
(`lead_fields`), then written as a CSV row or a JSON line.

In CSV, a text cell a spreadsheet would take for a formula (one starting with `=`, `+`, `-`,
`@`, a tab or a carriage return) is written with a `'` in front, as OWASP advises against CSV
injection; the import takes that quote off again (`unquote_cell`), so an export re-imports as
it was. Phone numbers are stored as `+<digits>`, so every phone cell carries the quote.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Callable
from datetime import date, datetime
from decimal import Decimal
from types import UnionType
from typing import Any, get_args, get_origin

import orjson
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from app.models.types import utcnow
from app.schemas.filters import LeadFilters
from app.schemas.lead import LeadRead, lead_fields
from app.services.base import SessionOpener
from app.services.lead_events import JSON_OPTIONS, json_default
from app.services.lead_filters import LEADS, lead_conditions
from app.services.lead_queries import LEAD_COLUMNS, LeadRow
from app.services.lead_reads import account_role
from app.services.reader import Reader
from app.services.security import AccessClaims

EXPORT_FIELDS = tuple(LeadRead.model_fields)  # every field a lead reads with, in that order
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
TAG_SEPARATOR = ";"
BATCH_ROWS = 1000
UTF8_BOM = "\ufeff"


def spreadsheet_safe(text: str) -> str:
    """`text` as a CSV cell no spreadsheet runs as a formula."""
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def unquote_cell(text: str) -> str:
    """A cell as it was before `spreadsheet_safe`."""
    if text.startswith("'") and text[1:].startswith(FORMULA_STARTS):
        return text[1:]
    return text


def csv_cell(value: Any) -> str:
    """One value as its CSV cell: empty for null, tags joined with `;`, times in ISO 8601
    UTC as the API writes them, text made spreadsheet-safe."""
    if value is None:
        return ""
    if isinstance(value, str):  # text, and the enums (StrEnum)
        return _text(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return _time(value)
    if isinstance(value, list | tuple):
        return _tags(value)
    if isinstance(value, Decimal):
        return str(json_default(value))
    if isinstance(value, date):
        return value.isoformat()
    return str(value)  # a number


def _text(value: str) -> str:
    return "" if value is None else "'" + value if value.startswith(FORMULA_STARTS) else value


def _time(value: datetime | None) -> str:
    return "" if value is None else value.isoformat().replace("+00:00", "Z")


def _tags(value: list[str]) -> str:
    return spreadsheet_safe(TAG_SEPARATOR.join(value))


def _plain(value: Any) -> str:
    return "" if value is None else str(value)


def _cell_writer(annotation: Any) -> Callable[[Any], str]:
    """What writes a field's cells, chosen once from its type in `LeadRead`: a million leads
    make 29 million cells, and `csv_cell` asks each value what it is."""
    if get_origin(annotation) is list:
        return _tags
    if isinstance(annotation, UnionType):
        kinds = set(get_args(annotation)) - {type(None)}
    else:
        kinds = {annotation}
    if kinds == {str}:
        return _text
    if kinds == {datetime}:
        return _time
    if kinds <= {int}:
        return _plain
    return csv_cell


CELL_WRITERS = tuple(
    (name, _cell_writer(LeadRead.model_fields[name].annotation)) for name in EXPORT_FIELDS
)


class LeadExport:
    @staticmethod
    async def scope(reader: Reader, caller: AccessClaims) -> int | None:
        """Whose leads the caller may export: None for a superuser (everyone's), else their own
        id. AuthenticationException for an account that may not sign in: checked before the
        answer starts, so it is a 401 and not a cut-off file."""
        superuser = await account_role(reader, caller)
        return None if superuser else caller.user_id

    @staticmethod
    def file_name(format_: str) -> str:
        return f"leads-{utcnow():%Y%m%d}.{format_}"


async def lead_batches(
    sessions: SessionOpener, filters: LeadFilters, scope_user_id: int | None
) -> AsyncIterator[list[dict[str, Any]]]:
    """The matching leads (only `scope_user_id`'s, when given) in id order, rendered, a batch
    at a time."""
    statement = (
        select(*LEAD_COLUMNS)
        .where(*lead_conditions(filters, scope_user_id=scope_user_id))
        .order_by(LEADS.id)
    )
    async with sessions() as db:
        if db.get_bind().dialect.name == "postgresql" and not isinstance(db.bind, AsyncConnection):
            # A server-side cursor needs a transaction (the app's reads run in autocommit), and
            # the export one snapshot: REPEATABLE READ. (A session bound to one connection, a
            # script's, runs in that connection's transaction.)
            await db.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        result = await db.stream(statement, execution_options={"yield_per": BATCH_ROWS})
        async for rows in result.partitions():
            now = utcnow()
            yield [lead_fields(LeadRow._make(row), now) for row in rows]


async def csv_chunks(
    batches: AsyncIterator[list[dict[str, Any]]], *, bom: bool = False
) -> AsyncIterator[bytes]:
    """The header row at once (a first byte before the first query answers), then a chunk of
    rows per batch."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(EXPORT_FIELDS)
    yield ((UTF8_BOM if bom else "") + buffer.getvalue()).encode()
    async for batch in batches:
        buffer.seek(0)
        buffer.truncate()
        writer.writerows([write(lead[name]) for name, write in CELL_WRITERS] for lead in batch)
        yield buffer.getvalue().encode()


async def jsonl_chunks(batches: AsyncIterator[list[dict[str, Any]]]) -> AsyncIterator[bytes]:
    """One JSON object per line, each exactly a lead as `GET /leads/{id}` answers it."""
    async for batch in batches:
        yield b"".join(
            orjson.dumps(
                lead, default=json_default, option=JSON_OPTIONS | orjson.OPT_APPEND_NEWLINE
            )
            for lead in batch
        )
