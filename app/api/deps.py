"""Request dependencies: the database session and the authenticated user.

Routers declare what they need with these `Annotated` aliases and nothing else:

    async def read_lead(lead_id: int, db: SessionDep, user: CurrentUser) -> ...
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi._compat import ModelField
from fastapi.dependencies.models import Dependant
from fastapi.dependencies.utils import get_cached_model_fields
from fastapi.routing import APIRoute
from fastapi.security import OAuth2PasswordBearer
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings, get_settings
from app.models import User
from app.schemas.common import MAX_ID
from app.services.base import remember_verified_user
from app.services.exceptions import AuthenticationException, ValidationException
from app.services.messages import unknown_name
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


async def refuse_unknown_query_parameters(request: Request) -> None:
    """A misspelt filter must not silently return everything, nor any parameter be ignored:
    one the operation does not declare is a 422 naming it (GET /leads's query model says the
    same through `extra="forbid"`)."""
    if not request.query_params:
        return
    unknown = sorted(set(request.query_params) - _declared_query_names(request))
    if unknown:
        raise ValidationException(
            [(["query", name], unknown_name(["query", name])) for name in unknown]
        )


async def refuse_unknown_query_parameters_after_login(request: Request, user: CurrentUser) -> None:
    """The same, for operations that need a login: an anonymous caller hears about the missing
    token first, and learns nothing about the parameters."""
    await refuse_unknown_query_parameters(request)


def _declared_query_names(request: Request) -> frozenset[str]:
    """The operation's query parameter names, worked out once per route and app."""
    route: APIRoute = request.scope["route"]
    cache: dict[str, frozenset[str]] = request.app.state.query_names  # by operation id
    names = cache.get(route.unique_id)
    if names is None:
        names = frozenset(field.alias for field in _query_fields(route.dependant))
        cache[route.unique_id] = names
    return names


def _query_fields(dependant: Dependant) -> list[ModelField]:
    """The query parameters of an operation, its dependencies' included."""
    fields = [field for param in dependant.query_params for field in _fields_of(param)]
    for sub in dependant.dependencies:
        fields.extend(_query_fields(sub))
    return fields


def _fields_of(param: ModelField) -> list[ModelField]:
    """A query model (`Annotated[LeadListQuery, Query()]`) stands for each of its fields."""
    model = param.field_info.annotation
    if isinstance(model, type) and issubclass(model, BaseModel):
        return get_cached_model_fields(model)
    return [param]


KnownQuery = Depends(refuse_unknown_query_parameters)
KnownQueryAfterLogin = Depends(refuse_unknown_query_parameters_after_login)
