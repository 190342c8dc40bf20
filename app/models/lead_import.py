"""`LeadImport`: one CSV import (issue 16), its file while it runs, and its report.

A file of more than IMPORT_SYNC_MAX_ROWS rows is imported in the background: the request keeps
the file here (`content`) and answers 202; an import worker (app/workers/imports.py) claims the
row, works through the file a chunk at a time and records how far it got (`processed_rows`)
with each chunk, so a poll shows progress and a worker that dies is taken over where it
stopped (its lease, `locked_until`, runs out). `attempts` counts the claims: a worker's
writes are kept only while the row still carries the attempt it claimed.

Each lead an import created or changed has an event naming it (`lead_events.import_id`); each
refused row is a `LeadImportError`.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base
from app.models.types import UTCDateTime

BIG_ID = BigInteger().with_variant(Integer(), "sqlite")


class ImportStatus(StrEnum):
    QUEUED = "queued"  # waiting for a worker
    CHECKING = "checking"  # on_error=abort: every row checked first, nothing written yet
    WRITING = "writing"  # rows going in (on_error=skip: chunk by chunk, each one committed)
    DONE = "done"  # every row handled; the report says how
    ABORTED = "aborted"  # on_error=abort and a row was refused: nothing was written
    FAILED = "failed"  # could not finish (`error` says why); with on_error=abort, nothing written


FINISHED = frozenset({ImportStatus.DONE, ImportStatus.ABORTED, ImportStatus.FAILED})


class ImportMode(StrEnum):
    INSERT = "insert"  # every row is a new lead
    UPSERT = "upsert"  # a row matching a lead (email, else phone) updates it


class OnError(StrEnum):
    ABORT = "abort"  # one bad row and nothing is written
    SKIP = "skip"  # the good rows go in; the bad ones are reported


class LeadImport(Base):
    __tablename__ = "lead_imports"
    __table_args__ = (
        # What the workers look for: unfinished imports, oldest first.
        Index("ix_lead_imports_status_id", "status", "id"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BIG_ID, primary_key=True)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    status: Mapped[str] = mapped_column(String(16))
    mode: Mapped[str] = mapped_column(String(16))
    on_error: Mapped[str] = mapped_column(String(16))
    dry_run: Mapped[bool] = mapped_column(Boolean, default=False)
    # How to read the file: {"delimiter": ..., "mapping": {...}}.
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # The file, kept until the import ends; loaded only when asked for.
    content: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)
    total_rows: Mapped[int] = mapped_column(Integer)
    processed_rows: Mapped[int] = mapped_column(Integer, default=0)
    # The counts so far: created, updated, unchanged, skipped; and unknown_columns.
    report: Mapped[dict[str, Any]] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    def __repr__(self) -> str:
        return f"<LeadImport {self.id} {self.status} {self.processed_rows}/{self.total_rows}>"


class LeadImportError(Base):
    """One problem of one refused row: the report's `errors`."""

    __tablename__ = "lead_import_errors"
    __table_args__ = (Index("ix_lead_import_errors_import_id_row", "import_id", "row"),)

    id: Mapped[int] = mapped_column(BIG_ID, primary_key=True)
    import_id: Mapped[int] = mapped_column(
        BIG_ID, ForeignKey("lead_imports.id", ondelete="CASCADE")
    )
    row: Mapped[int] = mapped_column(Integer)
    column: Mapped[str | None] = mapped_column(Text)
    value: Mapped[str | None] = mapped_column(Text)
    message: Mapped[str] = mapped_column(Text)
