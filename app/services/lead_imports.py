"""CSV imports (issue 16): a file of leads in, a report of what each row did out.

Every row goes through what `POST /leads` applies: `LeadCreate`'s field types, then the same
`prepare_new_lead` / `assignee_of_new_lead` / `build_new_lead` (so an imported lead is checked,
normalised, scored and noted exactly like one created by hand). A refused row is reported with
its row number (the header is row 1), the column, the value and why.

- `mode=insert`: every valid row is a new lead.
- `mode=upsert`: a row whose normalised email (else phone) is that of a live lead the caller
  may see updates that lead, through `apply_update` as `PATCH /leads/{id}` does (each change
  in the history). An agent sees only their own leads, so an import can never touch another
  agent's lead. A cell holding what the lead already has is no change, so a file exported
  and imported again leaves every lead as it was (`unchanged`). Two rows naming one lead in
  one file: the second is refused.
- `on_error=abort`: one refused row and nothing is written; `on_error=skip`: the valid rows go
  in, the refused ones are reported.
- `dry_run`: the whole report, nothing written.

A file of up to IMPORT_SYNC_MAX_ROWS rows is imported while the request waits, in one
transaction (`LeadImports.run`). A larger one is kept in `lead_imports` and imported by a worker
(app/workers/imports.py) through `ImportJobs`, a chunk of CHUNK_ROWS rows per transaction, each
recording how far the import got with what it wrote:

- on_error=skip: each chunk's leads, events, refused rows and counts are committed together,
  so a worker that dies is taken over at the first chunk it had not committed;
- on_error=abort: every row is checked first, chunk by chunk, writing nothing but the
  progress and the refused rows; then, if none was refused, every row is written in one
  transaction, so the import is applied whole or not at all, whenever a worker dies.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from pydantic import ValidationError
from sqlalchemy import func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import get_settings
from app.models import (
    ImportMode,
    ImportStatus,
    Lead,
    LeadEvent,
    LeadImport,
    LeadImportError,
    OnError,
    User,
)
from app.models.lead_import import FINISHED
from app.models.types import utcnow
from app.schemas.lead import LeadCreate
from app.services.base import as_data, get_acting_user, transactional
from app.services.csv_leads import FILE, CsvFile, read_csv
from app.services.exceptions import (
    CRMException,
    ImportNotFoundException,
    ImportTakenOverException,
    ValidationException,
)
from app.services.lead_changes import apply_update, record_update
from app.services.lead_creation import (
    NewLeadData,
    assignee_of_new_lead,
    build_new_lead,
    created_event,
    prepare_new_lead,
    row_values,
)

VALUE_SHOWN = 200  # characters of a refused cell quoted in the report
CHUNK_ROWS = 1000  # rows a background import handles per transaction
MAX_ATTEMPTS = 3  # claims of one import before it is marked failed
COUNTS = ("created", "updated", "unchanged", "skipped")
LEADS = Lead.__table__
EVENTS = LeadEvent.__table__


@dataclass(frozen=True)
class ImportOptions:
    mode: ImportMode = ImportMode.INSERT
    on_error: OnError = OnError.ABORT
    dry_run: bool = False
    delimiter: str | None = None
    mapping: dict[str, str] | None = None

    def read(self, content: bytes, max_rows: int) -> CsvFile:
        return read_csv(content, delimiter=self.delimiter, mapping=self.mapping, max_rows=max_rows)

    @classmethod
    def of(cls, job: LeadImport) -> ImportOptions:
        return cls(
            mode=ImportMode(job.mode),
            on_error=OnError(job.on_error),
            dry_run=job.dry_run,
            delimiter=job.options.get("delimiter"),
            mapping=job.options.get("mapping"),
        )


@dataclass
class Candidate:
    """A row that passed the field checks: the lead it would be, and what it said."""

    row: int
    columns: dict[str, str]
    values: dict[str, Any]
    new: NewLeadData
    lead: Lead


@dataclass
class Outcome:
    """What some rows did (or, checked only, would do)."""

    created: int = 0
    updated: int = 0
    unchanged: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    creates: list[Candidate] = field(default_factory=list)
    updates: list[tuple[Lead, dict[str, Any], str | None]] = field(default_factory=list)

    def refuse(self, row: int, columns: dict[str, str], values: dict[str, Any], exc: Any) -> None:
        for name, message in _problems(exc):
            shown = values.get(name)
            self.errors.append(
                {
                    "row": row,
                    "column": columns.get(name, name) if name else None,
                    "value": None if shown is None else str(shown)[:VALUE_SHOWN],
                    "message": message,
                }
            )

    @property
    def skipped(self) -> int:
        return len({error["row"] for error in self.errors})

    def counts(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in COUNTS}


@dataclass(frozen=True)
class ImportAnswer:
    """`run`'s answer: the report of a file imported at once, or (`queued`) the import that a
    worker will run, as `ImportJobs.status` shows it."""

    queued: bool
    body: dict[str, Any]


@dataclass(frozen=True)
class Claim:
    """A worker's hold on one import: kept while the row has this `attempt`."""

    import_id: int
    attempt: int
    user_id: int
    status: ImportStatus
    processed_rows: int
    total_rows: int
    options: ImportOptions


class LeadImports:
    @staticmethod
    @transactional
    async def run(
        db: AsyncSession,
        content: bytes,
        user_id: int,
        options: ImportOptions | None = None,
        *,
        queue: bool = False,
    ) -> ImportAnswer:
        """Import the CSV file `content` as `user_id`. ValidationException naming `file` for
        a file that cannot be read as leads, and (abort, at once) listing every refused row.
        A file of more than IMPORT_SYNC_MAX_ROWS rows (any file, with `queue`) is kept for a
        worker: `queued`."""
        options = options or ImportOptions()
        user = await get_acting_user(db, user_id)
        settings = get_settings()
        parsed = options.read(content, settings.import_max_rows)
        if queue or parsed.total > settings.import_sync_max_rows:
            job = _new_job(user, options, parsed, ImportStatus.QUEUED)
            job.content = content
            db.add(job)
            await db.flush()
            return ImportAnswer(True, status_of(job, []))
        write = not options.dry_run
        outcome = await _rows(db, parsed, parsed.rows(), user, options, {}, write=write)
        aborted = bool(outcome.errors) and options.on_error is OnError.ABORT
        if options.dry_run or aborted:
            db.expunge_all()  # nothing of what was checked is written
        if aborted and not options.dry_run:
            raise ValidationException(_abort_problems(outcome.errors))
        if aborted:
            outcome.created = outcome.updated = outcome.unchanged = 0
        status = ImportStatus.ABORTED if aborted else ImportStatus.DONE
        job = _new_job(user, options, parsed, status)  # a dry run's report is kept too
        job.processed_rows = job.total_rows
        job.finished_at = job.created_at
        db.add(job)
        await db.flush()
        if options.dry_run:
            await _store_errors(db, job.id, outcome.errors)
        else:
            await _write(db, user, job.id, outcome)
        job.report = {**job.report, **outcome.counts()}
        return ImportAnswer(False, _report(job.id, status, options.dry_run, parsed, outcome))


class ImportJobs:
    """The background imports' steps, each one transaction (app/workers/imports.py runs them)."""

    @staticmethod
    @transactional
    async def status(db: AsyncSession, import_id: int, user_id: int) -> dict[str, Any]:
        """An import as its creator (or a superuser) sees it: its progress, and once it has
        ended its report. ImportNotFoundException for anyone else."""
        user = await get_acting_user(db, user_id)
        job = await db.get(LeadImport, import_id)
        if job is None or (not user.is_superuser and job.created_by != user.id):
            raise ImportNotFoundException(import_id)
        return status_of(job, await _errors_of(db, job.id))

    @staticmethod
    @transactional
    async def claim(
        db: AsyncSession, lease_seconds: float, import_id: int | None = None
    ) -> Claim | None:
        """The oldest unfinished import (or import `import_id`) no worker holds (never
        claimed, or its worker's lease ran out), now held by the caller; None when there is
        none. An import claimed MAX_ATTEMPTS times without finishing is marked failed
        instead."""
        while True:
            now = utcnow()
            statement = (
                select(LeadImport)
                .where(
                    LeadImport.status.in_([s.value for s in ImportStatus if s not in FINISHED]),
                    or_(LeadImport.locked_until.is_(None), LeadImport.locked_until < now),
                )
                .order_by(LeadImport.id)
                .limit(1)
                .with_for_update(skip_locked=True)
            )
            if import_id is not None:
                statement = statement.where(LeadImport.id == import_id)
            job = await db.scalar(statement)
            if job is None:
                return None
            if job.attempts >= MAX_ATTEMPTS:
                _end(job, ImportStatus.FAILED, f"stopped {job.attempts} times without finishing")
                await db.flush()
                continue
            job.attempts += 1
            job.locked_until = now + timedelta(seconds=lease_seconds)
            await db.flush()
            return Claim(
                job.id,
                job.attempts,
                job.created_by or 0,
                ImportStatus(job.status),
                job.processed_rows,
                job.total_rows,
                ImportOptions.of(job),
            )

    @staticmethod
    @transactional
    async def content(db: AsyncSession, claim: Claim) -> bytes:
        content = await db.scalar(
            select(LeadImport.content).where(LeadImport.id == claim.import_id)
        )
        return content or b""

    @staticmethod
    @transactional
    async def step(
        db: AsyncSession,
        claim: Claim,
        parsed: CsvFile,
        rows: list[tuple[int, list[str]]],
        end: int,
        seen: dict[str, int],
        lease_seconds: float,
    ) -> None:
        """One chunk of the file's rows, those before the `end`-th: checked (on_error=abort,
        or a dry run) or written (on_error=skip), with the import's progress and counts."""
        await _hold(db, claim, lease_seconds)
        user = await get_acting_user(db, claim.user_id)
        options = claim.options
        write = options.on_error is OnError.SKIP and not options.dry_run
        outcome = await _rows(db, parsed, rows, user, options, seen, write=write)
        if write:
            await _write(db, user, claim.import_id, outcome)
        else:
            db.expunge_all()
            await _store_errors(db, claim.import_id, outcome.errors)
        job = await _job(db, claim)
        job.processed_rows = end
        job.report = {**job.report, **_added(job.report, outcome)}
        checked = end == parsed.total and not job.report["skipped"] and not options.dry_run
        job.status = (ImportStatus.WRITING if write or checked else ImportStatus.CHECKING).value

    @staticmethod
    @transactional
    async def finish(db: AsyncSession, claim: Claim, parsed: CsvFile) -> ImportStatus:
        """After the last step: done, or aborted (on_error=abort with refused rows). With
        on_error=abort and every row checked, this writes every row, in this one transaction:
        `RefusedRows` (nothing written) for rows refused after all (a lead a row matched
        changed since the check); `abort` records them."""
        await _hold(db, claim, lease_seconds=None)
        job = await _job(db, claim)
        options = claim.options
        refused = job.report.get("skipped", 0) > 0
        if options.on_error is OnError.ABORT and refused:
            job.report = {**job.report, **_nothing_written(job.report["skipped"])}
            _end(job, ImportStatus.ABORTED)
        elif options.on_error is OnError.ABORT and not options.dry_run:
            counts = await _write_all(db, claim, parsed)
            job = await _job(db, claim)
            job.report = {**job.report, **counts}
            _end(job, ImportStatus.DONE)
        else:
            _end(job, ImportStatus.DONE)
        return ImportStatus(job.status)

    @staticmethod
    @transactional
    async def abort(db: AsyncSession, claim: Claim, errors: list[dict[str, Any]]) -> None:
        """on_error=abort, rows refused only when written: aborted with them."""
        await _hold(db, claim, lease_seconds=None)
        await _store_errors(db, claim.import_id, errors)
        job = await _job(db, claim)
        skipped = len({error["row"] for error in errors})
        job.report = {**job.report, **_nothing_written(skipped)}
        _end(job, ImportStatus.ABORTED)

    @staticmethod
    @transactional
    async def fail(db: AsyncSession, claim: Claim, reason: str) -> None:
        """The import cannot go on (its user is gone, say): failed, with why."""
        job = await db.get(LeadImport, claim.import_id, with_for_update=True)
        if job is not None and job.attempts == claim.attempt and job.status not in FINISHED:
            _end(job, ImportStatus.FAILED, reason)

    @staticmethod
    @transactional
    async def release(db: AsyncSession, claim: Claim) -> None:
        """A worker stopping gracefully gives its import back: the next one resumes it at once,
        not when the lease runs out."""
        await db.execute(
            update(LeadImport)
            .where(LeadImport.id == claim.import_id, LeadImport.attempts == claim.attempt)
            .values(locked_until=None)
        )


class RefusedRows(ValidationException):
    """Rows refused while an on_error=abort import was being written."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        super().__init__(_abort_problems(rows))
        self.rows = rows


async def _write_all(db: AsyncSession, claim: Claim, parsed: CsvFile) -> dict[str, int]:
    """Every row written, a chunk at a time (each chunk's objects let go once flushed); the
    counts. RefusedRows if any row is refused."""
    user = await get_acting_user(db, claim.user_id)
    total = Outcome()
    seen: dict[str, int] = {}
    for rows in parsed.chunks(0, CHUNK_ROWS):
        outcome = await _rows(db, parsed, rows, user, claim.options, seen, write=True)
        total.errors.extend(outcome.errors)
        if total.errors:
            continue  # all is rolled back: only the refused rows matter now
        await _write(db, user, claim.import_id, outcome)
        db.expunge_all()
        total.created += outcome.created
        total.updated += outcome.updated
        total.unchanged += outcome.unchanged
    if total.errors:
        raise RefusedRows(total.errors)
    return total.counts()


def _new_job(user: User, options: ImportOptions, parsed: CsvFile, status: ImportStatus) -> Any:
    stored = {"delimiter": options.delimiter, "mapping": options.mapping}
    return LeadImport(
        created_by=user.id,
        status=status.value,
        mode=options.mode.value,
        on_error=options.on_error.value,
        dry_run=options.dry_run,
        options={k: v for k, v in stored.items() if v is not None},
        total_rows=parsed.total,
        processed_rows=0,
        report={**{name: 0 for name in COUNTS}, "unknown_columns": parsed.unknown_columns},
        attempts=0,
        created_at=utcnow(),
    )


def _end(job: LeadImport, status: ImportStatus, error: str | None = None) -> None:
    job.status = status.value
    job.error = error
    job.content = None  # the file is not kept past its import
    job.locked_until = None
    job.finished_at = utcnow()


def _nothing_written(skipped: int) -> dict[str, int]:
    return {"created": 0, "updated": 0, "unchanged": 0, "skipped": skipped}


def _added(report: dict[str, Any], outcome: Outcome) -> dict[str, int]:
    return {name: report.get(name, 0) + value for name, value in outcome.counts().items()}


async def _hold(db: AsyncSession, claim: Claim, lease_seconds: float | None) -> None:
    """Lock the import's row for this transaction, as long as the claim is still the caller's
    (renewing its lease); else ImportTakenOverException. The first write of the transaction,
    so on SQLite it takes the database's write lock at once."""
    values: dict[str, Any] = {"attempts": claim.attempt}
    if lease_seconds is not None:
        values["locked_until"] = utcnow() + timedelta(seconds=lease_seconds)
    held = await db.execute(
        update(LeadImport)
        .where(
            LeadImport.id == claim.import_id,
            LeadImport.attempts == claim.attempt,
            LeadImport.status.in_([s.value for s in ImportStatus if s not in FINISHED]),
        )
        .values(**values)
    )
    if held.rowcount != 1:  # type: ignore[attr-defined]
        raise ImportTakenOverException(claim.import_id)


async def _job(db: AsyncSession, claim: Claim) -> LeadImport:
    job = await db.get(LeadImport, claim.import_id, populate_existing=True)
    assert job is not None, "held by _hold"
    return job


async def _rows(
    db: AsyncSession,
    parsed: CsvFile,
    rows: list[tuple[int, list[str]]],
    user: User,
    options: ImportOptions,
    seen: dict[str, int],
    *,
    write: bool,
) -> Outcome:
    """What `rows` do: each one checked and built, matched to a lead in upsert mode (locked
    when `write`). Nothing is written: the leads are built, the matched ones changed in the
    session, for `_write` to store or the caller to drop."""
    outcome = Outcome()
    candidates = await _checked_rows(db, parsed, rows, user, outcome)
    if options.mode is ImportMode.UPSERT:
        candidates = await _upsert(db, candidates, user, outcome, seen, lock=write)
    outcome.creates = candidates
    outcome.created, outcome.updated = len(candidates), len(outcome.updates)
    return outcome


async def _checked_rows(
    db: AsyncSession,
    parsed: CsvFile,
    rows: list[tuple[int, list[str]]],
    user: User,
    outcome: Outcome,
) -> list[Candidate]:
    candidates = []
    for row, cells in rows:
        values, columns = parsed.values(cells)
        try:
            typed = as_data(LeadCreate.model_validate(values))
            new = prepare_new_lead(typed)
            assignee = assignee_of_new_lead(user.id, user.is_superuser, new.assigned_to)
            lead = build_new_lead(new, user.id, assignee)
        except (ValidationError, CRMException) as exc:
            outcome.refuse(row, columns, values, exc)
            continue
        candidates.append(Candidate(row, columns, typed, new, lead))
    return await _with_active_assignees(db, candidates, user, outcome)


async def _with_active_assignees(
    db: AsyncSession, candidates: list[Candidate], user: User, outcome: Outcome
) -> list[Candidate]:
    """Rows naming an assignee (a superuser's) who is no active user are refused: one query."""
    named = {c.lead.assigned_to for c in candidates} - {None, user.id}
    if not named:
        return candidates
    active = set(
        await db.scalars(select(User.id).where(User.id.in_(named), User.is_active.is_(True)))
    )
    kept = []
    for candidate in candidates:
        assignee = candidate.lead.assigned_to
        if assignee is not None and assignee != user.id and assignee not in active:
            problem = ("assigned_to", f"names no active user: {assignee}")
            outcome.refuse(candidate.row, candidate.columns, candidate.values, [problem])
            continue
        kept.append(candidate)
    return kept


async def _upsert(
    db: AsyncSession,
    candidates: list[Candidate],
    user: User,
    outcome: Outcome,
    seen: dict[str, int],
    *,
    lock: bool,
) -> list[Candidate]:
    """Apply each row that matches a lead to it (into `outcome.updates`, or counted
    unchanged); the rows left to create. `seen` holds each key of the file's rows so far
    (their normalised email or phone: the first row that had it), across chunks."""
    matches = await _matching_leads(db, candidates, user, lock=lock)
    creates = []
    for candidate in candidates:
        keys = [key for key in _keys(candidate.lead) if key]
        # A chunk run again (after a deadlock) finds its own rows: no repeat.
        repeated = next(
            (seen[k] for k in keys if seen.get(k, candidate.row) != candidate.row), None
        )
        if repeated is not None:
            problem = (_key_field(candidate.lead), f"repeats row {repeated}'s, in this file")
            outcome.refuse(candidate.row, candidate.columns, candidate.values, [problem])
            continue
        seen.update({key: candidate.row for key in keys})
        match = next((matches[key] for key in keys if key in matches), None)
        if match is None:
            creates.append(candidate)
            continue
        try:
            changes, note = _update(match, candidate, user)
        except CRMException as exc:
            db.expunge(match)  # a half-applied change must not be written
            outcome.refuse(candidate.row, candidate.columns, candidate.values, exc)
            continue
        if changes is None:
            outcome.unchanged += 1
        else:
            outcome.updates.append((match, changes, note))
    return creates


def _keys(lead: Lead) -> tuple[str | None, str | None]:
    """How a row and a lead are matched: the email compared lowercased (it is stored with its
    local part as given), the phone in its stored form."""
    email = f"email:{lead.email.lower()}" if lead.email else None
    return email, f"phone:{lead.phone}" if lead.phone else None


def _key_field(lead: Lead) -> str:
    return "email" if lead.email else "phone"


async def _matching_leads(
    db: AsyncSession, candidates: list[Candidate], user: User, *, lock: bool
) -> dict[str, Lead]:
    """The live leads the caller may see that have an email or phone of the rows', by key
    (the oldest lead when several have one): one query."""
    emails = {c.lead.email.lower() for c in candidates if c.lead.email}
    phones = {c.lead.phone for c in candidates if c.lead.phone}
    if not emails and not phones:
        return {}
    statement = (
        select(Lead)
        .where(
            Lead.archived_at.is_(None),
            or_(func.lower(Lead.email).in_(emails), Lead.phone.in_(phones)),
        )
        .order_by(Lead.id)
    )
    if not user.is_superuser:
        statement = statement.where(Lead.assigned_to == user.id)
    if lock:
        statement = statement.with_for_update(of=Lead)
    found: dict[str, Lead] = {}
    for lead in await db.scalars(statement):
        for key in _keys(lead):
            if key:
                found.setdefault(key, lead)
    # An email match wins over a phone match: a row's email key is tried first.
    return found


def _update(lead: Lead, candidate: Candidate, user: User) -> tuple[dict | None, str | None]:
    """`candidate`'s values applied to `lead` as an update; what is already so is no change
    (the export's `lead_score` and `notes` included, so an export re-imports unchanged)."""
    fields = {name: value for name, value in candidate.values.items() if name != "notes"}
    if fields.get("lead_score") == lead.lead_score:
        del fields["lead_score"]
    note = candidate.new.note
    if note is not None and (note == lead.notes or (lead.notes or "").endswith(note)):
        note = None
    if not user.is_superuser:
        fields.pop("assigned_to", None)  # an agent's own: checked when the row was built
    changes = apply_update(lead, fields, note, user.id)
    return changes, note


async def _write(db: AsyncSession, user: User, import_id: int, outcome: Outcome) -> None:
    """Store what `_rows` built: the new leads, the changed ones, an event for each naming the
    import, and the refused rows."""
    if outcome.creates:
        # Set-based: one executemany INSERT for the leads (their ids back in row order), one
        # for their events; the ORM's unit of work cost as much again (py-spy, issue 16).
        stored = await db.execute(
            insert(LEADS).returning(LEADS.c.id, sort_by_parameter_order=True),
            [row_values(candidate.lead) for candidate in outcome.creates],
        )
        events = [
            {**created_event(c.lead, c.new.note), "lead_id": lead_id, "import_id": import_id}
            for c, lead_id in zip(outcome.creates, stored.scalars(), strict=True)
        ]
        await db.execute(insert(EVENTS), events)
    for lead, changes, note in outcome.updates:
        record_update(db, lead, user.id, changes, note, import_id=import_id)
    await db.flush()
    await _store_errors(db, import_id, outcome.errors)


async def _store_errors(db: AsyncSession, import_id: int, errors: list[dict[str, Any]]) -> None:
    if errors:
        await db.execute(
            insert(LeadImportError), [{**error, "import_id": import_id} for error in errors]
        )


async def _errors_of(db: AsyncSession, import_id: int) -> list[dict[str, Any]]:
    rows = await db.execute(
        select(
            LeadImportError.row,
            LeadImportError.column,
            LeadImportError.value,
            LeadImportError.message,
        )
        .where(LeadImportError.import_id == import_id)
        .order_by(LeadImportError.row, LeadImportError.id)
    )
    return [dict(row._mapping) for row in rows]


def _report(
    import_id: int, status: ImportStatus, dry_run: bool, parsed: CsvFile, outcome: Outcome
) -> dict[str, Any]:
    return {
        "import_id": import_id,
        "status": status.value,
        "dry_run": dry_run,
        "total_rows": parsed.total,
        **outcome.counts(),
        "errors": outcome.errors,
        "unknown_columns": parsed.unknown_columns,
    }


def status_of(job: LeadImport, errors: list[dict[str, Any]]) -> dict[str, Any]:
    """An import as `GET /imports/{id}` shows it: its report once it has ended."""
    finished = ImportStatus(job.status) in FINISHED
    counts = {name: job.report.get(name, 0) for name in COUNTS}
    report = {
        "import_id": job.id,
        "status": job.status,
        "dry_run": job.dry_run,
        "total_rows": job.total_rows,
        **counts,
        "errors": errors,
        "unknown_columns": job.report.get("unknown_columns", []),
    }
    return {
        "import_id": job.id,
        "status": job.status,
        "mode": job.mode,
        "on_error": job.on_error,
        "dry_run": job.dry_run,
        "processed_rows": job.processed_rows,
        "total_rows": job.total_rows,
        "created_at": job.created_at,
        "finished_at": job.finished_at,
        "error": job.error,
        "report": report if finished else None,
    }


def _problems(exc: Any) -> list[tuple[str | None, str]]:
    """(field, message) for each problem of a refused row."""
    if isinstance(exc, list):
        return exc
    if isinstance(exc, ValidationError):
        return [(str(e["loc"][0]) if e["loc"] else None, e["msg"]) for e in exc.errors()]
    if isinstance(exc, ValidationException):
        return [(str(e["loc"][-1]) if e["loc"] else None, e["msg"]) for e in exc.errors]
    return [(None, str(exc))]


def _abort_problems(errors: list[dict[str, Any]]) -> list[tuple[list[Any], str]]:
    """Every refused row as a 422's errors, at `file` > row > column."""
    problems = []
    for error in errors:
        where = [FILE, error["row"], error["column"] or ""]
        problems.append((where, f"Row {error['row']}, {error['column']}: {error['message']}"))
    return problems
