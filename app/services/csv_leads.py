"""Reading a CSV file of leads (issue 16): its text, its delimiter, which column is which field,
and each row's cells as the values a lead is created from.

What spreadsheets write is accepted: UTF-8 with or without a byte order mark; comma, semicolon
or tab between cells (the one the header row uses most, unless `delimiter` is given); quoted
cells with line breaks inside; headers in any case and with common names (`First Name`,
`E-mail`, `Phone Number`, `Company Name`, `Lead Source`, ...). A `mapping` of
`{"csv column": "field"}` names columns the aliases do not know. Cells are trimmed, and an empty
one is no value; the `'` the export puts before a formula-looking cell is taken off; tags are
split on `,` or `;`; a status or source may be written in any case, with spaces for `_`; dates
may be ISO 8601 or Excel's US style (`12/1/2026`, `12/1/2026 14:30`, `12/1/2026 2:30 PM`).

Columns the export writes but no one sets (`id`, `created_at`, `version`, ...) are ignored, so
an export re-imports; any other column not known is listed in the report.
"""

from __future__ import annotations

import csv
import io
import itertools
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from app.schemas.lead import LeadRead
from app.services.exceptions import ValidationException
from app.services.lead_creation import CREATE_FIELDS
from app.services.lead_export import unquote_cell

DELIMITERS = (",", ";", "\t")
FILE = "file"

# Header spellings, compared with case, spaces and punctuation taken out.
ALIASES = {
    "first_name": ("firstname", "first", "givenname", "forename"),
    "last_name": ("lastname", "last", "surname", "familyname"),
    "email": ("email", "emailaddress", "mail"),
    "phone": ("phone", "phonenumber", "telephone", "tel", "mobile", "mobilephone", "cell"),
    "company": ("company", "companyname", "organization", "organisation", "account"),
    "job_title": ("jobtitle", "title", "position", "role"),
    "source": ("source", "leadsource"),
    "status": ("status", "leadstatus", "stage"),
    "tags": ("tags", "tag", "labels"),
    "notes": ("notes", "note", "comments", "comment", "description"),
    "lead_score": ("leadscore", "score"),
    "probability": ("probability",),
    "estimated_value": ("estimatedvalue", "value", "dealvalue", "amount"),
    "assigned_to": ("assignedto", "ownerid"),
    "call_attempts": ("callattempts", "calls"),
    "last_contact_date": ("lastcontactdate", "lastcontacted", "lastcontact"),
    "next_follow_up_date": ("nextfollowupdate", "followupdate", "nextfollowup"),
}
HEADER_FIELDS = {alias: name for name, aliases in ALIASES.items() for alias in aliases}
# What the export writes that is no one's to set: skipped quietly, so an export re-imports.
READ_ONLY_FIELDS = frozenset(LeadRead.model_fields) - CREATE_FIELDS
ENUM_FIELDS = frozenset({"source", "status"})
DATE_FIELDS = frozenset({"last_contact_date", "next_follow_up_date"})
WHOLE_NUMBER_FIELDS = frozenset({"lead_score", "call_attempts", "assigned_to"})
NUMBER_FIELDS = frozenset({"probability", "estimated_value"})
TAG_SPLIT = re.compile(r"[,;]")
US_DATE = re.compile(
    r"^(?P<m>\d{1,2})/(?P<d>\d{1,2})/(?P<y>\d{4})"
    r"(?:[ T](?P<H>\d{1,2}):(?P<M>\d{2})(?::(?P<S>\d{2}))?\s*(?P<ampm>[AaPp][Mm])?)?$"
)


def header_key(text: str) -> str:
    return re.sub(r"[^0-9a-z]", "", text.lower())


@dataclass
class CsvFile:
    """A decoded, parsed file: the field of each column (None: not imported), the columns not
    known, and the data rows with their row numbers (the header is row 1)."""

    headers: list[str]
    fields: list[str | None]
    text: str = ""
    delimiter: str = ","
    unknown_columns: list[str] = field(default_factory=list)
    total: int = 0  # data rows

    def rows(self) -> list[tuple[int, list[str]]]:
        """Every data row (a file small enough to hold whole)."""
        return list(self._data_rows(0))

    def chunks(self, start: int, size: int) -> Iterator[list[tuple[int, list[str]]]]:
        """The data rows from the `start`-th, `size` at a time, read from the text as they are
        wanted: a background import holds one chunk's cells, not the file's."""
        rows = self._data_rows(start)
        while batch := list(itertools.islice(rows, size)):
            yield batch

    def _data_rows(self, start: int) -> Iterator[tuple[int, list[str]]]:
        reader = csv.reader(io.StringIO(self.text, newline=""), delimiter=self.delimiter)
        next(reader)  # the header
        return itertools.islice(_data_rows(reader), start, None)

    def values(self, cells: list[str]) -> tuple[dict[str, Any], dict[str, str]]:
        """One row as lead fields (empty cells left out), and the column each came from."""
        values: dict[str, Any] = {}
        columns: dict[str, str] = {}
        for name, header, cell in zip(self.fields, self.headers, cells, strict=False):
            if name is None:
                continue
            text = unquote_cell(cell.strip()).strip()
            if not text:
                continue
            values[name] = cell_value(name, text)
            columns[name] = header
        return values, columns


def cell_value(name: str, text: str) -> Any:
    """A cell's text as what a lead's field takes; text that is no such value is left as it
    is, for the field's own rules to refuse by name."""
    if name == "tags":
        return [tag.strip() for tag in TAG_SPLIT.split(text) if tag.strip()]
    if name in ENUM_FIELDS:
        return text.upper().replace(" ", "_").replace("-", "_")
    if name in DATE_FIELDS:
        return us_date(text) or text
    if name in WHOLE_NUMBER_FIELDS and re.fullmatch(r"[0-9]+", text):
        return int(text)
    if name in NUMBER_FIELDS:
        return _number(name, text)
    return text


def _number(name: str, text: str) -> Any:
    plain = text.replace(" ", "").lstrip("$€£")
    try:
        number = Decimal(plain)
    except InvalidOperation:
        return text
    if not number.is_finite():
        return text
    return float(number) if name == "probability" else number


def us_date(text: str) -> str | None:
    """Excel's US date (and time) as ISO 8601 in UTC; None for anything else."""
    match = US_DATE.match(text)
    if match is None:
        return None
    hour = int(match["H"] or 0)
    ampm = (match["ampm"] or "").lower()
    if ampm == "pm" and hour < 12:
        hour += 12
    elif ampm == "am" and hour == 12:
        hour = 0
    try:
        when = datetime(
            int(match["y"]),
            int(match["m"]),
            int(match["d"]),
            hour,
            int(match["M"] or 0),
            int(match["S"] or 0),
        )
    except ValueError:
        return None  # left as it is, for the field's own check to refuse by name
    return when.isoformat() + "Z"


def decode(content: bytes) -> str:
    try:
        return content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValidationException.at(
            FILE, f"must be UTF-8 text (byte {exc.start + 1} is not)"
        ) from None


def sniff_delimiter(text: str) -> str:
    """The delimiter the header row uses most (commas when it has none)."""
    first_line = next(iter(text.splitlines()), "")
    counts = {delimiter: first_line.count(delimiter) for delimiter in DELIMITERS}
    best = max(DELIMITERS, key=lambda delimiter: counts[delimiter])
    return best if counts[best] else ","


def read_csv(
    content: bytes,
    *,
    delimiter: str | None = None,
    mapping: Mapping[str, str] | None = None,
    max_rows: int,
) -> CsvFile:
    """The file, or ValidationException naming `file` (or `mapping`) for one that cannot be
    read as leads at all: not UTF-8, no header, no column of a name, too many rows. The rows
    are counted and checked as CSV here, and read again when wanted (`rows`, `chunks`)."""
    text = decode(content)
    delimiter = delimiter or sniff_delimiter(text)
    rows = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        headers = [header.strip() for header in next(rows)]
    except StopIteration:
        raise ValidationException.at(FILE, "is empty: it needs a header row") from None
    except csv.Error as exc:
        raise ValidationException.at(FILE, f"is not CSV: {exc}") from None
    parsed = CsvFile(headers, column_fields(headers, mapping or {}), text, delimiter)
    parsed.unknown_columns = [
        header
        for header, name in zip(headers, parsed.fields, strict=True)
        if name is None and header and header_key(header) not in READ_ONLY_KEYS
    ]
    if "first_name" not in parsed.fields or "last_name" not in parsed.fields:
        raise ValidationException.at(
            FILE, "needs a first name and a last name column (e.g. 'First Name', 'Last Name')"
        )
    try:
        for _ in _data_rows(rows):
            if parsed.total >= max_rows:
                raise ValidationException.at(FILE, f"has more than {max_rows} rows")
            parsed.total += 1
    except csv.Error as exc:
        raise ValidationException.at(FILE, f"is not CSV: {exc}") from None
    return parsed


READ_ONLY_KEYS = frozenset(header_key(name) for name in READ_ONLY_FIELDS)
FIELD_KEYS = {header_key(name): name for name in CREATE_FIELDS}


def column_fields(headers: list[str], mapping: Mapping[str, str]) -> list[str | None]:
    """The field each column fills: the mapping's, else an alias's; a field once only."""
    by_key = {header_key(column): name for column, name in mapping.items()}
    taken: set[str] = set()
    fields: list[str | None] = []
    for header in headers:
        key = header_key(header)
        name = by_key.get(key) or HEADER_FIELDS.get(key) or FIELD_KEYS.get(key)
        if name in taken:
            name = None
        if name is not None:
            taken.add(name)
        fields.append(name)
    unknown = set(mapping.values()) - CREATE_FIELDS
    if unknown:
        raise ValidationException.at(
            "mapping", f"names no field a lead can be imported with: {', '.join(sorted(unknown))}"
        )
    return fields


def _data_rows(rows: Iterator[list[str]]) -> Iterator[tuple[int, list[str]]]:
    """Each non-blank data row with its number, the header being row 1 (a quoted line break
    makes a row longer, not two)."""
    for number, cells in enumerate(rows, start=2):
        if any(cell.strip() for cell in cells):
            yield number, cells
