"""What every service method shares: one transaction per call, and who is acting.

A public service method is one unit of work. `@transactional` commits when the method returns
and rolls back when anything escapes it, translating what the layers below raise into the
service's own exceptions, so callers only ever see `CRMException` subclasses.

Deadlocks and serialization failures are not the caller's fault and usually vanish on a second
try, so the whole method is run again, a bounded number of times, before giving up with a
ConflictException. A connection that turns out dead before it ran anything (it died while
pooled: a restarted database, a killed idle backend; `app.database.is_stale_connection_error`)
costs one more run on a new connection, reads and writes alike: nothing was sent, so nothing
can have happened. That replaces pre-pinging every checkout. A failure while committing is
never run again: whether the commit happened is unknown. Because the method runs from the top
each time, it must build everything it changes inside itself (never mutate the caller's input).

A request sent with an Idempotency-Key has its key claimed at the start of the transaction and
its answer stored before the commit (app/services/idempotency.py), each time the method runs.

Database errors become `DatabaseException` (503) through `app.services.faults.database_fault`,
the one place every path translates and logs them (once per kind per interval).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any, NoReturn, ParamSpec, TypeVar

from sqlalchemy import select
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from app.database import is_stale_connection_error
from app.models import FieldValidationError, User
from app.models.validation import is_whole_number
from app.services import idempotency
from app.services.exceptions import (
    ConflictException,
    CRMException,
    InactiveUserException,
    PermissionDeniedException,
    UserNotFoundException,
    ValidationException,
)
from app.services.faults import (
    database_fault,
    is_collision,
    is_integrity_violation,
    reason,
    sqlstate,
)
from app.services.reader import Reader, Writer

logger = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")
M = TypeVar("M")

RETRY_ATTEMPTS = 4
COLLIDED = "Other changes to the same records kept colliding with this one; please try again."
CONFLICTING_DATA = (
    "The change conflicts with the data already stored (a referenced row is gone or a unique "
    "value is taken)."
)


# Sessions opened one at a time, each for one transaction: what a response that outlives its
# request's dependencies (the live stream, an export) reads through.
SessionOpener = Callable[[], AbstractAsyncContextManager[AsyncSession]]


def transactional(method: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """The session is the method's first parameter, `db`; callers may pass it positionally or
    as `db=` (the reference design's examples do the latter)."""
    where = method.__qualname__

    @functools.wraps(method)
    async def run(*args: P.args, **kwargs: P.kwargs) -> R:
        db, args = _session_argument(method, args, kwargs)
        collisions = 0
        reconnected = False
        call = idempotency.current.get()  # the request's Idempotency-Key, if it sent one
        while True:
            committing = False
            try:
                if call is not None:
                    dialect = db.get_bind().dialect.name
                    await idempotency.claim(idempotency.OnSession(db), dialect, call)
                result = await method(db, *args, **kwargs)
                if call is not None:
                    await idempotency.store(idempotency.OnSession(db), dialect, call, result)
                committing = True
                await db.commit()
                return result
            except BaseException as exc:
                await _rollback(db)
                if not committing and not reconnected and is_stale_connection_error(exc):
                    reconnected = True
                    logger.info("running %s again on a new connection: %s", where, reason(exc))
                    continue
                if isinstance(exc, DBAPIError) and is_collision(exc):
                    collisions += 1
                    if collisions < RETRY_ATTEMPTS:
                        logger.info("retrying %s after %s", where, sqlstate(exc))
                        await _pause_after_collision(collisions)
                        continue
                    raise ConflictException(COLLIDED) from exc
                _raise_translated(exc, where)

    return run


async def in_transaction(writer: Writer, work: Callable[[Reader], Awaitable[R]]) -> R:
    """`await work(tx)` in one transaction of `writer`'s (the hot writes' `@transactional`):
    committed when it returns, rolled back when anything escapes, run again after a collision
    with another transaction (a deadlock, say) like `@transactional` does, and a constraint's
    refusal answered as there (409)."""
    collisions = 0
    while True:
        try:
            async with writer.transaction() as tx:
                return await work(tx)
        except Exception as exc:
            if is_collision(exc):
                collisions += 1
                if collisions < RETRY_ATTEMPTS:
                    logger.info("retrying a write after %s", sqlstate(exc))
                    await _pause_after_collision(collisions)
                    continue
                raise ConflictException(COLLIDED) from exc
            if is_integrity_violation(exc):
                raise ConflictException(CONFLICTING_DATA) from exc
            raise


async def _pause_after_collision(collisions: int) -> None:
    await asyncio.sleep(random.uniform(0.005, 0.02) * 2**collisions)


def _raise_translated(exc: BaseException, where: str) -> NoReturn:
    """Raise what the caller sees in place of `exc`: only `CRMException`s, except for what is
    no error of the call's (cancellation) and bugs, which pass through as they are."""
    if isinstance(exc, CRMException):
        raise exc
    if isinstance(exc, FieldValidationError):
        raise ValidationException.of_fields([exc]) from exc
    if isinstance(exc, IntegrityError):
        raise ConflictException(CONFLICTING_DATA) from exc
    if isinstance(exc, SQLAlchemyError):
        raise database_fault(exc, where) from exc
    # The rest, the driver's OSError (refused, unresolvable, the app's own time limit) among
    # them, reaches app/api/errors.py as it is: 503 `database_unavailable`, logged there.
    raise exc


def _session_argument(
    method: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[AsyncSession, tuple[Any, ...]]:
    """Take the session out of the call, wherever the caller put it."""
    if "db" in kwargs:
        return kwargs.pop("db"), args
    if args:
        return args[0], args[1:]
    raise TypeError(f"{method.__qualname__}() needs the database session as its first argument, db")


async def _rollback(db: AsyncSession) -> None:
    """Roll back, even over a connection that just died (the original error matters more)."""
    try:
        await db.rollback()
    except Exception as exc:  # the connection is gone; the pool will replace it
        logger.debug("rollback failed: %s", exc)


_VERIFIED_USER = "crm_verified_user"


def remember_verified_user(db: AsyncSession, user: User) -> None:
    """Record that `user` was just read, fresh and active, in the session's current transaction
    (the API's authentication does this), so the service call that follows in the same
    transaction need not read the row a second time."""
    db.info[_VERIFIED_USER] = (user, db.sync_session.get_transaction())


def _verified_in_this_transaction(db: AsyncSession, user_id: int) -> User | None:
    remembered = db.info.get(_VERIFIED_USER)
    if remembered is None:
        return None
    user, transaction = remembered
    current = db.sync_session.get_transaction()
    if current is None or transaction is not current or user.id != user_id:
        return None  # another transaction (a retry, a later call): read the row again
    return user


async def get_acting_user(db: AsyncSession, user_id: int) -> User:
    """The user on whose behalf a call runs; unknown and inactive users may do nothing."""
    if not is_whole_number(user_id):
        raise ValidationException.at("user_id", "must be a whole number")
    user = _verified_in_this_transaction(db, user_id)
    if user is not None:
        return user
    user = await db.get(User, user_id, populate_existing=True)
    if user is None:
        raise UserNotFoundException(user_id)
    if not user.is_active:
        raise InactiveUserException(user_id)
    return user


async def load_by_id(
    db: AsyncSession,
    model: type[M],
    row_id: int,
    missing: Callable[[int], CRMException],
    *,
    for_update: bool = False,
) -> M:
    """The `model` row with primary key `row_id`, read afresh (and locked, `for_update`), or
    `missing(row_id)` raised: the not-found error of that kind of row."""
    query = select(model).where(model.id == row_id)  # type: ignore[attr-defined]
    if for_update:
        query = query.with_for_update()
    row = await db.scalar(query.execution_options(populate_existing=True))
    if row is None:
        raise missing(row_id)
    return row


async def require_superuser(db: AsyncSession, user_id: int, what: str) -> User:
    """The acting user, who must be a superuser to manage `what` (e.g. "webhooks")."""
    user = await get_acting_user(db, user_id)
    if not user.is_superuser:
        raise PermissionDeniedException(f"Only a superuser may manage {what}.")
    return user


def as_data(data: Mapping[str, Any] | Any) -> dict[str, Any]:
    """Accept a plain mapping or a pydantic model; a model contributes only the fields the
    caller actually set, so a partial update never overwrites with defaults."""
    if hasattr(data, "model_dump"):
        return data.model_dump(exclude_unset=True)
    if isinstance(data, Mapping):
        return dict(data)
    raise ValidationException.at(None, "The data must be a mapping of field names to values.")


def reject_unknown_fields(data: Mapping[str, Any], allowed: frozenset[str]) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ValidationException.of_fields(
            FieldValidationError(name, "is not a field that can be set") for name in unknown
        )
