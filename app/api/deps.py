"""Request dependencies: the database session and the authenticated user.

Routers declare what they need with these `Annotated` aliases and nothing else:

    async def read_lead(lead_id: int, db: SessionDep, user: CurrentUser) -> ...
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Request
from fastapi._compat import ModelField
from fastapi.dependencies.models import Dependant
from fastapi.dependencies.utils import get_cached_model_fields
from fastapi.routing import APIRoute
from fastapi.security import OAuth2PasswordBearer
from pydantic import BaseModel
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings, get_settings
from app.database import Turns
from app.models import User
from app.schemas.common import MAX_ID
from app.services.api_keys import key_claims, looks_like_key, touch
from app.services.base import SessionOpener, remember_verified_user
from app.services.event_stream import EventStream
from app.services.exceptions import (
    AuthenticationException,
    LoginBusyException,
    PermissionDeniedException,
    ValidationException,
)
from app.services.lead_reads import INVALID_TOKEN, LeadReads, caller_user
from app.services.messages import unknown_name
from app.services.reader import Reader, Writer
from app.services.security import AccessClaims, InvalidToken, decode_access_token


async def get_settings_dep() -> Settings:
    """The settings in force, the very object the services read (`app.config.get_settings`).
    (Every dependency here is `async def`: FastAPI runs a plain `def` one in a worker thread,
    which costs more than the work it does.)"""
    return get_settings()


READ_ONLY_METHODS = frozenset({"GET", "HEAD"})


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """A session for this request; requests that change nothing get a read-only one (see
    `app.database.create_session_factory`). On PostgreSQL the request first waits its turn
    for a pooled connection (`app.database.Turns`), as long as the pool would have let it:
    past `DB_POOL_TIMEOUT_SECONDS` it gets the pool's own time-out, a 503."""
    state = request.app.state
    if request.method in READ_ONLY_METHODS:
        factory = state.read_session_factory
    else:
        factory = state.session_factory
    turns: Turns | None = state.session_turns
    if turns is None:
        async with factory() as session:
            yield session
        return
    try:
        await turns.acquire()
    except TimeoutError:
        raise PoolTimeoutError("No database connection came free in time.") from None
    try:
        async with factory() as session:
            yield session
    finally:
        turns.release()


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
SessionDep = Annotated[AsyncSession, Depends(get_session)]


def client_address(request: Request) -> str | None:
    """The peer's address; behind a trusted proxy (FORWARDED_ALLOW_IPS) uvicorn has put the
    real client's there. None when there is none (a Unix socket)."""
    return request.client.host if request.client else None


ClientAddress = Annotated[str | None, Depends(client_address)]


class BearerCaller(OAuth2PasswordBearer):
    """Who the bearer token says the caller is: an access token, read from the token alone, or
    an API key (`crm_...`, app/services/api_keys.py), whose read scope refuses writes here. The
    account itself is checked by the read that follows (app/services/lead_reads.py) or by
    `get_current_user`;
    until then the request keeps the claims in `request.state.caller`, so that an error raised
    before that read (a bad parameter) can still check the account first (app/api/errors.py).

    It also refuses query parameters the operation does not declare, for every operation that
    needs a login. Both are one dependency, the security scheme itself, rather than a scheme,
    a function and a check: each dependency FastAPI solves costs a hot read a few percent of
    its time (py-spy, issue 12)."""

    async def __call__(self, request: Request) -> AccessClaims:  # type: ignore[override]
        token = await super().__call__(request)
        if not token:
            raise AuthenticationException(
                "Not authenticated: send 'Authorization: Bearer <token>'."
            )
        state = request.app.state
        if looks_like_key(token):
            claims = await key_claims(state.reader, token)
        else:
            try:
                claims = decode_access_token(token, get_settings())
            except InvalidToken:
                raise AuthenticationException(INVALID_TOKEN) from None
        if not 1 <= claims.user_id <= MAX_ID:  # no such row; PostgreSQL refuses to look it up
            raise AuthenticationException(INVALID_TOKEN)
        request.state.caller = claims
        request.state.user_id = claims.user_id  # for the access log line (observability.py)
        if request.query_params:
            try:
                await refuse_unknown_query_parameters(request)
            except ValidationException:
                await LeadReads.check_caller(state.reader, claims)  # 401 first
                raise
        if claims.key_id is not None:
            if claims.read_only and request.method not in READ_ONLY_METHODS:
                await LeadReads.check_caller(state.reader, claims)  # 401 first
                raise PermissionDeniedException(READ_KEY_WRITES)
            await touch(state.writer, token, claims.key_id)
        return claims


# The scheme keeps the name it has always had in /openapi.json (and generated clients).
get_caller = BearerCaller(
    tokenUrl="/api/v1/auth/token", scheme_name="OAuth2PasswordBearer", auto_error=False
)

Caller = Annotated[AccessClaims, Depends(get_caller)]


@dataclass(frozen=True, slots=True)
class ReadCaller:
    """The caller of a hot read, with the reader it reads through."""

    reader: Reader
    claims: AccessClaims


class BearerReadCaller(BearerCaller):
    """`BearerCaller` for the hot reads, handing over the app's reader too: one dependency
    for both, where a reader dependency plus `Caller` were two (each dependency costs a
    detail read a few percent of its time)."""

    async def __call__(self, request: Request) -> ReadCaller:  # type: ignore[override]
        claims = await super().__call__(request)
        return ReadCaller(request.app.state.reader, claims)


get_read_caller = BearerReadCaller(
    tokenUrl="/api/v1/auth/token", scheme_name="OAuth2PasswordBearer", auto_error=False
)

ReadAccess = Annotated[ReadCaller, Depends(get_read_caller)]


@dataclass(frozen=True, slots=True)
class WriteCaller:
    """The caller of a one-statement write (`POST /leads`), with the writer it writes through."""

    writer: Writer
    claims: AccessClaims


class BearerWriteCaller(BearerCaller):
    """`BearerCaller` for the one-statement writes, handing over the app's writer too: such a
    write needs no session, and checks the account in its own statement."""

    async def __call__(self, request: Request) -> WriteCaller:  # type: ignore[override]
        claims = await super().__call__(request)
        return WriteCaller(request.app.state.writer, claims)


get_write_caller = BearerWriteCaller(
    tokenUrl="/api/v1/auth/token", scheme_name="OAuth2PasswordBearer", auto_error=False
)

WriteAccess = Annotated[WriteCaller, Depends(get_write_caller)]


async def get_current_user(request: Request, db: SessionDep, claims: Caller) -> User:
    """The active user the bearer token was issued to, while the token's session lasts; both
    are re-read every time, so deactivating the account, raising its token version, or ending
    the session locks out the tokens issued before at once."""
    user = await caller_user(db, claims)
    remember_verified_user(db, user)
    request.state.caller = None  # checked
    return user


CurrentUser = Annotated[User, Depends(get_current_user)]


async def get_session_opener(request: Request) -> SessionOpener:
    """Read-only sessions to open one at a time, each for one transaction: for a response that
    outlives its request's dependencies (the live stream), which must hold no connection while
    it waits, as a request's session would."""
    return request.app.state.read_session_factory  # type: ignore[no-any-return]


Sessions = Annotated[SessionOpener, Depends(get_session_opener)]


async def get_write_session_opener(request: Request) -> SessionOpener:
    """Sessions that may write, opened only when needed: for a route whose usual road needs no
    session (`POST /leads`, one statement) but whose rarer one does."""
    return request.app.state.session_factory  # type: ignore[no-any-return]


WriteSessions = Annotated[SessionOpener, Depends(get_write_session_opener)]


@dataclass(frozen=True, slots=True)
class StreamStart:
    """The caller of the live stream, where their stream begins, and its sessions."""

    claims: AccessClaims
    start: int
    sessions: SessionOpener


LAST_EVENT_ID_HEADER = (
    "The `id:` of the last event received: the stream resumes right after it. EventSource "
    "sends it by itself when it reconnects."
)


async def get_stream_start(
    request: Request,
    claims: Caller,
    sessions: Sessions,
    last_event_id: Annotated[
        str | None, Header(alias="Last-Event-ID", description=LAST_EVENT_ID_HEADER)
    ] = None,
) -> StreamStart:
    """Checked before the stream's 200 goes out, so a bad caller or Last-Event-ID gets its
    error. In a transaction of its own: a stream holds no connection while it waits."""
    async with sessions() as db:
        start = await EventStream.start(db, claims, last_event_id)
    request.state.caller = None  # checked
    return StreamStart(claims, start, sessions)


StreamCaller = Annotated[StreamStart, Depends(get_stream_start)]

READ_KEY_WRITES = "This API key may only read (scope 'read'); writes need a 'write' key."
KEYS_MAY_NOT = "API keys cannot manage API keys, sessions or passwords: log in as the person."


def refuse_api_keys(claims: AccessClaims) -> None:
    """403 for a caller that is an API key, for what only a person who logged in may do."""
    if claims.key_id is not None:
        raise PermissionDeniedException(KEYS_MAY_NOT)


async def get_person(user: CurrentUser, claims: Caller) -> User:
    """`get_current_user`, for operations an API key may not call (the account is checked
    first, so a revoked key still hears 401)."""
    refuse_api_keys(claims)
    return user


Person = Annotated[User, Depends(get_person)]


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


@contextlib.asynccontextmanager
async def login_turn(request: Request) -> AsyncIterator[None]:
    """A turn at this process's password checks, of which LOGIN_HASH_CONCURRENCY run at once
    (each in a worker thread: argon2 is slow on purpose). A flood of logins then queues here,
    holding no database connection, while every other request goes on; a login that gets no
    turn within LOGIN_QUEUE_SECONDS is answered 503 with Retry-After."""
    turns: asyncio.Semaphore = request.app.state.login_turns
    try:
        async with asyncio.timeout(get_settings().login_queue_seconds):
            await turns.acquire()
    except TimeoutError:
        raise LoginBusyException() from None
    try:
        yield
    finally:
        turns.release()
