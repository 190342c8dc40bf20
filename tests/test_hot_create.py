"""`POST /leads` (app/services/lead_creation.py): one statement that checks the caller's
account, and for a superuser the assignee, while it inserts; and still every answer that
`LeadService.create_lead` gives, in the same order, for a refused account, a stale superuser
hint, a missing or inactive assignee and a bad lead.

On PostgreSQL the statement runs on the session's raw asyncpg connection, the road the served
app takes (app/services/reader.py); on SQLite, through SQLAlchemy.
"""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.models import Lead, User
from app.services import LeadService
from tests.helpers import change_user, claims_bearer, sql_statements, uid

LEADS = "/api/v1/leads"
NEW = {"first_name": "Ada", "last_name": "Lovelace", "email": "ada@example.com"}
INVALID = {"detail": "The access token is invalid or has expired.", "code": "not_authenticated"}
REFUSALS = {"deactivated": {"is_active": False}, "token_revoked": {"token_version": 1}}


async def lead_count(db: AsyncSession) -> int:
    return int(await db.scalar(select(func.count()).select_from(Lead)) or 0)


# --- one round trip ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "assign"), [("agent", False), ("superuser", False), ("superuser", True)]
)
async def test_a_create_is_one_statement_that_checks_the_account_and_records_the_event(
    client: httpx.AsyncClient,
    db: AsyncSession,
    settings: Settings,
    agent: User,
    superuser: User,
    role: str,
    assign: bool,
) -> None:
    caller = agent if role == "agent" else superuser
    body = {**NEW, "assigned_to": uid(agent)} if assign else NEW
    headers = claims_bearer(settings, uid(caller), superuser=role == "superuser")
    # The first statement with a tag array on a connection has asyncpg look the type up, once.
    assert (await client.post(LEADS, json=body, headers=headers)).status_code == 201
    another = {**body, "email": "another@example.com"}
    async with sql_statements(db) as statements:
        response = await client.post(LEADS, json=another, headers=headers)
    assert response.status_code == 201, response.text
    sent = [s for s in statements if s.lstrip().upper().startswith(("SELECT", "WITH", "INSERT"))]
    if db.bind.dialect.name == "postgresql":  # the lead and its event: one statement
        assert len(sent) == 1, sent
        assert "INSERT INTO leads" in sent[0] and "INSERT INTO lead_events" in sent[0]
    else:  # SQLite has no INSERT in a WITH: two, in one transaction
        assert len(sent) == 2, sent
        assert sent[0].lstrip().startswith("INSERT INTO leads")
        assert sent[1].lstrip().startswith("INSERT INTO lead_events")
    assert "users" in sent[0]
    assert "NOT (EXISTS" in sent[0]  # and the duplicate test


# --- the account is refused: 401, nothing stored ------------------------------------------------


@pytest.mark.parametrize("refusal", list(REFUSALS))
@pytest.mark.parametrize("role", ["agent", "superuser"])
async def test_a_refused_account_gets_401_and_creates_nothing(
    client: httpx.AsyncClient,
    db: AsyncSession,
    settings: Settings,
    agent: User,
    superuser: User,
    refusal: str,
    role: str,
) -> None:
    caller_id = uid(agent if role == "agent" else superuser)
    headers = claims_bearer(settings, caller_id, superuser=role == "superuser")
    await change_user(db, caller_id, **REFUSALS[refusal])
    response = await client.post(LEADS, json=NEW, headers=headers)
    assert response.status_code == 401
    assert response.json() == INVALID
    assert response.headers["www-authenticate"] == "Bearer"
    assert await lead_count(db) == 0


async def test_a_token_of_a_deleted_account_gets_401_on_create(
    client: httpx.AsyncClient, db: AsyncSession, settings: Settings
) -> None:
    response = await client.post(LEADS, json=NEW, headers=claims_bearer(settings, 999_999))
    assert response.status_code == 401
    assert response.json() == INVALID
    assert await lead_count(db) == 0


@pytest.mark.parametrize(
    "body",
    [
        {"first_name": "Ada", "last_name": "Lovelace"},  # no email nor phone: the service's 422
        {**NEW, "email": "not-an-email"},  # the service's stricter email check
        {**NEW, "assigned_to": 424242},  # an agent naming someone else: 403
        {**NEW, "notes": 12},  # the request model's 422
    ],
    ids=["no_contact", "bad_email", "assigns_elsewhere", "bad_body"],
)
async def test_a_deactivated_account_with_a_bad_lead_hears_401_first(
    client: httpx.AsyncClient, db: AsyncSession, settings: Settings, agent: User, body: dict
) -> None:
    headers = claims_bearer(settings, uid(agent), superuser=False)
    await change_user(db, uid(agent), is_active=False)
    response = await client.post(LEADS, json=body, headers=headers)
    assert response.status_code == 401, response.text
    assert response.json() == INVALID


async def test_an_active_account_with_a_lead_without_contact_hears_422(
    client: httpx.AsyncClient, settings: Settings, agent: User
) -> None:
    body = {"first_name": "Ada", "last_name": "Lovelace"}
    response = await client.post(LEADS, json=body, headers=claims_bearer(settings, uid(agent)))
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["body", "email"]


# --- the assignee -------------------------------------------------------------------------------


async def test_a_missing_assignee_is_404_and_creates_nothing(
    client: httpx.AsyncClient, db: AsyncSession, settings: Settings, superuser: User
) -> None:
    body = {**NEW, "assigned_to": 424242}
    response = await client.post(LEADS, json=body, headers=claims_bearer(settings, uid(superuser)))
    assert response.status_code == 404
    assert response.json() == {"detail": "Agent 424242 was not found.", "code": "user_not_found"}
    assert await lead_count(db) == 0


async def test_an_inactive_assignee_is_refused_and_creates_nothing(
    client: httpx.AsyncClient,
    db: AsyncSession,
    settings: Settings,
    superuser: User,
    inactive_user: User,
) -> None:
    body = {**NEW, "assigned_to": uid(inactive_user)}
    response = await client.post(LEADS, json=body, headers=claims_bearer(settings, uid(superuser)))
    assert response.status_code == 409, response.text
    assert response.json()["code"] == "inactive_user"
    assert response.json()["detail"] == f"Agent {uid(inactive_user)} is inactive."
    assert await lead_count(db) == 0


async def test_a_missing_assignee_is_named_before_the_leads_bad_fields(
    client: httpx.AsyncClient, settings: Settings, superuser: User
) -> None:
    body = {"first_name": "Ada", "last_name": "Lovelace", "assigned_to": 424242}
    response = await client.post(LEADS, json=body, headers=claims_bearer(settings, uid(superuser)))
    assert response.status_code == 404
    assert response.json()["code"] == "user_not_found"


async def test_a_superuser_may_assign_a_new_lead_to_themselves(
    client: httpx.AsyncClient, settings: Settings, superuser: User
) -> None:
    body = {**NEW, "assigned_to": uid(superuser)}
    response = await client.post(LEADS, json=body, headers=claims_bearer(settings, uid(superuser)))
    assert response.status_code == 201, response.text
    assert response.json()["assigned_to"] == uid(superuser)


# --- a stale superuser hint ---------------------------------------------------------------------


async def test_a_demoted_superusers_old_token_creates_as_an_agent(
    client: httpx.AsyncClient, db: AsyncSession, settings: Settings, superuser: User, agent: User
) -> None:
    headers = claims_bearer(settings, uid(superuser), superuser=True)
    await change_user(db, uid(superuser), is_superuser=False)
    refused = await client.post(LEADS, json={**NEW, "assigned_to": uid(agent)}, headers=headers)
    assert refused.status_code == 403, refused.text
    created = await client.post(LEADS, json=NEW, headers=headers)
    assert created.status_code == 201, created.text
    assert created.json()["assigned_to"] == uid(superuser)  # an agent's lead is their own


async def test_a_promoted_agents_old_token_may_assign_to_others(
    client: httpx.AsyncClient, db: AsyncSession, settings: Settings, agent: User, other_agent: User
) -> None:
    headers = claims_bearer(settings, uid(agent), superuser=False)
    await change_user(db, uid(agent), is_superuser=True)
    response = await client.post(
        LEADS, json={**NEW, "assigned_to": uid(other_agent)}, headers=headers
    )
    assert response.status_code == 201, response.text
    assert response.json()["assigned_to"] == uid(other_agent)


async def test_a_promoted_agents_old_token_creates_unassigned_leads(
    client: httpx.AsyncClient, db: AsyncSession, settings: Settings, agent: User
) -> None:
    headers = claims_bearer(settings, uid(agent), superuser=False)
    await change_user(db, uid(agent), is_superuser=True)
    response = await client.post(LEADS, json=NEW, headers=headers)
    assert response.status_code == 201, response.text
    assert response.json()["assigned_to"] is None  # a superuser's lead goes to nobody


async def test_a_token_without_the_hint_creates_as_its_account_allows(
    client: httpx.AsyncClient, settings: Settings, superuser: User, agent: User
) -> None:
    body = {**NEW, "assigned_to": uid(agent)}
    as_superuser = await client.post(
        LEADS, json=body, headers=claims_bearer(settings, uid(superuser))
    )
    assert as_superuser.status_code == 201, as_superuser.text
    body["email"] = "second@example.com"  # not a duplicate of the first
    as_agent = await client.post(LEADS, json=body, headers=claims_bearer(settings, uid(agent)))
    assert as_agent.status_code == 201, as_agent.text
    refused = await client.post(
        LEADS,
        json={**NEW, "assigned_to": uid(superuser)},
        headers=claims_bearer(settings, uid(agent)),
    )
    assert refused.status_code == 403


# --- the same lead as the service makes --------------------------------------------------------


COMPARED = ("lead_score", "score_is_manual", "status", "source", "tags", "call_attempts")


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"company": "Acme", "source": "REFERRAL", "tags": ["VIP", "hot"], "notes": "Met at expo"},
        {"lead_score": 7, "status": "CONTACTED", "phone": "+1 555 010 2030", "email": None},
    ],
    ids=["bare", "scored_fields", "manual_score"],
)
async def test_the_api_stores_the_lead_the_service_would(
    client: httpx.AsyncClient,
    db: AsyncSession,
    settings: Settings,
    superuser: User,
    agent: User,
    fields: dict,
) -> None:
    body = {**NEW, "assigned_to": uid(agent), **fields}
    response = await client.post(LEADS, json=body, headers=claims_bearer(settings, uid(superuser)))
    assert response.status_code == 201, response.text
    api_lead = await db.get(Lead, response.json()["id"], populate_existing=True)
    service_lead = await LeadService.create_lead(db, body, user_id=uid(superuser))
    assert api_lead is not None
    for name in (*COMPARED, "assigned_to", "created_by", "email", "phone"):
        assert getattr(api_lead, name) == getattr(service_lead, name), name
    strip_time = [line.split("] ", 1)[1] for line in (api_lead.notes or "").splitlines()]
    assert strip_time == [line.split("] ", 1)[1] for line in service_lead.notes.splitlines()]
    assert api_lead.created_at == api_lead.updated_at
    assert response.headers["location"] == f"{LEADS}/{api_lead.id}"
