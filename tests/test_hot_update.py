"""`PATCH /leads/{id}` (app/services/lead_changes.py): the lead is read and locked in the same
statement as the caller's account check, changed by the rules `LeadService.update_lead` uses,
and written with one UPDATE; every answer the service gives, in the same order, for a refused
account, a stale superuser hint, a lead that is missing, another agent's or archived, a bad
reassignment and bad fields.

On PostgreSQL the statements run on the session's raw asyncpg connection, the road the served
app takes (app/services/reader.py); on SQLite, through SQLAlchemy.
"""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.models import Lead, User
from app.services import LeadService
from tests.helpers import LeadFactory, change_user, claims_bearer, sql_statements, uid

LEADS = "/api/v1/leads"
INVALID = {"detail": "The access token is invalid or has expired.", "code": "not_authenticated"}
REFUSALS = {"deactivated": {"is_active": False}, "token_revoked": {"token_version": 1}}
CHANGE = {"company": "Analytical Engines", "notes": "Called back"}


async def stored(db: AsyncSession, lead_id: int) -> Lead:
    lead = await db.scalar(
        select(Lead).where(Lead.id == lead_id).execution_options(populate_existing=True)
    )
    assert lead is not None
    return lead


@pytest.fixture
async def agent_lead(make_lead: LeadFactory, agent: User) -> int:
    return uid(await make_lead(owner=agent))


def sent(statements: list[str], *kinds: str) -> list[str]:
    return [s for s in statements if s.lstrip().upper().startswith(kinds)]


# --- the statements ---------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["agent", "superuser"])
async def test_a_patch_locks_the_lead_with_the_account_check_and_writes_it_and_its_event(
    client: httpx.AsyncClient,
    db: AsyncSession,
    settings: Settings,
    agent: User,
    superuser: User,
    agent_lead: int,
    role: str,
) -> None:
    caller = agent if role == "agent" else superuser
    headers = claims_bearer(settings, uid(caller), superuser=role == "superuser")
    async with sql_statements(db) as statements:
        response = await client.patch(f"{LEADS}/{agent_lead}", json=CHANGE, headers=headers)
    assert response.status_code == 200, response.text
    reads = sent(statements, "SELECT", "WITH")
    assert len(reads) == 1 and "users" in reads[0] and "leads" in reads[0], reads
    if db.bind.dialect.name == "postgresql":
        assert "FOR UPDATE" in reads[0]
    writes = sent(statements, "UPDATE", "INSERT", "DELETE")
    assert len(writes) == 2, writes
    assert writes[0].lstrip().upper().startswith("UPDATE LEADS"), writes
    assert writes[1].lstrip().upper().startswith("INSERT INTO LEAD_EVENTS"), writes


async def test_a_patch_that_changes_nothing_writes_nothing(
    client: httpx.AsyncClient,
    db: AsyncSession,
    settings: Settings,
    agent: User,
    agent_lead: int,
) -> None:
    before = await stored(db, agent_lead)
    notes, updated_at = before.notes, before.updated_at
    async with sql_statements(db) as statements:
        response = await client.patch(
            f"{LEADS}/{agent_lead}",
            json={"company": before.company},
            headers=claims_bearer(settings, uid(agent)),
        )
    assert response.status_code == 200, response.text
    assert sent(statements, "UPDATE", "INSERT", "DELETE") == []
    after = await stored(db, agent_lead)
    assert (after.notes, after.updated_at) == (notes, updated_at)


# --- the account is refused: 401, nothing changed ----------------------------------------------


@pytest.mark.parametrize("refusal", list(REFUSALS))
async def test_a_refused_account_gets_401_and_changes_nothing(
    client: httpx.AsyncClient,
    db: AsyncSession,
    settings: Settings,
    agent: User,
    agent_lead: int,
    refusal: str,
) -> None:
    headers = claims_bearer(settings, uid(agent), superuser=False)
    await change_user(db, uid(agent), **REFUSALS[refusal])
    response = await client.patch(f"{LEADS}/{agent_lead}", json=CHANGE, headers=headers)
    assert response.status_code == 401
    assert response.json() == INVALID
    assert (await stored(db, agent_lead)).company is None


async def test_a_token_of_a_deleted_account_gets_401_on_patch(
    client: httpx.AsyncClient, settings: Settings, agent_lead: int
) -> None:
    response = await client.patch(
        f"{LEADS}/{agent_lead}", json=CHANGE, headers=claims_bearer(settings, 999_999)
    )
    assert response.status_code == 401
    assert response.json() == INVALID


async def test_a_missing_lead_for_a_deactivated_account_is_401_not_404(
    client: httpx.AsyncClient, db: AsyncSession, settings: Settings, agent: User
) -> None:
    headers = claims_bearer(settings, uid(agent), superuser=False)
    await change_user(db, uid(agent), is_active=False)
    response = await client.patch(f"{LEADS}/424242", json=CHANGE, headers=headers)
    assert response.status_code == 401


@pytest.mark.parametrize(
    "body",
    [{"email": "not-an-email"}, {"colour": "red"}, {"assigned_to": 424242}, {"notes": 12}],
    ids=["bad_email", "unknown_field", "reassigns", "bad_body"],
)
async def test_a_deactivated_account_with_a_bad_change_hears_401_first(
    client: httpx.AsyncClient,
    db: AsyncSession,
    settings: Settings,
    agent: User,
    agent_lead: int,
    body: dict,
) -> None:
    headers = claims_bearer(settings, uid(agent), superuser=False)
    await change_user(db, uid(agent), is_active=False)
    response = await client.patch(f"{LEADS}/{agent_lead}", json=body, headers=headers)
    assert response.status_code == 401, response.text


# --- whose lead ---------------------------------------------------------------------------------


async def test_another_agents_lead_is_404_and_unchanged(
    client: httpx.AsyncClient,
    db: AsyncSession,
    settings: Settings,
    other_agent: User,
    agent_lead: int,
) -> None:
    response = await client.patch(
        f"{LEADS}/{agent_lead}", json=CHANGE, headers=claims_bearer(settings, uid(other_agent))
    )
    assert response.status_code == 404
    assert response.json()["code"] == "lead_not_found"
    assert (await stored(db, agent_lead)).company is None


async def test_a_demoted_superusers_old_token_may_not_change_others_leads(
    client: httpx.AsyncClient,
    db: AsyncSession,
    settings: Settings,
    superuser: User,
    agent_lead: int,
) -> None:
    headers = claims_bearer(settings, uid(superuser), superuser=True)
    await change_user(db, uid(superuser), is_superuser=False)
    response = await client.patch(f"{LEADS}/{agent_lead}", json=CHANGE, headers=headers)
    assert response.status_code == 404


async def test_a_promoted_agents_old_token_may_change_others_leads(
    client: httpx.AsyncClient,
    db: AsyncSession,
    settings: Settings,
    other_agent: User,
    agent_lead: int,
) -> None:
    headers = claims_bearer(settings, uid(other_agent), superuser=False)
    await change_user(db, uid(other_agent), is_superuser=True)
    response = await client.patch(f"{LEADS}/{agent_lead}", json=CHANGE, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["company"] == "Analytical Engines"


async def test_an_archived_lead_is_409_before_its_bad_fields(
    client: httpx.AsyncClient,
    db: AsyncSession,
    settings: Settings,
    superuser: User,
    agent_lead: int,
) -> None:
    await LeadService.delete_lead(db, agent_lead, user_id=uid(superuser))
    response = await client.patch(
        f"{LEADS}/{agent_lead}",
        json={"email": "bad"},
        headers=claims_bearer(settings, uid(superuser)),
    )
    assert response.status_code == 409
    assert response.json()["code"] == "conflict"


# --- reassignment -------------------------------------------------------------------------------


async def test_an_agent_may_not_reassign_their_lead(
    client: httpx.AsyncClient,
    db: AsyncSession,
    settings: Settings,
    agent: User,
    other_agent: User,
    agent_lead: int,
) -> None:
    response = await client.patch(
        f"{LEADS}/{agent_lead}",
        json={"assigned_to": uid(other_agent)},
        headers=claims_bearer(settings, uid(agent)),
    )
    assert response.status_code == 403
    assert (await stored(db, agent_lead)).assigned_to == uid(agent)


@pytest.mark.parametrize("assignee", ["missing", "inactive"])
async def test_reassigning_to_a_missing_or_inactive_user_is_refused_before_bad_fields(
    client: httpx.AsyncClient,
    db: AsyncSession,
    settings: Settings,
    superuser: User,
    inactive_user: User,
    agent: User,
    agent_lead: int,
    assignee: str,
) -> None:
    target = 424242 if assignee == "missing" else uid(inactive_user)
    response = await client.patch(
        f"{LEADS}/{agent_lead}",
        json={"assigned_to": target, "email": "bad"},
        headers=claims_bearer(settings, uid(superuser)),
    )
    expected = {"missing": (404, "user_not_found"), "inactive": (409, "inactive_user")}
    assert (response.status_code, response.json()["code"]) == expected[assignee]
    assert (await stored(db, agent_lead)).assigned_to == uid(agent)


async def test_a_superuser_reassigns_a_lead(
    client: httpx.AsyncClient,
    db: AsyncSession,
    settings: Settings,
    superuser: User,
    other_agent: User,
    agent_lead: int,
) -> None:
    response = await client.patch(
        f"{LEADS}/{agent_lead}",
        json={"assigned_to": uid(other_agent)},
        headers=claims_bearer(settings, uid(superuser)),
    )
    assert response.status_code == 200, response.text
    assert (await stored(db, agent_lead)).assigned_to == uid(other_agent)


# --- the same change as the service makes ------------------------------------------------------

COMPARED = (
    "lead_score",
    "score_is_manual",
    "status",
    "source",
    "tags",
    "probability",
    "estimated_value",
    "next_follow_up_date",
    "call_attempts",
    "company",
)


def note_texts(lead: Lead) -> list[str]:
    """The note lines without their timestamps."""
    return [line.split("] ", 1)[1] for line in (lead.notes or "").splitlines()]


@pytest.mark.parametrize(
    "change",
    [
        {"source": "REFERRAL", "tags": ["vip"], "notes": "Rescored"},
        {"lead_score": 12, "status": "CONTACTED", "probability": 0.4},
        {"lead_score": None, "estimated_value": 1500.5},
        {"next_follow_up_date": "2027-01-02T03:04:00Z", "call_attempts": 2},
    ],
    ids=["rescored", "manual_score", "back_to_auto", "dates"],
)
async def test_the_api_changes_a_lead_as_the_service_would(
    client: httpx.AsyncClient,
    db: AsyncSession,
    settings: Settings,
    make_lead: LeadFactory,
    superuser: User,
    agent: User,
    change: dict,
) -> None:
    by_api = uid(await make_lead(owner=agent, company="Acme"))
    by_service = uid(await make_lead(owner=agent, company="Acme"))
    response = await client.patch(
        f"{LEADS}/{by_api}", json=change, headers=claims_bearer(settings, uid(superuser))
    )
    assert response.status_code == 200, response.text
    await LeadService.update_lead(db, by_service, change, user_id=uid(superuser))
    api_lead, service_lead = await stored(db, by_api), await stored(db, by_service)
    for name in COMPARED:
        assert getattr(api_lead, name) == getattr(service_lead, name), name
    assert note_texts(api_lead) == note_texts(service_lead)
    assert api_lead.updated_at > api_lead.created_at
    assert response.json()["notes"] == api_lead.notes
