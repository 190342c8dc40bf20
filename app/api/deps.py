"""Request dependencies: the database session and the authenticated user.

Routers declare what they need with these `Annotated` aliases and nothing else:

    async def read_lead(lead_id: int, db: SessionDep, user: CurrentUser) -> ...
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings, get_settings
from app.models import User
from app.schemas.lead import MAX_ID
from app.services.base import remember_verified_user
from app.services.exceptions import AuthenticationException
from app.services.security import InvalidToken, decode_access_token

oauth2_scheme = OAuth2PasswordBearer(tokenUrl="/api/v1/auth/token", auto_error=False)


async def get_settings_dep() -> Settings:
    """The settings in force, the very object the services read (`app.config.get_settings`).
    (Every dependency here is `async def`: FastAPI runs a plain `def` one in a worker thread,
    which costs more than the work it does.)"""
    return get_settings()


READ_ONLY_METHODS = frozenset({"GET", "HEAD"})


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """A session for this request; requests that change nothing get a read-only one (see
    `app.database.create_session_factory`)."""
    state = request.app.state
    if request.method in READ_ONLY_METHODS:
        factory = state.read_session_factory
    else:
        factory = state.session_factory
    async with factory() as session:
        yield session


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
SessionDep = Annotated[AsyncSession, Depends(get_session)]


async def get_current_user(
    request: Request,
    db: SessionDep,
    settings: SettingsDep,
    token: Annotated[str | None, Depends(oauth2_scheme)],
) -> User:
    """The active user the bearer token was issued to; the account is re-read every time, so
    deactivating it, or raising its token version (a password change), locks out the tokens
    issued before at once."""
    if not token:
        raise AuthenticationException("Not authenticated: send 'Authorization: Bearer <token>'.")
    try:
        claims = decode_access_token(token, settings)
    except InvalidToken:
        raise AuthenticationException("The access token is invalid or has expired.") from None
    user_id = claims.user_id
    if not 1 <= user_id <= MAX_ID:  # no such row, and PostgreSQL refuses to even look it up
        raise AuthenticationException("The access token is invalid or has expired.")
    user = await db.get(User, user_id, populate_existing=True)
    if user is None or not user.is_active or user.token_version != claims.version:
        raise AuthenticationException("The access token is invalid or has expired.")
    remember_verified_user(db, user)
    request.state.user_id = user_id  # for the access log line (app/api/observability.py)
    return user


CurrentUser = Annotated[User, Depends(get_current_user)]
