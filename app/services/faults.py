"""Database faults: what kind a failure is, the one translation into `DatabaseException`, and
a log that reports each kind once per interval instead of once per request.

Every path to the database (the ORM's `@transactional`, the error handlers for failures outside
a service, the hot reads on raw asyncpg, the readiness check) hands its failure to
`database_fault`, so a fault reads the same wherever it happened: a 503 JSON answer for the
client, and one log line per kind per `FAULT_LOG_INTERVAL_SECONDS` for the operator. During a
ten-second outage that is two lines ("database unreachable ...", then "... 543 requests failed
in the last 10 s") where it used to be one per request.

`fault_kind` understands the exceptions as SQLAlchemy raises them (a `DBAPIError` wrapping the
driver's error) and as asyncpg raises them directly.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from app.config import Settings, get_settings
from app.services.exceptions import DatabaseException

try:  # asyncpg is installed wherever PostgreSQL is used; SQLite needs none of this
    import asyncpg
except ImportError:  # pragma: no cover
    asyncpg = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)


class FaultKind(StrEnum):
    CONNECTION_LOST = "connection_lost"  # a connection died under a statement or while pooled
    TIMEOUT = "timeout"  # the server cancelled the statement, or the app stopped waiting
    POOL_EXHAUSTED = "pool_exhausted"  # no pooled connection came free in time
    UNAVAILABLE = "unavailable"  # no connection could be opened: refused, unresolvable, full


# Any other database error (a bug, a constraint nobody expected) is logged under this key.
OTHER_ERROR = "error"

DESCRIPTIONS = {
    FaultKind.CONNECTION_LOST: "database connection lost",
    FaultKind.TIMEOUT: "database did not answer in time",
    FaultKind.POOL_EXHAUSTED: "no free database connection",
    FaultKind.UNAVAILABLE: "database unreachable",
    OTHER_ERROR: "database error",
}

# SQLSTATEs by kind: class 08 (connection exception) mostly means the connection is gone,
# except where it says no connection could be made.
_KIND_BY_SQLSTATE = {
    "08001": FaultKind.UNAVAILABLE,  # sqlclient_unable_to_establish_sqlconnection
    "08004": FaultKind.UNAVAILABLE,  # sqlserver_rejected_establishment_of_sqlconnection
    "53300": FaultKind.UNAVAILABLE,  # too_many_connections
    "57P03": FaultKind.UNAVAILABLE,  # cannot_connect_now (starting up, shutting down)
    "57014": FaultKind.TIMEOUT,  # query_canceled (statement_timeout)
    "57P01": FaultKind.CONNECTION_LOST,  # admin_shutdown (pg_terminate_backend, a restart)
    "57P02": FaultKind.CONNECTION_LOST,  # crash_shutdown
}
_CLOSED_CONNECTION_TEXT = ("connection is closed", "connection was closed")
_MAX_CHAIN = 8


def fault_kind(exc: BaseException) -> FaultKind | None:
    """What kind of database fault `exc` is, or None when it is none (a constraint violation,
    a deadlock, a bug: the caller handles those as it always did). Looks through SQLAlchemy's
    wrappers to the driver's own exception first, so raw asyncpg errors and wrapped ones get
    the same answer."""
    for error in _chain(exc):
        kind = _own_kind(error)
        if kind is not None:
            return kind
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return FaultKind.CONNECTION_LOST
    return None


def _chain(exc: BaseException) -> list[BaseException]:
    """`exc`, then what it wraps (SQLAlchemy's `.orig`, the adapted DBAPI error's `.orig`,
    `__cause__`), innermost last."""
    found: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in found and len(found) < _MAX_CHAIN:
        found.append(current)
        inner = getattr(current, "orig", None)
        current = inner if isinstance(inner, Exception) else current.__cause__
        if not isinstance(current, Exception):  # e.g. the CancelledError behind a timeout
            break
    return list(reversed(found))


def _own_kind(error: BaseException) -> FaultKind | None:
    if isinstance(error, PoolTimeoutError):
        return FaultKind.POOL_EXHAUSTED
    if isinstance(error, TimeoutError):  # asyncio's too: the app's own limit ran out
        return FaultKind.TIMEOUT
    if isinstance(error, ConnectionRefusedError | socket.gaierror):
        return FaultKind.UNAVAILABLE
    if isinstance(error, ConnectionError | EOFError):
        return FaultKind.CONNECTION_LOST
    if isinstance(error, OSError):  # no route to host, network down...
        return FaultKind.UNAVAILABLE
    if asyncpg is not None:
        return _asyncpg_kind(error)
    return None


def _asyncpg_kind(error: BaseException) -> FaultKind | None:
    if isinstance(error, asyncpg.PostgresError):
        state = getattr(error, "sqlstate", None) or ""
        if state in _KIND_BY_SQLSTATE:
            return _KIND_BY_SQLSTATE[state]
        if isinstance(error, asyncpg.PostgresConnectionError):  # the rest of class 08
            return FaultKind.CONNECTION_LOST
        return None
    if type(error) is asyncpg.InternalClientError or isinstance(error, asyncpg.ProtocolError):
        # The driver's protocol state is broken, e.g. it read a killed backend's goodbye while
        # idle ("cannot switch to state ..."): the connection can never be used again. Raised
        # before anything is sent.
        return FaultKind.CONNECTION_LOST
    if isinstance(error, asyncpg.InterfaceError):
        # Most interface errors are the caller's mistakes (wrong argument count); these are not.
        text = str(error)
        if any(phrase in text for phrase in _CLOSED_CONNECTION_TEXT):
            return FaultKind.CONNECTION_LOST
        if "pool is clos" in text:
            return FaultKind.UNAVAILABLE
    return None


def is_database_error(exc: BaseException) -> bool:
    """Any failure that came from the database or the way to it."""
    return (
        isinstance(exc, SQLAlchemyError)
        or fault_kind(exc) is not None
        or (asyncpg is not None and isinstance(exc, asyncpg.PostgresError | asyncpg.InterfaceError))
    )


# PostgreSQL: serialization_failure, deadlock_detected, lock_not_available.
COLLISION_SQLSTATES = frozenset({"40001", "40P01", "55P03"})


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of a driver error, raised by asyncpg itself or wrapped by SQLAlchemy."""
    error = exc.orig if isinstance(exc, DBAPIError) else exc
    return getattr(error, "sqlstate", None) or getattr(error, "pgcode", None)


def is_collision(exc: BaseException) -> bool:
    """A transaction that lost to another one and may simply run again."""
    if sqlstate(exc) in COLLISION_SQLSTATES:
        return True
    # SQLite: the busy timeout ran out while another writer held the lock.
    return isinstance(exc, DBAPIError) and "database is locked" in str(exc.orig)


def is_integrity_violation(exc: BaseException) -> bool:
    """A constraint refused the change (class 23: a foreign key, a unique value, a check)."""
    if isinstance(exc, IntegrityError):
        return True
    state = sqlstate(exc)
    return state is not None and state.startswith("23")


def database_fault(exc: BaseException, where: str) -> DatabaseException:
    """The one translation of a database failure: logs it (at most once per kind per interval,
    see `FaultLog`) and returns the `DatabaseException` (503) to raise in its place, `from exc`.
    `where` says what failed, e.g. "LeadService.update_lead" or "GET /api/v1/leads"."""
    record_fault(exc, where)
    return DatabaseException("The database could not complete the request.")


def record_fault(exc: BaseException, where: str) -> None:
    """Log a database failure through the throttle, without translating it."""
    kind = fault_kind(exc) or OTHER_ERROR
    fault_log().record(kind, reason(exc), detail=_detail(exc), where=where)


def reason(exc: BaseException) -> str:
    """The innermost exception's class name, e.g. ConnectionRefusedError or
    QueryCanceledError: what the readiness answer and the log lines name as the cause."""
    return type(_chain(exc)[0]).__name__


def _detail(exc: BaseException) -> str:
    text = " ".join(str(exc).split())  # SQLAlchemy's text spans lines; parameters are hidden
    return text[:500]


# --- the throttle ---------------------------------------------------------------------------


@dataclass
class _Window:
    """One kind's current interval: how many failures since its line was written."""

    reason: str
    failures: int = 0
    timer: asyncio.TimerHandle | None = None


class FaultLog:
    """Writes the first fault of a kind at once, then counts that kind for `interval` seconds
    and writes one line with the count when the interval ends (if there was anything to
    count): "database unreachable (ConnectionRefusedError): 543 requests failed in the last
    10 s". An interval with no failure ends the series; the next failure is written at once
    again. The interval ends on a timer of the running event loop, or, with no loop running,
    at the next failure of that kind."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._windows: dict[str, _Window] = {}
        self._ends: dict[str, float] = {}

    def record(self, kind: str, reason: str, *, detail: str, where: str) -> None:
        if kind in self._windows and time.monotonic() >= self._ends[kind]:
            self._close(kind)  # its timer never ran (no loop): end the interval now
        window = self._windows.get(kind)
        if window is not None:
            window.failures += 1
            window.reason = reason
            return
        logger.warning(
            "%s (%s) in %s: %s; more of this kind are counted and logged every %s s",
            DESCRIPTIONS.get(kind, kind),
            reason,
            where,
            detail,
            _seconds(self.interval),
            extra={"fault": kind, "fault_reason": reason},
        )
        self._open(kind, reason)

    def close(self) -> None:
        """Stop every timer (the log is being replaced), dropping what was counted."""
        for window in self._windows.values():
            if window.timer is not None:
                window.timer.cancel()
        self._windows.clear()

    def _open(self, kind: str, reason: str) -> None:
        window = _Window(reason)
        self._windows[kind] = window
        self._ends[kind] = time.monotonic() + self.interval
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        window.timer = loop.call_later(self.interval, self._close, kind)

    def _close(self, kind: str) -> None:
        window = self._windows.pop(kind, None)
        if window is None:
            return
        if window.timer is not None:
            window.timer.cancel()
        if not window.failures:
            return
        logger.warning(
            "%s (%s): %d %s failed in the last %s s",
            DESCRIPTIONS.get(kind, kind),
            window.reason,
            window.failures,
            "request" if window.failures == 1 else "requests",
            _seconds(self.interval),
            extra={"fault": kind, "fault_reason": window.reason, "failures": window.failures},
        )
        self._open(kind, window.reason)  # still failing: count the next interval too


def _seconds(value: float) -> str:
    return f"{value:g}"


_in_use: tuple[Settings, FaultLog] | None = None


def fault_log() -> FaultLog:
    """The fault log for the settings in force. Process-wide on purpose (it is logging, not
    data); installing other settings (tests do) starts a new one, so no count or timer carries
    over from one app to the next."""
    global _in_use
    settings = get_settings()
    if _in_use is None or _in_use[0] is not settings:
        if _in_use is not None:
            _in_use[1].close()
        _in_use = (settings, FaultLog(settings.fault_log_interval_seconds))
    return _in_use[1]
