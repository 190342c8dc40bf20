"""The API's hot reads: a lead, a page of leads, the statistics, for the caller of a request.

Each is one statement that checks the caller's account (active, token version, the token's
session still live, and for scoped reads the superuser flag the token claims) and reads the data
it guards, in one round trip: the account check joins the data, so a caller whose account fails
the check gets no row at all.
Only then does a second statement run, to tell why (app/services/README.md):

- the account is gone, inactive or its tokens were revoked: 401;
- the token's superuser hint is stale (a promotion or a demotion since it was issued): the read
  runs again, shaped for the flag as stored.

A lead the caller may not see reads as missing (404), exactly as in `LeadService`. The SQL of
the reads themselves is `app/services/lead_queries.py`'s, shared with `LeadService`; a reader
(app/services/reader.py) decides how it reaches the database.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Select, and_, bindparam, exists, or_, select, true
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased
from sqlalchemy.sql.elements import ColumnElement

from app.config import get_settings
from app.models import ApiKey, AuthSession, FieldValidationError, Lead, User
from app.models.types import utcnow
from app.schemas.filters import LeadFilters, LeadPaging
from app.services.exceptions import (
    AuthenticationException,
    LeadNotFoundException,
    ValidationException,
)
from app.services.lead_queries import (
    LEAD_COLUMNS,
    LeadPageResult,
    LeadRow,
    counted,
    cursor_condition,
    match_count,
    median_days_to_won,
    page_conditions,
    page_result,
    page_with_total,
    statistics_groups,
    statistics_of,
)
from app.services.reader import Reader
from app.services.security import AccessClaims

T = TypeVar("T")

INVALID_TOKEN = "The access token is invalid or has expired."

CALLER = User.__table__.alias("caller")
_leads = Lead.__table__
CALLER_ID = bindparam("caller_id")
_sessions = AuthSession.__table__
# The token's session is the caller's and has not ended (logout, revocation, a stolen refresh
# token, a password change elsewhere): a correlated look-up by primary key.
SESSION_LIVE = exists(
    select(_sessions.c.id).where(
        _sessions.c.id == bindparam("caller_session"),
        _sessions.c.user_id == CALLER.c.id,
        _sessions.c.revoked_at.is_(None),
    )
)
_keys = ApiKey.__table__
# Or the API key is the caller's, not revoked and not expired.
KEY_LIVE = exists(
    select(_keys.c.id).where(
        _keys.c.id == bindparam("caller_key"),
        _keys.c.user_id == CALLER.c.id,
        _keys.c.revoked_at.is_(None),
        or_(_keys.c.expires_at.is_(None), _keys.c.expires_at > bindparam("caller_now")),
    )
)
_VERSION = bindparam("caller_version")
CALLER_OK = (
    CALLER.c.id == CALLER_ID,
    CALLER.c.is_active.is_(True),
    # An access token's version must be the account's; an API key has none to compare.
    or_(CALLER.c.token_version == _VERSION, _VERSION.is_(None)),
    or_(SESSION_LIVE, KEY_LIVE),
)
CLAIMED_ROLE = CALLER.c.is_superuser == bindparam("caller_superuser")

# One row if the account passes, lead columns NULL if the lead is missing or not the caller's.
LEAD_FOR_CALLER = (
    select(CALLER.c.id, *LEAD_COLUMNS)
    .select_from(
        CALLER.outerjoin(
            _leads,
            and_(
                _leads.c.id == bindparam("lead_id"),
                or_(CALLER.c.is_superuser.is_(True), _leads.c.assigned_to == CALLER.c.id),
            ),
        )
    )
    .where(*CALLER_OK)
)


# The account check as a condition on other rows: true when the caller's account may act and
# has the role the statement is shaped for. An uncorrelated EXISTS: evaluated once per statement.
MAY_READ = exists(select(CALLER.c.id).where(*CALLER_OK, CLAIMED_ROLE))


ACCOUNT = select(
    CALLER.c.is_active,
    CALLER.c.token_version,
    CALLER.c.is_superuser,
    or_(SESSION_LIVE, KEY_LIVE),
).where(CALLER.c.id == CALLER_ID)


def _statistics_for_caller(superuser: bool) -> Select[Any]:
    """The `lead_stats` groups a caller of that role sees, joined to the account check: one row
    with NULL groups for a caller with no leads, none for a refused one."""
    scope = None if superuser else CALLER_ID
    groups = statistics_groups(scope).subquery("groups")
    return (
        select(CALLER.c.id, median_days_to_won(scope), *groups.c)
        .select_from(CALLER.outerjoin(groups, true()))
        .where(*CALLER_OK, CLAIMED_ROLE)
    )


# Both shapes hold no values of their own (the caller's come as parameters): built once.
STATISTICS_FOR_CALLER = {role: _statistics_for_caller(role) for role in (False, True)}


class LeadReads:
    @staticmethod
    async def lead(reader: Reader, lead_id: int, caller: AccessClaims) -> LeadRow:
        """The lead, archived or not, if the caller is its assignee or a superuser."""
        rows = await reader.rows(LEAD_FOR_CALLER, {**account_params(caller), "lead_id": lead_id})
        if not rows:
            raise AuthenticationException(INVALID_TOKEN)
        if rows[0][1] is None:
            raise LeadNotFoundException(lead_id)
        return LeadRow._make(rows[0][1:])

    @staticmethod
    async def page(
        reader: Reader, filters: LeadFilters, paging: LeadPaging, caller: AccessClaims
    ) -> LeadPageResult:
        """What `LeadService.list_leads` answers, for the caller: agents see their own leads.

        One statement: the page's leads, each row carrying the total (`page_with_total`),
        gated by the account check (an uncorrelated EXISTS, which the database evaluates
        once). No row is either a refused caller or an empty page; the account is read only
        then."""
        cap = None if paging.exact_total else get_settings().total_count_cap
        params = account_params(caller)
        query_key = (filters.model_dump_json(), paging.model_dump_json(), cap)

        async def run(superuser: bool) -> tuple[list[tuple], list[ColumnElement[bool]]]:
            scope = None if superuser else caller.user_id
            key = (superuser, scope, query_key)
            built = _PAGE_STATEMENTS.get(key)
            if built is None:
                built = await _page_statement(reader, caller, filters, paging, scope, cap)
                if len(_PAGE_STATEMENTS) >= PAGE_STATEMENTS_KEPT:
                    _PAGE_STATEMENTS.clear()
                _PAGE_STATEMENTS[key] = built
            statement, where = built
            return await reader.rows(statement, {**params, "caller_superuser": superuser}), where

        verified = caller.superuser is None
        superuser = await account_role(reader, caller) if verified else bool(caller.superuser)
        rows, where = await run(superuser)
        if not rows and not verified:
            stored = await account_role(reader, caller)  # 401 if refused
            if stored != superuser:  # a stale hint: read as the stored role
                rows, where = await run(stored)
        if rows:
            count = int(rows[0][0])
        elif paging.skip == 0 and paging.cursor is None:
            count = 0  # nothing at the start: nothing at all
        else:  # an empty page further on: how many are there before it?
            count = int((await reader.rows(match_count(where, cap)))[0][0])
        total, exact = counted(count, cap)
        items = [LeadRow._make(row[1:]) for row in rows]
        return page_result(items, filters, paging, total, exact)

    @staticmethod
    async def statistics(reader: Reader, caller: AccessClaims) -> dict[str, Any]:
        """What `LeadService.get_lead_statistics` answers, for the caller."""

        async def run(superuser: bool) -> list[tuple] | None:
            statement = STATISTICS_FOR_CALLER[superuser]
            params = {**account_params(caller), "caller_superuser": superuser}
            rows = await reader.rows(statement, params)
            return rows or None

        rows = await _as_caller(reader, caller, run)
        groups = [row[2:] for row in rows if row[2] is not None]
        return statistics_of(groups, rows[0][1])

    @staticmethod
    async def check_caller(reader: Reader, caller: AccessClaims) -> bool:
        """Whether the caller is a superuser; AuthenticationException if the account may not
        act (for requests refused before they read anything, which must still say 401 first)."""
        return await account_role(reader, caller)


# The page statements of recent queries, by (role, scope, query): a page the app serves again
# (the same view, opened by the same agent or by any superuser) skips building the statement
# and SQLAlchemy's cache key for it, which together were a fifth of a list page's CPU. The
# statements hold only the query's own values (the caller's come as parameters) and are never
# changed, so any request may run one; a flood of distinct queries empties the dict, not memory.
PAGE_STATEMENTS_KEPT = 256
_PAGE_STATEMENTS: dict[Any, tuple[Select[Any], list[ColumnElement[bool]]]] = {}


async def _page_statement(
    reader: Reader,
    caller: AccessClaims,
    filters: LeadFilters,
    paging: LeadPaging,
    scope: int | None,
    cap: int | None,
) -> tuple[Select[Any], list[ColumnElement[bool]]]:
    """A page's statement (`page_with_total`) and its filter, for `LeadReads.page`."""
    beyond = await _built(reader, caller, lambda: cursor_condition(filters, paging))
    where, page_where = await _built(
        reader, caller, lambda: page_conditions(filters, paging, scope, beyond)
    )
    searching = bool((filters.search or "").strip()) and paging.cursor is None
    statement = page_with_total(
        where, [*page_where, MAY_READ], paging, cap, short_page_counts=searching
    )
    return statement, where


async def _built(reader: Reader, caller: AccessClaims, build: Callable[[], T]) -> T:
    """`build()`, a statement or part of one from the caller's filters; what it refuses (a
    blank tag, a foreign cursor) is a 422, unless the caller may not act at all: 401 first."""
    try:
        return build()
    except (ValidationException, FieldValidationError) as exc:
        await account_role(reader, caller)
        if isinstance(exc, FieldValidationError):
            raise ValidationException.of_fields([exc]) from exc
        raise


def account_params(caller: AccessClaims) -> dict[str, Any]:
    """The values `CALLER_OK` is checked against: the token's."""
    return {
        "caller_id": caller.user_id,
        "caller_version": caller.version,
        "caller_session": caller.session_id,
        "caller_key": caller.key_id,
        "caller_now": utcnow(),
    }


async def _as_caller(reader: Reader, caller: AccessClaims, run: Any) -> list[tuple]:
    """`run(superuser)` shaped for the role the token claims, checked in its own statement;
    when that finds nothing, the account is read to tell a refused caller (401) from a stale
    hint (run again with the stored role)."""
    if caller.superuser is not None:
        rows = await run(caller.superuser)
        if rows is not None:
            return rows
    superuser = await account_role(reader, caller)
    rows = await run(superuser)
    if rows is None:  # the account changed between the two statements
        raise AuthenticationException(INVALID_TOKEN)
    return rows


async def account_role(reader: Reader, caller: AccessClaims) -> bool:
    rows = await reader.rows(ACCOUNT, account_params(caller))
    if not rows:
        raise AuthenticationException(INVALID_TOKEN)
    active, version, superuser, credential_live = rows[0]
    stale = caller.version is not None and version != caller.version
    if not active or stale or not credential_live:
        raise AuthenticationException(INVALID_TOKEN)
    return bool(superuser)


_CallerUser = aliased(User, CALLER)
CALLER_USER = select(_CallerUser).where(*CALLER_OK).execution_options(populate_existing=True)


async def caller_user(db: AsyncSession, caller: AccessClaims) -> User:
    """The caller's account, through the same check as the hot paths' (`CALLER_OK`), for the
    requests that work through the ORM; AuthenticationException when it fails."""
    user = await db.scalar(CALLER_USER, account_params(caller))
    if user is None:
        raise AuthenticationException(INVALID_TOKEN)
    return user
