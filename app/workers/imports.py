"""The import worker (issue 16): runs the CSV imports too large to run while their request
waits (app/services/lead_imports.py: `ImportJobs`).

Nothing of an import lives here but the file being read: the import, how far it got and who
holds it are rows in the database, so workers run side by side in any number of processes
(one in each `python -m app` process unless RUN_IMPORT_WORKER=false, one in each `python -m app
worker`), each import held by one at a time. A worker killed mid-import loses nothing: its
lease runs out and the next worker resumes the import at the first chunk not committed
(on_error=skip), or checks again and writes it whole (on_error=abort). One stopped gracefully
gives its import back at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.models import ImportStatus, OnError
from app.services.exceptions import CRMException, ImportTakenOverException
from app.services.lead_imports import CHUNK_ROWS, Claim, ImportJobs, RefusedRows
from app.workers.webhooks import CANCEL_WAIT_SECONDS

logger = logging.getLogger(__name__)


class ImportStopped(Exception):
    """The worker was told to stop between two chunks."""


# Told after each chunk: what is being done ("checked", "imported", "writing"), rows so far, all.
Progress = Callable[[str, int, int], None]


def _quiet(phase: str, done: int, total: int) -> None:
    return None


class ImportWorker:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], settings: Settings) -> None:
        self.sessions, self.settings = sessions, settings
        self.lease = settings.import_lease_seconds
        # Set: stop after the chunk in flight and give the import back. A chunk is never
        # cancelled midway by choice: on SQLite, a statement cancelled in its thread can keep
        # the write lock its rollback could not release.
        self.stop = asyncio.Event()

    async def run_once(
        self, import_id: int | None = None, on_progress: Progress | None = None
    ) -> bool:
        """Claim the oldest unfinished import (or `import_id`) and run it to its end, telling
        `on_progress` of each chunk; False if there was none to claim."""
        async with self.sessions() as db:
            claim = await ImportJobs.claim(db, self.lease, import_id)
        if claim is None:
            return False
        logger.info("import %s: attempt %s", claim.import_id, claim.attempt)
        try:
            status = await self._run(claim, on_progress or _quiet)
        except ImportStopped as stopped:
            async with self.sessions() as db:
                await ImportJobs.release(db, claim)
            logger.info("import %s given back after %s rows", claim.import_id, stopped.args[0])
            return True
        except RefusedRows as exc:
            async with self.sessions() as db:
                await ImportJobs.abort(db, claim, exc.rows)
            return True
        except ImportTakenOverException:
            logger.warning("import %s was taken over by another worker", claim.import_id)
            return True
        except CRMException as exc:  # its user is gone, say: it cannot go on
            logger.warning("import %s failed: %s", claim.import_id, exc.message)
            async with self.sessions() as db:
                await ImportJobs.fail(db, claim, exc.message)
            return True
        except asyncio.CancelledError:
            async with self.sessions() as db:
                await asyncio.shield(ImportJobs.release(db, claim))
            raise
        logger.info("import %s: %s", claim.import_id, status)
        return True

    async def _run(self, claim: Claim, on_progress: Progress) -> ImportStatus:
        async with self.sessions() as db:
            content = await ImportJobs.content(db, claim)
        parsed = claim.options.read(content, max_rows=max(claim.total_rows, 1))
        del content
        seen: dict[str, int] = {}
        start = 0 if claim.status is ImportStatus.QUEUED else claim.processed_rows
        checked = claim.status is ImportStatus.WRITING and claim.options.on_error is OnError.ABORT
        phase = "checked" if claim.options.on_error is OnError.ABORT else "imported"
        for rows in [] if checked else parsed.chunks(start, CHUNK_ROWS):
            if self.stop.is_set():
                raise ImportStopped(start)
            start += len(rows)
            async with self.sessions() as db:
                await ImportJobs.step(db, claim, parsed, rows, start, seen, self.lease)
            on_progress(phase, start, parsed.total)
        if claim.options.on_error is OnError.ABORT and not claim.options.dry_run:
            on_progress("writing", parsed.total, parsed.total)
        async with self.sessions() as db:
            status = await ImportJobs.finish(db, claim, parsed)
        return status

    async def run(self) -> None:
        """Work until `stop` is set."""
        stop = self.stop
        while not stop.is_set():
            try:
                busy = await self.run_once()
            except Exception:  # a database hiccup must not end the worker
                logger.exception("import worker: a round failed; trying again")
                busy = False
            if not busy:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.settings.import_poll_seconds)


class InProcessImports:
    """The import worker of a served app process (RUN_IMPORT_WORKER), as a task."""

    def __init__(self, worker: ImportWorker) -> None:
        self.worker = worker
        self.task = asyncio.create_task(worker.run(), name="import-worker")

    async def stop(self) -> None:
        """Stop after the chunk in flight (it gives the import back); cancelled if that takes
        longer than a moment (an on_error=abort import's writing, say: it rolls back)."""
        self.worker.stop.set()
        _, running = await asyncio.wait({self.task}, timeout=CANCEL_WAIT_SECONDS)
        if running:
            self.task.cancel()
            # As the webhook worker's: a statement stuck in SQLite's busy wait ends with its
            # thread, not with the task, and the process is ending anyway.
            await asyncio.wait({self.task}, timeout=CANCEL_WAIT_SECONDS)


def start_import_worker(app: Any, settings: Settings) -> InProcessImports | None:
    if not settings.run_import_worker:
        return None
    return InProcessImports(ImportWorker(app.state.session_factory, settings))
