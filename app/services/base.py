"""What every service method shares: one transaction per call, and who is acting.

A public service method is one unit of work. `transaction()` commits when the body finishes and
rolls back when anything escapes it, translating what the layers below raise into the service's
own exceptions, so callers only ever see `CRMException` subclasses.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import FieldValidationError, User
from app.services.exceptions import (
    ConflictException,
    CRMException,
    DatabaseException,
    InactiveUserException,
    UserNotFoundException,
    ValidationException,
)

logger = logging.getLogger(__name__)


@asynccontextmanager
async def transaction(db: AsyncSession) -> AsyncIterator[None]:
    try:
        yield
        await db.commit()
    except CRMException:
        await db.rollback()
        raise
    except FieldValidationError as exc:
        await db.rollback()
        raise ValidationException(str(exc), field=exc.field) from exc
    except IntegrityError as exc:
        await db.rollback()
        raise ConflictException(
            "The change conflicts with the data already stored (a referenced row is gone or a "
            "unique value is taken)."
        ) from exc
    except (DBAPIError, SQLAlchemyError) as exc:
        await db.rollback()
        logger.warning("database error in service call: %s", exc)
        raise DatabaseException("The database could not complete the request.") from exc
    except BaseException:
        await db.rollback()
        raise


async def get_acting_user(db: AsyncSession, user_id: int) -> User:
    """The user on whose behalf a call runs; unknown and inactive users may do nothing."""
    if isinstance(user_id, bool) or not isinstance(user_id, int):
        raise ValidationException("user_id must be a whole number", field="user_id")
    user = await db.get(User, user_id, populate_existing=True)
    if user is None:
        raise UserNotFoundException(user_id)
    if not user.is_active:
        raise InactiveUserException(user_id)
    return user


def as_data(data: Mapping[str, Any] | Any) -> dict[str, Any]:
    """Accept a plain mapping or a pydantic model; a model contributes only the fields the
    caller actually set, so a partial update never overwrites with defaults."""
    if hasattr(data, "model_dump"):
        return data.model_dump(exclude_unset=True)
    if isinstance(data, Mapping):
        return dict(data)
    raise ValidationException("The data must be a mapping of field names to values.")


def reject_unknown_fields(data: Mapping[str, Any], allowed: frozenset[str]) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ValidationException(
            f"Unknown or read-only field(s): {', '.join(unknown)}.",
            errors=[{"loc": [name], "msg": "is not a field that can be set"} for name in unknown],
        )
