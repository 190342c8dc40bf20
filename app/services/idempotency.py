"""Safe retries (issue 13): a write sent with an `Idempotency-Key` happens once, however often
it is sent; every repeat gets the first answer again.

The HTTP layer describes the request (`IdempotentCall`: the user, the key, a fingerprint of
method, path and body, and how to render the write's result as its answer) and puts it in
`current` around the one service call it makes. The transaction of that call (`@transactional`,
or the hot create's own) then, before anything else, `claim`s the key and, after the write and
before committing, `store`s the rendered answer in `idempotency_keys`. So:

- the answer is committed with the write or not at all: a write that failed with a 5xx or a
  database error leaves no row, and its retry runs again. A refusal (a 4xx of the service's:
  not found, a conflict, a stale If-Match...) changed nothing; its answer is kept afterwards,
  in a transaction of its own (`idempotency_refusals.py`), so that its retries hear the same;
- a repeat finds the row and is answered from it (`IdempotentReplay`), byte for byte, with no
  write; with another fingerprint it is refused (422);
- on PostgreSQL the claim takes a transaction-scoped advisory lock on (user, key) without
  waiting, so a repeat that arrives while the first still runs is told so (409) instead of
  running twice; the lock goes with the first one's commit, when its row becomes visible. On
  SQLite a write transaction holds the database's write lock from its start (BEGIN IMMEDIATE),
  so a repeat simply waits for the first and is then answered from its row.

State lives only in the database, so this holds across workers and restarts. Expired rows are
purged a bounded batch at a time by each new answer stored, oldest first through the
`expires_at` index, never by a scan of the table.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Protocol

import orjson
from sqlalchemy import BigInteger, bindparam, delete, func, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import get_settings
from app.models import IdempotencyKey
from app.models.types import utcnow
from app.services.exceptions import (
    IdempotencyInProgressException,
    IdempotencyKeyReusedException,
)

# The headers of an answer that a replay repeats (with the status and the body).
KEPT_HEADERS = ("content-type", "location", "etag")
PURGE_BATCH = 100


class Rendered(Protocol):
    """An answer as the HTTP layer renders it (a Starlette `Response`)."""

    status_code: int
    body: bytes
    headers: Mapping[str, str]


@dataclass(frozen=True)
class StoredAnswer:
    status_code: int
    headers: dict[str, str]
    body: bytes


class IdempotentReplay(Exception):
    """The key's first answer, found: the write is not run again. Raised out of the service
    call to the HTTP layer, which sends `answer` with `Idempotent-Replayed: true`."""

    def __init__(self, answer: StoredAnswer) -> None:
        super().__init__("replayed")
        self.answer = answer


@dataclass
class IdempotentCall:
    user_id: int
    key: str
    fingerprint: str
    render: Callable[[Any], Rendered]
    # What the write answered, rendered inside its transaction (the route sends this very one).
    response: Rendered | None = field(default=None)


current: ContextVar[IdempotentCall | None] = ContextVar("idempotent_call", default=None)


def fingerprint(method: str, path: str, body: bytes) -> str:
    digest = hashlib.sha256()
    for part in (method.upper().encode(), path.encode(), body):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


class Executor(Protocol):
    async def rows(self, statement: Any, params: Any = None) -> list[tuple]: ...


class OnSession:
    """A session's transaction as an `Executor`."""

    def __init__(self, db: AsyncSession) -> None:
        self.db = db

    async def rows(self, statement: Any, params: Any = None) -> list[tuple]:
        result = await self.db.execute(statement, params or {})
        return [tuple(row) for row in result] if result.returns_rows else []


_keys = IdempotencyKey.__table__
_ONE_KEY = (_keys.c.user_id == bindparam("user_id"), _keys.c.key == bindparam("key"))
TRY_LOCK = select(func.pg_try_advisory_xact_lock(bindparam("lock", type_=BigInteger)))
FIND = select(_keys.c.fingerprint, _keys.c.status_code, _keys.c.headers, _keys.c.body).where(
    *_ONE_KEY, _keys.c.expires_at > bindparam("now", type_=_keys.c.expires_at.type)
)
DROP_OWN_EXPIRED = delete(_keys).where(
    *_ONE_KEY, _keys.c.expires_at <= bindparam("now", type_=_keys.c.expires_at.type)
)
# Every column of a key's row from parameters of its name: one shape for both inserts.
_ROW = {c.key: bindparam(c.key, type_=c.type) for c in _keys.c if not c.primary_key}
STORE = insert(_keys).values(_ROW)


STORE_UNLESS_KEPT = {
    name: dialect.insert(_keys)
    .values(_ROW)
    .on_conflict_do_nothing(index_elements=["user_id", "key"])
    for name, dialect in (("postgresql", postgresql), ("sqlite", sqlite))
}


def _purge(postgres: bool) -> Any:
    """Up to PURGE_BATCH expired rows, oldest first (the index on `expires_at`); on PostgreSQL
    rows another purge holds are skipped, so concurrent writes never queue behind each other."""
    oldest = (
        select(_keys.c.id)
        .where(_keys.c.expires_at <= bindparam("now", type_=_keys.c.expires_at.type))
        .order_by(_keys.c.expires_at)
        .limit(PURGE_BATCH)
    )
    if postgres:
        oldest = oldest.with_for_update(skip_locked=True)
    return delete(_keys).where(_keys.c.id.in_(oldest))


PURGE = {postgres: _purge(postgres) for postgres in (False, True)}


def _lock_key(call: IdempotentCall) -> int:
    """A signed 64-bit number for (user, key): the advisory lock's name."""
    digest = hashlib.blake2b(f"{call.user_id}\n{call.key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


async def claim(executor: Executor, dialect_name: str, call: IdempotentCall) -> None:
    """At the start of the write's transaction: raise `IdempotentReplay` with the key's first
    answer if it has one (422 if it answered another request), 409 while another transaction
    holds the key (PostgreSQL); otherwise return, the key held until this one ends."""
    if dialect_name == "postgresql":
        [(locked,)] = await executor.rows(TRY_LOCK, {"lock": _lock_key(call)})
        if not locked:
            raise IdempotencyInProgressException()
    rows = await executor.rows(FIND, {"user_id": call.user_id, "key": call.key, "now": utcnow()})
    if not rows:
        return
    made_for, status_code, headers, body = rows[0]
    if made_for != call.fingerprint:
        raise IdempotencyKeyReusedException()
    if isinstance(headers, str | bytes):  # raw asyncpg reads JSONB as text
        headers = orjson.loads(headers)
    raise IdempotentReplay(StoredAnswer(status_code, dict(headers), bytes(body)))


async def store(executor: Executor, dialect_name: str, call: IdempotentCall, result: Any) -> None:
    """Before the write's transaction commits: render its result as the answer, keep it on the
    call for the route to send, and store it."""
    response = call.render(result)
    call.response = response
    await keep(executor, dialect_name, call, response)


async def keep(
    executor: Executor,
    dialect_name: str,
    call: IdempotentCall,
    response: Rendered,
    *,
    unless_kept: bool = False,
) -> None:
    """Store `response` as the key's answer, then purge one batch of expired keys. A refusal is
    kept after its own transaction rolled back (`unless_kept`: a repeat may have answered the
    key meanwhile, and its answer stays)."""
    now = utcnow()
    headers = {
        name: value for name, value in response.headers.items() if name.lower() in KEPT_HEADERS
    }
    await executor.rows(DROP_OWN_EXPIRED, {"user_id": call.user_id, "key": call.key, "now": now})
    values = {
        "user_id": call.user_id,
        "key": call.key,
        "fingerprint": call.fingerprint,
        "status_code": response.status_code,
        "headers": headers,
        "body": bytes(response.body),
        "created_at": now,
        "expires_at": now + timedelta(seconds=get_settings().idempotency_ttl_seconds),
    }
    statement = STORE_UNLESS_KEPT[dialect_name] if unless_kept else STORE
    await executor.rows(statement, values)
    await executor.rows(PURGE[dialect_name == "postgresql"], {"now": now})
