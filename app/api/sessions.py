"""What the session routes of /auth and /users share: the token pair a login or a refresh
answers with, a page of sessions, and their path and query parameters."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Path, Query
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.models import User
from app.schemas.common import MAX_ID, SettingLimit
from app.schemas.session import SessionPage, SessionRead
from app.schemas.user import Token
from app.services.security import MAX_SESSION_ID, AccessClaims, create_access_token
from app.services.sessions import IssuedSession, SessionService

SessionId = Annotated[int, Path(ge=1, le=MAX_SESSION_ID, description="The session's id.")]


@dataclass(frozen=True)
class Paging:
    skip: int
    limit: int


async def session_paging(
    skip: Annotated[int, Query(ge=0, le=MAX_ID, description="Sessions to skip.")] = 0,
    limit: Annotated[
        int, Query(ge=1, description="Sessions per page."), SettingLimit("page_max_limit")
    ] = 100,
) -> Paging:
    return Paging(skip, limit)


SessionPaging = Annotated[Paging, Depends(session_paging)]


def token_pair(issued: IssuedSession, settings: Settings) -> Token:
    """The answer of a login or a refresh. The access token is made from the session's row
    alone, so a refresh repeated within its grace period gets the same one."""
    user = issued.user
    access, lifetime = create_access_token(
        user.id,
        settings,
        user.token_version,
        session_id=issued.session_id,
        superuser=user.is_superuser,
        issued_at=issued.issued_at,
    )
    return Token(
        access_token=access,
        expires_in=lifetime,
        refresh_token=issued.refresh_token,
        refresh_expires_in=settings.refresh_token_expire_days * 86_400,
    )


def current_session(claims: AccessClaims) -> int:
    """The session the calling token belongs to."""
    assert claims.session_id is not None  # every access token names one
    return claims.session_id


async def session_page(
    db: AsyncSession, user_id: int, actor: User, claims: AccessClaims, paging: Paging
) -> SessionPage:
    sessions, total = await SessionService.list_sessions(
        db, user_id, acting_user_id=actor.id, skip=paging.skip, limit=paging.limit
    )
    items = [
        SessionRead.model_validate(
            {
                **{field: getattr(row, field) for field in SESSION_FIELDS},
                "current": row.id == claims.session_id,
            }
        )
        for row in sessions
    ]
    return SessionPage(items=items, total=total, skip=paging.skip, limit=paging.limit)


SESSION_FIELDS = tuple(name for name in SessionRead.model_fields if name != "current")
