"""`POST /leads/import`: its options and its report; `GET /imports/{id}`: a background
import's progress (issue 16)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.models import ImportMode, ImportStatus, OnError

Delimiter = Annotated[str, Field(pattern=r"^(,|;|\t|\|)$")]


class ImportQuery(BaseModel):
    """How to import: the query of `POST /leads/import`."""

    model_config = ConfigDict(extra="forbid")

    mode: ImportMode = Field(
        ImportMode.INSERT,
        description="insert: every row is a new lead; upsert: a row whose email (else phone) "
        "is that of a lead you may see updates it.",
    )
    on_error: OnError = Field(
        OnError.ABORT,
        description="abort: one bad row and nothing is imported (422 listing every bad row); "
        "skip: the good rows go in, the bad ones are reported.",
    )
    dry_run: bool = Field(False, description="true: the whole report, nothing written.")
    delimiter: Delimiter | None = Field(
        None, description="`,`, `;`, tab or `|`; by default the one the header row uses most."
    )
    mapping: str | None = Field(
        None,
        min_length=2,
        description='JSON `{"csv column": "lead field"}` for columns the usual names miss, '
        'e.g. `{"Organisation": "company"}`.',
    )

    @field_validator("mapping")
    @classmethod
    def _json_object_of_text(cls, value: str | None) -> str | None:
        if value is None:
            return value
        try:
            parsed: Any = orjson.loads(value)
        except orjson.JSONDecodeError:
            raise ValueError("must be a JSON object") from None
        if not isinstance(parsed, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in parsed.items()
        ):
            raise ValueError('must be a JSON object of text: {"csv column": "lead field"}')
        return value

    def mapping_dict(self) -> dict[str, str] | None:
        return None if self.mapping is None else orjson.loads(self.mapping)


class ImportRowError(BaseModel):
    row: int = Field(description="The row's number in the file, the header being row 1.")
    column: str | None = Field(description="The column, as the file names it.")
    value: str | None = Field(description="What the cell held (its first 200 characters).")
    message: str = Field(description="What is wrong with it.")


class ImportReport(BaseModel):
    """What the import did, row by row."""

    import_id: int = Field(
        description="The import's id: `GET /imports/{id}` shows this report again."
    )
    status: ImportStatus = Field(
        description="done; aborted (on_error=abort with bad rows: nothing was written); failed "
        "(a background import that could not finish: see the import's `error`)."
    )
    dry_run: bool = Field(description="Whether nothing was written.")
    total_rows: int = Field(description="Data rows in the file (blank ones not counted).")
    created: int = Field(description="New leads.")
    updated: int = Field(description="Leads changed (upsert).")
    unchanged: int = Field(description="Rows matching a lead that already held their values.")
    skipped: int = Field(description="Rows refused (on_error=skip): see `errors`.")
    errors: list[ImportRowError] = Field(description="Every problem of every refused row.")
    unknown_columns: list[str] = Field(description="Columns not imported: no field's name.")


class ImportJob(BaseModel):
    """A background import: how far it got and, once it has ended, its report."""

    import_id: int = Field(description="The import's id.")
    status: ImportStatus = Field(
        description="queued (waiting for a worker); checking (on_error=abort: every row is "
        "checked before any is written); writing; then done, aborted or failed."
    )
    mode: ImportMode = Field(description="As sent: insert or upsert.")
    on_error: OnError = Field(description="As sent: abort or skip.")
    dry_run: bool = Field(description="As sent: true writes nothing.")
    processed_rows: int = Field(
        description="Rows handled so far (checked, with on_error=abort): with `total_rows`, "
        "a progress bar."
    )
    total_rows: int = Field(description="Data rows in the file.")
    created_at: datetime = Field(description="When the file was sent.")
    finished_at: datetime | None = Field(description="When the import ended.")
    error: str | None = Field(description="Why a failed import could not finish.")
    report: ImportReport | None = Field(description="Once the import has ended, its report.")
