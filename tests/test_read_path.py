"""The cheap read path: the caller's account is read once per request, read-only sessions take
no write lock on SQLite and run in autocommit on PostgreSQL, and a verified user is trusted only
inside the transaction that read it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import use_settings
from app.database import create_engine, create_session_factory, upgrade_database
from app.main import create_app
from app.models import User
from app.services import LeadService
from app.services.base import get_acting_user, remember_verified_user
from app.services.exceptions import InactiveUserException
from tests.helpers import (
    ON_POSTGRES,
    TEST_DATABASE_URL,
    LeadFactory,
    add_session,
    make_settings,
    sql_statements,
    token_for,
)

LEADS = "/api/v1/leads"
USERS_QUERY = re.compile(r"\bFROM users\b", re.IGNORECASE)


def user_reads(statements: list[str]) -> int:
    return sum(1 for statement in statements if USERS_QUERY.search(statement))


async def test_reading_a_lead_reads_the_callers_account_once(
    client: httpx.AsyncClient,
    db: AsyncSession,
    make_lead: LeadFactory,
    agent: User,
    auth_headers: Any,
) -> None:
    lead = await make_lead(owner=agent)
    async with sql_statements(db) as statements:
        response = await client.get(f"{LEADS}/{lead.id}", headers=auth_headers(agent))
    assert response.status_code == 200
    assert user_reads(statements) == 1, statements


async def test_listing_leads_reads_the_callers_account_once(
    client: httpx.AsyncClient,
    db: AsyncSession,
    make_lead: LeadFactory,
    agent: User,
    auth_headers: Any,
) -> None:
    await make_lead(owner=agent)
    async with sql_statements(db) as statements:
        response = await client.get(LEADS, headers=auth_headers(agent))
    assert response.status_code == 200 and response.json()["total"] == 1
    assert user_reads(statements) == 1, statements


async def test_creating_a_lead_reads_the_callers_account_once(
    client: httpx.AsyncClient, db: AsyncSession, agent: User, auth_headers: Any
) -> None:
    body = {"first_name": "Ada", "last_name": "Lovelace", "email": "ada@acme.com"}
    async with sql_statements(db) as statements:
        response = await client.post(LEADS, json=body, headers=auth_headers(agent))
    assert response.status_code == 201
    assert user_reads(statements) == 1, statements


async def test_a_verified_user_is_read_again_in_a_later_transaction(
    db: AsyncSession, agent: User
) -> None:
    """What the API verified stays true only for its own transaction: a deactivation committed
    after it must stop the next call."""
    agent_id = agent.id
    user = await db.get(User, agent_id)
    assert user is not None
    remember_verified_user(db, user)
    assert await get_acting_user(db, agent_id) is user  # same transaction: no second read
    await db.commit()
    await db.execute(update(User).where(User.id == agent_id).values(is_active=False))
    await db.commit()
    with pytest.raises(InactiveUserException):
        await get_acting_user(db, agent_id)


async def test_a_verified_user_does_not_stand_in_for_another(
    db: AsyncSession, agent: User, other_agent: User
) -> None:
    other_id = other_agent.id
    user = await db.get(User, agent.id)
    assert user is not None
    remember_verified_user(db, user)
    async with sql_statements(db) as statements:
        acting = await get_acting_user(db, other_id)
    assert acting.id == other_id
    assert user_reads(statements) == 1


async def test_service_calls_without_the_api_still_check_the_user(
    db: AsyncSession, make_lead: LeadFactory, agent: User
) -> None:
    agent_id = agent.id
    await db.execute(update(User).where(User.id == agent_id).values(is_active=False))
    await db.commit()
    with pytest.raises(InactiveUserException):
        await LeadService.list_leads(db, user_id=agent_id)


@pytest.mark.skipif(ON_POSTGRES, reason="SQLite file locking")
async def test_reads_do_not_wait_for_a_sqlite_writer(tmp_path: Path) -> None:
    """A GET starts a deferred transaction, so it reads beside a writer holding the lock (WAL);
    a write in the same situation waits for the lock (and here, with a short busy timeout,
    gives up)."""
    url = f"sqlite+aiosqlite:///{tmp_path}/crm.db"
    settings = make_settings(database_url=url, sqlite_busy_timeout_ms=200)
    with use_settings(settings):
        engine = create_engine(url, settings)
        writer = create_engine(url, settings)
        await upgrade_database(engine)
        try:
            async with create_session_factory(engine)() as db:
                admin = User(
                    email="admin@example.com",
                    full_name="Admin",
                    hashed_password="x",
                    is_superuser=True,
                )
                db.add(admin)
                await db.commit()
                admin_id = admin.id
                session_id = await add_session(db, admin_id)
            app = create_app(engine=engine)
            token = token_for(settings, admin_id, session=session_id)
            headers = {"Authorization": f"Bearer {token}"}
            transport = httpx.ASGITransport(app=app)
            async with (
                httpx.AsyncClient(transport=transport, base_url="http://t") as client,
                writer.connect() as holder,
            ):
                await holder.execute(text("SELECT 1"))  # BEGIN IMMEDIATE: holds the write lock
                read = await client.get(LEADS, headers=headers)
                write = await client.post(
                    LEADS,
                    json={"first_name": "A", "last_name": "B", "email": "a@b.com"},
                    headers=headers,
                )
            assert read.status_code == 200, read.text
            assert write.status_code in (409, 503), write.text
        finally:
            await engine.dispose()
            await writer.dispose()


@pytest.mark.skipif(not ON_POSTGRES, reason="needs TEST_DATABASE_URL (PostgreSQL)")
async def test_read_only_sessions_run_in_autocommit_on_postgresql() -> None:
    """Two statements of a read-only session are two transactions (no BEGIN was sent); two of
    an ordinary session share one."""
    xid = text("SELECT pg_current_xact_id()::text")
    engine = create_engine(TEST_DATABASE_URL)
    try:
        async with create_session_factory(engine, read_only=True)() as db:
            assert await db.scalar(xid) != await db.scalar(xid)
        async with create_session_factory(engine)() as db:
            assert await db.scalar(xid) == await db.scalar(xid)
            await db.rollback()
    finally:
        await engine.dispose()
