"""The authorization table of the HTTP API: every endpoint against every kind of caller.

Two tables:

- `REJECTED_CREDENTIALS` x `ENDPOINTS`: callers without valid credentials (no header, an
  inactive account, an expired, forged, malformed or wrongly-schemed token, a user deactivated
  after the token was issued, ...) get 401 `not_authenticated` with `WWW-Authenticate: Bearer`
  on every endpoint, and the database stays exactly as it was. Each request targets what the
  token's subject (the agent) could otherwise touch, so a missing check shows up as a 2xx.
- `CASES`: authenticated callers. An agent on their own leads and account (2xx), an agent on
  another agent's lead (404 `lead_not_found`, the answer a missing id gets, or simply not
  visible for lists and statistics), an agent doing what only a superuser may (403
  `permission_denied`), and a superuser (2xx) on everyone's. Denied calls change nothing.

"Nothing changed" is checked by re-reading both tables with Core selects (no ORM identity map
in the way) before and after the request. Ids are kept as plain ints in `World`, because a
failed service call rolls back the shared session and expires every ORM object.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.models import (
    ApiKey,
    AssignmentRule,
    AuthSession,
    CaptureForm,
    Lead,
    LeadImport,
    LeadStatus,
    User,
    Webhook,
    WebhookDelivery,
)
from app.services import LeadService
from app.services.lead_merges import LeadMerges
from app.services.security import JWT_ALGORITHM, key_id
from tests import helpers
from tests.helpers import (
    NO_SUCH_SESSION,
    PASSWORD,
    TEST_SESSIONS,
    USER_FIELDS,
    LeadFactory,
    add_api_key,
    sqlite_suite_only,
)

API = "/api/v1"
LEADS = Lead.__table__
USERS = User.__table__
SESSIONS = AuthSession.__table__
WEBHOOKS = Webhook.__table__
DELIVERIES = WebhookDelivery.__table__
RULES = AssignmentRule.__table__
FORMS = CaptureForm.__table__
OTHER_SECRET = "an-entirely-different-secret-key-of-decent-length"
WEBHOOK_URL = "https://93.184.215.14/hook"
NEW_WEBHOOK = {"url": WEBHOOK_URL, "event_types": ["lead.created"]}


# --- the world every test starts from -----------------------------------------------------------


@dataclass(frozen=True)
class World:
    """Plain ids of the users and leads every test starts with."""

    superuser: int
    agent: int
    other_agent: int
    inactive: int
    agent_email: str
    inactive_email: str
    own: int  # the agent's
    own2: int  # the agent's, CONTACTED
    own_archived: int  # the agent's, archived
    other: int  # the other agent's, WON, company Globex
    other_archived: int  # the other agent's, archived
    unassigned: int  # nobody's
    agent_session: int  # the session each user's token belongs to
    other_session: int
    superuser_session: int
    agent_read_key: str  # the agent's API keys
    agent_write_key: str
    agent_key_id: int  # the write key's id
    revoked_key: str  # the agent's, revoked
    expired_key: str  # the agent's, expired
    other_key_id: int  # the other agent's key
    webhook: int  # a subscription, and one delivery of it
    delivery: int
    agent_import: int  # a CSV import each agent sent
    other_import: int
    rule: int  # an assignment rule the capture form uses, and one nothing uses
    spare_rule: int
    form: int  # a capture form


@pytest.fixture
async def world(
    db: AsyncSession,
    superuser: User,
    agent: User,
    other_agent: User,
    inactive_user: User,
    make_lead: LeadFactory,
) -> World:
    boss = superuser.id
    write_key_id, write_key = await add_api_key(db, agent.id, "write")
    ago = datetime.now(UTC) - timedelta(minutes=1)
    w = World(
        superuser=boss,
        agent=agent.id,
        other_agent=other_agent.id,
        inactive=inactive_user.id,
        agent_email=agent.email,
        inactive_email=inactive_user.email,
        own=(await make_lead(owner=agent)).id,
        own2=(await make_lead(owner=agent, status=LeadStatus.CONTACTED)).id,
        own_archived=(await make_lead(owner=agent)).id,
        other=(await make_lead(owner=other_agent, status=LeadStatus.WON, company="Globex")).id,
        other_archived=(await make_lead(owner=other_agent)).id,
        unassigned=(await make_lead()).id,
        agent_session=TEST_SESSIONS[agent.id],
        other_session=TEST_SESSIONS[other_agent.id],
        superuser_session=TEST_SESSIONS[boss],
        agent_read_key=(await add_api_key(db, agent.id, "read"))[1],
        agent_write_key=write_key,
        agent_key_id=write_key_id,
        revoked_key=(await add_api_key(db, agent.id, revoked=True))[1],
        expired_key=(await add_api_key(db, agent.id, expires_at=ago))[1],
        other_key_id=(await add_api_key(db, other_agent.id))[0],
        **(await add_webhook(db, boss)),
        agent_import=await add_import(db, agent.id),
        other_import=await add_import(db, other_agent.id),
        **(await add_capture_form(db, boss, agent.id)),
    )
    await LeadService.delete_lead(db, w.own_archived, user_id=boss)
    await LeadService.delete_lead(db, w.other_archived, user_id=boss)
    return w


async def add_import(db: AsyncSession, owner: int) -> int:
    """A finished CSV import sent by `owner`; its id."""
    now = datetime.now(UTC)
    job = LeadImport(
        created_by=owner,
        status="done",
        mode="insert",
        on_error="abort",
        options={},
        total_rows=0,
        report={},
        created_at=now,
        finished_at=now,
    )
    db.add(job)
    await db.flush()
    return job.id


async def add_capture_form(db: AsyncSession, owner: int, agent: int) -> dict[str, int]:
    """Two assignment rules (one used by a capture form) and the form; their ids."""
    now = datetime.now(UTC)
    rules = [
        AssignmentRule(
            name=name, strategy="fixed", agent_ids=[agent], created_at=now, updated_at=now
        )
        for name in ("Web", "Spare")
    ]
    db.add_all(rules)
    await db.flush()
    form = CaptureForm(
        name="Contact",
        key_digest="0" * 64,
        key_hint="cf_0000",
        allowed_origins=[],
        source="WEBSITE",
        tags=[],
        assignment_rule_id=rules[0].id,
        created_by=owner,
        created_at=now,
        updated_at=now,
    )
    db.add(form)
    await db.commit()
    return {"rule": rules[0].id, "spare_rule": rules[1].id, "form": form.id}


async def add_webhook(db: AsyncSession, owner: int) -> dict[str, int]:
    """A subscription (to a literal public address: nothing is resolved or sent here) with
    one delivery; their ids."""
    now = datetime.now(UTC)
    hook = Webhook(
        url=WEBHOOK_URL,
        event_types=["*"],
        secret="whsec_" + base64.b64encode(b"s" * 32).decode(),
        is_active=True,
        created_by=owner,
        created_at=now,
        updated_at=now,
    )
    db.add(hook)
    await db.flush()
    delivery = WebhookDelivery(
        webhook_id=hook.id,
        message_id="1",
        event_type="lead.created",
        payload="{}",
        status="delivered",
        attempts=1,
        next_attempt_at=now,
        created_at=now,
    )
    db.add(delivery)
    await db.commit()
    return {"webhook": hook.id, "delivery": delivery.id}


# --- reading the database afresh ------------------------------------------------------------


async def snapshot(db: AsyncSession) -> tuple[list[tuple[Any, ...]], ...]:
    """Every column of every lead, user, session, webhook, delivery, assignment rule and
    capture form, read from the database now."""
    tables = []
    for table in (LEADS, USERS, SESSIONS, WEBHOOKS, DELIVERIES, RULES, FORMS):
        rows = (await db.execute(select(table).order_by(*table.primary_key))).all()
        tables.append([tuple(row) for row in rows])
    return tuple(tables)


async def lead_row(db: AsyncSession, lead_id: int) -> Any:
    return (await db.execute(select(LEADS).where(LEADS.c.id == lead_id))).mappings().one_or_none()


async def user_row(db: AsyncSession, user_id: int) -> Any:
    return (await db.execute(select(USERS).where(USERS.c.id == user_id))).mappings().one()


async def lead_ids_of(db: AsyncSession, **where: Any) -> set[int]:
    query = select(LEADS.c.id).where(*(LEADS.c[name] == value for name, value in where.items()))
    return set((await db.scalars(query)).all())


# --- tokens ---------------------------------------------------------------------------------


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def token_for(user_id: int, settings: Settings) -> str:
    return helpers.token_for(settings, user_id)


def secret(settings: Settings) -> str:
    assert settings.secret_key is not None
    return settings.secret_key.get_secret_value()


def claims(
    user_id: int,
    *,
    issued: timedelta = timedelta(0),
    expires: timedelta = timedelta(minutes=30),
    **extra: Any,
) -> dict[str, Any]:
    """A token's claims, right in everything but what `issued`, `expires` and `extra` say."""
    now = datetime.now(UTC)
    session = TEST_SESSIONS.get(user_id, NO_SUCH_SESSION)
    valid = {"sub": str(user_id), "sid": session, "iat": now + issued, "exp": now + expires}
    return valid | {"type": "access"} | extra


def sign(payload: dict[str, Any], key: str) -> str:
    """Signed as the app signs, naming the key (`kid`) as the app does."""
    return jwt.encode(payload, key, algorithm=JWT_ALGORITHM, headers={"kid": key_id(key)})


def _b64(data: dict[str, Any]) -> str:
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def tampered(w: World, s: Settings) -> str:
    """The agent's genuine token with the payload swapped for the superuser's id."""
    header, _, signature = token_for(w.agent, s).split(".")
    now = int(datetime.now(UTC).timestamp())
    payload = {
        "sub": str(w.superuser),
        "sid": TEST_SESSIONS[w.superuser],
        "iat": now,
        "exp": now + 1800,
        "type": "access",
    }
    return f"{header}.{_b64(payload)}.{signature}"


def without(payload: dict[str, Any], *names: str) -> dict[str, Any]:
    return {k: v for k, v in payload.items() if k not in names}


@dataclass(frozen=True)
class BadCredentials:
    headers: Callable[[World, Settings], dict[str, str]]
    deactivate_agent: bool = False  # after the token is made, before the request
    end_agents_session: bool = False  # likewise


REJECTED_CREDENTIALS: dict[str, BadCredentials] = {
    "anonymous": BadCredentials(lambda w, s: {}),
    "inactive_user": BadCredentials(lambda w, s: bearer(token_for(w.inactive, s))),
    "expired_token": BadCredentials(
        lambda w, s: bearer(
            sign(
                claims(w.agent, issued=-timedelta(hours=2), expires=-timedelta(hours=1)), secret(s)
            )
        )
    ),
    "other_key": BadCredentials(lambda w, s: bearer(sign(claims(w.agent), OTHER_SECRET))),
    "other_key_named_as_ours": BadCredentials(
        lambda w, s: bearer(
            jwt.encode(
                claims(w.agent),
                OTHER_SECRET,
                algorithm=JWT_ALGORITHM,
                headers={"kid": key_id(secret(s))},
            )
        )
    ),
    "malformed_token": BadCredentials(lambda w, s: bearer("not-a-jwt")),
    "empty_bearer": BadCredentials(lambda w, s: {"Authorization": "Bearer "}),
    "wrong_scheme": BadCredentials(
        lambda w, s: {"Authorization": f"Token {token_for(w.agent, s)}"}
    ),
    "basic_auth": BadCredentials(
        lambda w, s: {
            "Authorization": "Basic "
            + base64.b64encode(f"{w.agent_email}:{PASSWORD}".encode()).decode()
        }
    ),
    "no_scheme": BadCredentials(lambda w, s: {"Authorization": token_for(w.agent, s)}),
    "tampered_payload": BadCredentials(lambda w, s: bearer(tampered(w, s))),
    "alg_none": BadCredentials(
        lambda w, s: bearer(jwt.encode(claims(w.superuser), None, algorithm="none"))
    ),
    "no_expiry": BadCredentials(
        lambda w, s: bearer(sign(without(claims(w.agent), "exp"), secret(s)))
    ),
    "not_access_type": BadCredentials(
        lambda w, s: bearer(sign(claims(w.agent, type="refresh"), secret(s)))
    ),
    "unknown_user": BadCredentials(lambda w, s: bearer(sign(claims(987_654), secret(s)))),
    "deactivated_after_issue": BadCredentials(
        lambda w, s: bearer(token_for(w.agent, s)), deactivate_agent=True
    ),
    "session_ended_after_issue": BadCredentials(
        lambda w, s: bearer(token_for(w.agent, s)), end_agents_session=True
    ),
    "another_users_session": BadCredentials(
        lambda w, s: bearer(sign(claims(w.agent, sid=w.other_session), secret(s)))
    ),
    "revoked_api_key": BadCredentials(lambda w, s: bearer(w.revoked_key)),
    "expired_api_key": BadCredentials(lambda w, s: bearer(w.expired_key)),
    "made_up_api_key": BadCredentials(lambda w, s: bearer("crm_0123abcd_" + "x" * 43)),
    "malformed_api_key": BadCredentials(lambda w, s: bearer("crm_not-a-key")),
    "no_session": BadCredentials(
        lambda w, s: bearer(sign(without(claims(w.agent), "sid"), secret(s)))
    ),
}


# Refused from the Authorization header alone, before any statement runs: the same whichever
# database is behind, so run once, by the SQLite suite. The others reach the database.
REFUSED_BEFORE_THE_DATABASE = {
    "anonymous",
    "expired_token",
    "other_key",
    "other_key_named_as_ours",
    "malformed_token",
    "empty_bearer",
    "wrong_scheme",
    "basic_auth",
    "no_scheme",
    "tampered_payload",
    "alg_none",
    "no_expiry",
    "not_access_type",
    "no_session",
    "malformed_api_key",
}


def suites(caller: str) -> Any:
    return sqlite_suite_only if caller in REFUSED_BEFORE_THE_DATABASE else ()


# --- endpoints ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    body: Any = None
    params: dict[str, Any] | None = None
    csv: bytes | None = None  # a CSV body instead of JSON


async def send(client: httpx.AsyncClient, call: Call, headers: dict[str, str]) -> httpx.Response:
    if call.csv is not None:
        sent = {**headers, "Content-Type": "text/csv"}
        return await client.post(API + call.path, content=call.csv, headers=sent)
    return await client.request(
        call.method, API + call.path, json=call.body, params=call.params, headers=headers
    )


NEW_USER = {"email": "new.hire@crm.example.com", "full_name": "New Hire", "password": "long pw 123"}
NEW_LEAD = {"first_name": "Ann", "last_name": "Lee", "email": "ann.lee@acme.com"}
IMPORTED_CSV = b"first_name,last_name,email\nAnn,Lee,ann.lee@acme.com\n"
BY_FILTER = {"filter": {}}  # every live lead the caller may change

# Superusers only: an agent gets 403 on every one.
WEBHOOK_ENDPOINTS: dict[str, Callable[[World], Call]] = {
    "POST /webhooks": lambda w: Call("POST", "/webhooks", NEW_WEBHOOK),
    "GET /webhooks": lambda w: Call("GET", "/webhooks"),
    "GET /webhooks/{id}": lambda w: Call("GET", f"/webhooks/{w.webhook}"),
    "PATCH /webhooks/{id}": lambda w: Call("PATCH", f"/webhooks/{w.webhook}", {"description": "x"}),
    "DELETE /webhooks/{id}": lambda w: Call("DELETE", f"/webhooks/{w.webhook}"),
    "POST /webhooks/{id}/rotate-secret": lambda w: Call(
        "POST", f"/webhooks/{w.webhook}/rotate-secret"
    ),
    "POST /webhooks/{id}/test": lambda w: Call("POST", f"/webhooks/{w.webhook}/test"),
    "GET /webhooks/{id}/deliveries": lambda w: Call("GET", f"/webhooks/{w.webhook}/deliveries"),
    "POST /webhooks/{id}/deliveries/{id}/retry": lambda w: Call(
        "POST", f"/webhooks/{w.webhook}/deliveries/{w.delivery}/retry"
    ),
}

# Superusers only too.
CAPTURE_ENDPOINTS: dict[str, Callable[[World], Call]] = {
    "POST /assignment-rules": lambda w: Call(
        "POST", "/assignment-rules", {"name": "New", "strategy": "fixed", "agent_ids": [w.agent]}
    ),
    "GET /assignment-rules": lambda w: Call("GET", "/assignment-rules"),
    "GET /assignment-rules/{id}": lambda w: Call("GET", f"/assignment-rules/{w.rule}"),
    "PATCH /assignment-rules/{id}": lambda w: Call(
        "PATCH", f"/assignment-rules/{w.rule}", {"name": "Renamed"}
    ),
    "DELETE /assignment-rules/{id}": lambda w: Call("DELETE", f"/assignment-rules/{w.spare_rule}"),
    "POST /capture-forms": lambda w: Call("POST", "/capture-forms", {"name": "Landing page"}),
    "GET /capture-forms": lambda w: Call("GET", "/capture-forms"),
    "GET /capture-forms/{id}": lambda w: Call("GET", f"/capture-forms/{w.form}"),
    "PATCH /capture-forms/{id}": lambda w: Call(
        "PATCH", f"/capture-forms/{w.form}", {"name": "Renamed"}
    ),
    "DELETE /capture-forms/{id}": lambda w: Call("DELETE", f"/capture-forms/{w.form}"),
    "POST /capture-forms/{id}/rotate-key": lambda w: Call(
        "POST", f"/capture-forms/{w.form}/rotate-key"
    ),
}

# Each endpoint, called the way the agent could call it successfully (own lead, own account),
# so a caller whose credentials are ignored would get a 2xx instead of 401.
ENDPOINTS: dict[str, Callable[[World], Call]] = {
    "GET /users/me": lambda w: Call("GET", "/users/me"),
    "PATCH /users/me": lambda w: Call("PATCH", "/users/me", {"full_name": "Renamed"}),
    "GET /users": lambda w: Call("GET", "/users"),
    "POST /users": lambda w: Call("POST", "/users", NEW_USER),
    "GET /users/{id}": lambda w: Call("GET", f"/users/{w.agent}"),
    "GET /users/{id}/sessions": lambda w: Call("GET", f"/users/{w.agent}/sessions"),
    "DELETE /users/{id}/sessions/{id}": lambda w: Call(
        "DELETE", f"/users/{w.agent}/sessions/{w.agent_session}"
    ),
    "POST /auth/logout": lambda w: Call("POST", "/auth/logout"),
    "GET /auth/sessions": lambda w: Call("GET", "/auth/sessions"),
    "DELETE /auth/sessions/{id}": lambda w: Call("DELETE", f"/auth/sessions/{w.agent_session}"),
    "POST /api-keys": lambda w: Call("POST", "/api-keys", {"name": "cron", "scope": "read"}),
    "GET /api-keys": lambda w: Call("GET", "/api-keys"),
    "GET /api-keys/{id}": lambda w: Call("GET", f"/api-keys/{w.agent_key_id}"),
    "DELETE /api-keys/{id}": lambda w: Call("DELETE", f"/api-keys/{w.agent_key_id}"),
    "PATCH /users/{id}": lambda w: Call("PATCH", f"/users/{w.agent}", {"full_name": "Renamed"}),
    "GET /leads": lambda w: Call("GET", "/leads"),
    "POST /leads": lambda w: Call("POST", "/leads", NEW_LEAD),
    "GET /leads/statistics": lambda w: Call("GET", "/leads/statistics"),
    "GET /leads/export": lambda w: Call("GET", "/leads/export"),
    "POST /leads/import": lambda w: Call("POST", "/leads/import", csv=IMPORTED_CSV),
    "GET /imports/{id}": lambda w: Call("GET", f"/imports/{w.agent_import}"),
    "POST /leads/bulk/status": lambda w: Call(
        "POST", "/leads/bulk/status", {"lead_ids": [w.own, w.own2], "status": "QUALIFIED"}
    ),
    "POST /leads/bulk/assign": lambda w: Call(
        "POST", "/leads/bulk/assign", {"lead_ids": [w.own], "agent_user_id": w.other_agent}
    ),
    # the by-filter forms (issue 17): the agent's filter matches own and own2
    "POST /leads/bulk/status?filter": lambda w: Call(
        "POST", "/leads/bulk/status", BY_FILTER | {"status": "QUALIFIED", "expected_count": 2}
    ),
    "POST /leads/bulk/status?dry_run": lambda w: Call(
        "POST", "/leads/bulk/status", BY_FILTER | {"status": "QUALIFIED", "dry_run": True}
    ),
    "POST /leads/bulk/assign?filter": lambda w: Call(
        "POST",
        "/leads/bulk/assign",
        BY_FILTER | {"agent_user_id": w.other_agent, "expected_count": 2},
    ),
    "POST /leads/rescore": lambda w: Call("POST", "/leads/rescore", {}),
    "GET /leads/{id}": lambda w: Call("GET", f"/leads/{w.own}"),
    "GET /leads/{id}/history": lambda w: Call("GET", f"/leads/{w.own}/history"),
    "GET /leads/{id}/duplicates": lambda w: Call("GET", f"/leads/{w.own}/duplicates"),
    "GET /leads/{id}/score": lambda w: Call("GET", f"/leads/{w.own}/score"),
    "GET /leads/{id}/history/status": lambda w: Call("GET", f"/leads/{w.own}/history/status"),
    "PATCH /leads/{id}": lambda w: Call("PATCH", f"/leads/{w.own}", {"status": "QUALIFIED"}),
    "DELETE /leads/{id}": lambda w: Call("DELETE", f"/leads/{w.own}"),
    "DELETE /leads/{id}?hard_delete=true": lambda w: Call(
        "DELETE", f"/leads/{w.own}", params={"hard_delete": "true"}
    ),
    "POST /leads/{id}/restore": lambda w: Call("POST", f"/leads/{w.own_archived}/restore"),
    "POST /leads/{id}/merge": lambda w: Call(
        "POST", f"/leads/{w.own}/merge", {"merge_ids": [w.own2]}
    ),
    "POST /leads/{id}/unmerge": lambda w: Call("POST", f"/leads/{w.own}/unmerge"),
    "POST /leads/{id}/notes": lambda w: Call("POST", f"/leads/{w.own}/notes", {"text": "Hi."}),
    "POST /leads/{id}/calls": lambda w: Call("POST", f"/leads/{w.own}/calls", {"note": "Busy."}),
    **WEBHOOK_ENDPOINTS,
    **CAPTURE_ENDPOINTS,
    # The stream's catching-up form, which ends (ASGITransport answers only once a body has);
    # the open stream, and what each caller's shows, are in tests/test_event_stream.py.
    "GET /events/stream?follow=false": lambda w: Call(
        "GET", "/events/stream", params={"follow": "false"}
    ),
}


# --- table 1: no valid credentials ----------------------------------------------------------


@pytest.mark.parametrize(
    ("endpoint", "caller"),
    [
        pytest.param(endpoint, caller, id=f"{endpoint}-{caller}", marks=suites(caller))
        for endpoint in ENDPOINTS
        for caller in REJECTED_CREDENTIALS
    ],
)
async def test_rejected_credentials_get_401_and_change_nothing(
    client: httpx.AsyncClient,
    db: AsyncSession,
    world: World,
    settings: Settings,
    endpoint: str,
    caller: str,
) -> None:
    credentials = REJECTED_CREDENTIALS[caller]
    headers = credentials.headers(world, settings)
    if credentials.deactivate_agent:
        await db.execute(update(USERS).where(USERS.c.id == world.agent).values(is_active=False))
        await db.commit()
    if credentials.end_agents_session:
        ending = update(SESSIONS).where(SESSIONS.c.id == world.agent_session)
        await db.execute(ending.values(revoked_at=datetime.now(UTC), revoke_reason="logout"))
        await db.commit()
    before = await snapshot(db)

    response = await send(client, ENDPOINTS[endpoint](world), headers)

    assert response.status_code == 401, response.text
    assert response.json()["code"] == "not_authenticated"
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert await snapshot(db) == before


# --- table 2: authenticated callers ---------------------------------------------------------

Check = Callable[[AsyncSession, World, httpx.Response], Awaitable[None]]


Setup = Callable[[AsyncSession, World], Awaitable[None]]


@dataclass(frozen=True)
class Case:
    endpoint: str
    caller: str  # names the row: agent (own things), other_agent (another's), superuser, ...
    acting: str  # "agent" or "superuser": whose token is sent
    call: Callable[[World], Call]
    status: int
    check: Check | None = None
    code: str | None = None  # the error's code, where it is not ERROR_CODES's for the status
    setup: Setup | None = None  # what the world needs besides (run before the snapshot)

    @property
    def id(self) -> str:
        return f"{self.endpoint}-{self.caller}"


def _ids(response: httpx.Response) -> set[int]:
    return {item["id"] for item in response.json()["items"]}


# users ---------------------------------------------------------------------------------------


async def reads_self(db: AsyncSession, w: World, r: httpx.Response) -> None:
    assert set(r.json()) == USER_FIELDS  # never a password hash
    assert r.json()["id"] == w.agent


async def renamed_self(db: AsyncSession, w: World, r: httpx.Response) -> None:
    assert r.json()["full_name"] == "Renamed"
    assert (await user_row(db, w.agent))["full_name"] == "Renamed"


async def superuser_renamed_self(db: AsyncSession, w: World, r: httpx.Response) -> None:
    assert (await user_row(db, w.superuser))["full_name"] == "Renamed"


async def lists_all_users(db: AsyncSession, w: World, r: httpx.Response) -> None:
    assert r.json()["total"] == 4
    assert _ids(r) == {w.superuser, w.agent, w.other_agent, w.inactive}


async def created_user(db: AsyncSession, w: World, r: httpx.Response) -> None:
    assert r.headers["Location"] == f"{API}/users/{r.json()['id']}"
    assert (await user_row(db, r.json()["id"]))["email"] == NEW_USER["email"]


def reads_user(attr: str) -> Check:
    async def check(db: AsyncSession, w: World, r: httpx.Response) -> None:
        assert set(r.json()) == USER_FIELDS
        assert r.json()["id"] == getattr(w, attr)

    return check


async def deactivated_other_agent(db: AsyncSession, w: World, r: httpx.Response) -> None:
    assert r.json()["is_active"] is False
    assert (await user_row(db, w.other_agent))["is_active"] is False


# sessions ------------------------------------------------------------------------------------


async def session_state(db: AsyncSession, session_id: int) -> str | None:
    """The session's revoke reason; None while it is live."""
    query = select(SESSIONS.c.revoke_reason, SESSIONS.c.revoked_at).where(
        SESSIONS.c.id == session_id
    )
    reason, revoked_at = (await db.execute(query)).one()
    assert (reason is None) == (revoked_at is None)
    return reason


def ended(attr: str, reason: str, *, live: tuple[str, ...] = ()) -> Check:
    """That session has ended for `reason`; those in `live` go on."""

    async def check(db: AsyncSession, w: World, r: httpx.Response) -> None:
        assert await session_state(db, getattr(w, attr)) == reason
        for other in live:
            assert await session_state(db, getattr(w, other)) is None

    return check


def lists_sessions(attr: str, *, current: bool) -> Check:
    async def check(db: AsyncSession, w: World, r: httpx.Response) -> None:
        assert r.json()["total"] == 1
        [item] = r.json()["items"]
        assert item["id"] == getattr(w, attr)
        assert item["current"] is current

    return check


# API keys ------------------------------------------------------------------------------------

KEYS = ApiKey.__table__


def made_key_for(attr: str) -> Check:
    async def check(db: AsyncSession, w: World, r: httpx.Response) -> None:
        assert r.json()["key"].startswith(f"crm_{r.json()['prefix']}_")
        assert r.headers["Location"] == f"{API}/api-keys/{r.json()['id']}"
        row = (await db.execute(select(KEYS).where(KEYS.c.id == r.json()["id"]))).one()
        assert row.user_id == getattr(w, attr)
        assert row.digest != r.json()["key"]  # never the key itself

    return check


async def lists_agents_keys(db: AsyncSession, w: World, r: httpx.Response) -> None:
    assert r.json()["total"] == 3  # read, write and the expired one; not the revoked one
    assert all("key" not in item for item in r.json()["items"])


def reads_key(attr: str) -> Check:
    async def check(db: AsyncSession, w: World, r: httpx.Response) -> None:
        assert r.json()["id"] == getattr(w, attr)
        assert "key" not in r.json()

    return check


def revoked_key(attr: str) -> Check:
    async def check(db: AsyncSession, w: World, r: httpx.Response) -> None:
        query = select(KEYS.c.revoked_at).where(KEYS.c.id == getattr(w, attr))
        assert (await db.execute(query)).scalar_one() is not None

    return check


# leads ---------------------------------------------------------------------------------------


async def lists_own_leads(db: AsyncSession, w: World, r: httpx.Response) -> None:
    assert r.json()["total"] == 2
    assert _ids(r) == {w.own, w.own2}


async def lists_own_leads_with_archived(db: AsyncSession, w: World, r: httpx.Response) -> None:
    assert r.json()["total"] == 3
    assert _ids(r) == {w.own, w.own2, w.own_archived}


async def sees_nothing(db: AsyncSession, w: World, r: httpx.Response) -> None:
    assert r.json()["total"] == 0
    assert r.json()["items"] == []


async def lists_all_leads(db: AsyncSession, w: World, r: httpx.Response) -> None:
    assert r.json()["total"] == 4
    assert _ids(r) == {w.own, w.own2, w.other, w.unassigned}


async def lists_all_leads_with_archived(db: AsyncSession, w: World, r: httpx.Response) -> None:
    assert r.json()["total"] == 6


async def lists_other_agents_leads(db: AsyncSession, w: World, r: httpx.Response) -> None:
    assert r.json()["total"] == 1
    assert _ids(r) == {w.other}


def created_lead_for(attr: str) -> Check:
    async def check(db: AsyncSession, w: World, r: httpx.Response) -> None:
        lead_id = r.json()["id"]
        assert r.headers["Location"] == f"{API}/leads/{lead_id}"
        assert r.json()["assigned_to"] == getattr(w, attr)
        assert (await lead_row(db, lead_id))["assigned_to"] == getattr(w, attr)

    return check


async def own_statistics(db: AsyncSession, w: World, r: httpx.Response) -> None:
    stats = r.json()
    assert stats["total_leads"] == 2
    assert sum(stats["leads_by_status"].values()) == 2
    assert sum(stats["leads_by_source"].values()) == 2
    assert stats["leads_by_status"]["NEW"] == 1
    assert stats["leads_by_status"]["CONTACTED"] == 1
    assert stats["leads_by_status"]["WON"] == 0  # the other agent's deal is not theirs
    assert stats["conversion_rate"] == 0.0


async def all_statistics(db: AsyncSession, w: World, r: httpx.Response) -> None:
    stats = r.json()
    assert stats["total_leads"] == 4
    assert stats["leads_by_status"]["WON"] == 1
    assert stats["conversion_rate"] == 25.0


def bulk_set_status(*attrs: str) -> Check:
    async def check(db: AsyncSession, w: World, r: httpx.Response) -> None:
        ids = sorted(getattr(w, a) for a in attrs)
        assert r.json() == {"updated_count": len(ids), "lead_ids": ids}
        for lead_id in ids:
            assert (await lead_row(db, lead_id))["status"] == LeadStatus.QUALIFIED

    return check


def previews(count: int) -> Check:
    async def check(db: AsyncSession, w: World, r: httpx.Response) -> None:
        assert r.json() == {"matched": count}

    return check


def rescored(matched: int) -> Check:
    async def check(db: AsyncSession, w: World, r: httpx.Response) -> None:
        assert r.json() == {"matched": matched, "changed": 0, "remaining": 0}  # all scored now

    return check


async def bulk_assigned_own_to_other_agent(db: AsyncSession, w: World, r: httpx.Response) -> None:
    assert r.json() == {"updated_count": 2, "lead_ids": sorted([w.own, w.own2])}
    assert await lead_ids_of(db, assigned_to=w.other_agent) == {
        w.own,
        w.own2,
        w.other,
        w.other_archived,
    }


async def bulk_assigned_to_other_agent(db: AsyncSession, w: World, r: httpx.Response) -> None:
    assert r.json() == {"updated_count": 2, "lead_ids": sorted([w.own, w.other])}
    assert await lead_ids_of(db, assigned_to=w.other_agent) == {w.own, w.other, w.other_archived}


def reads_lead(attr: str) -> Check:
    async def check(db: AsyncSession, w: World, r: httpx.Response) -> None:
        assert r.json()["id"] == getattr(w, attr)

    return check


def history_of(attr: str) -> Check:
    """The lead's history: its events (the first one its creation), or its status periods."""

    async def check(db: AsyncSession, w: World, r: httpx.Response) -> None:
        items = r.json()["items"]
        assert items, r.text
        if "type" in items[0]:
            assert items[-1]["type"] == "lead.created"
        else:
            assert items[-1]["left_at"] is None

    return check


def candidates(*attrs: str) -> Check:
    """Exactly these leads as duplicate candidates (the world's leads are named FirstN LastN,
    alike each other, except `other`, whose company makes it less so)."""

    async def check(db: AsyncSession, w: World, r: httpx.Response) -> None:
        found = {item["lead"]["id"] for item in r.json()["items"]}
        assert found == {getattr(w, attr) for attr in attrs}, r.text

    return check


def merged_into(survivor: str, owner: str) -> Setup:
    """A lead of `owner`'s merged into `survivor` (by the superuser), for an unmerge."""

    async def setup(db: AsyncSession, w: World) -> None:
        fields = {"first_name": "Dup", "last_name": "Licate", "email": "dup@x.io"}
        fields["assigned_to"] = getattr(w, owner)
        extra_id = (await LeadService.create_lead(db, fields, user_id=w.superuser)).id
        await LeadMerges.merge(db, getattr(w, survivor), [extra_id], user_id=w.superuser)

    return setup


def merged(survivor: str, *attrs: str) -> Check:
    async def check(db: AsyncSession, w: World, r: httpx.Response) -> None:
        assert r.json()["lead"]["id"] == getattr(w, survivor)
        for attr in attrs:
            assert (await lead_row(db, getattr(w, attr)))["merged_into_id"] == getattr(w, survivor)

    return check


async def unmerged(db: AsyncSession, w: World, r: httpx.Response) -> None:
    [back] = r.json()["merged"]
    assert back["merged_into_id"] is None and back["archived_at"] is None


def explains_score(attr: str) -> Check:
    async def check(db: AsyncSession, w: World, r: httpx.Response) -> None:
        body = r.json()
        assert body["score"] == (await lead_row(db, getattr(w, attr)))["lead_score"]
        assert body["base"] + sum(f["points"] for f in body["factors"]) >= body["score"]

    return check


def qualified(attr: str) -> Check:
    async def check(db: AsyncSession, w: World, r: httpx.Response) -> None:
        assert r.json()["status"] == "QUALIFIED"
        assert (await lead_row(db, getattr(w, attr)))["status"] == LeadStatus.QUALIFIED

    return check


def archived(attr: str) -> Check:
    async def check(db: AsyncSession, w: World, r: httpx.Response) -> None:
        row = await lead_row(db, getattr(w, attr))
        assert row["archived_at"] is not None
        assert row["status"] == LeadStatus.LOST

    return check


def gone(attr: str) -> Check:
    async def check(db: AsyncSession, w: World, r: httpx.Response) -> None:
        assert await lead_row(db, getattr(w, attr)) is None

    return check


def restored(attr: str) -> Check:
    async def check(db: AsyncSession, w: World, r: httpx.Response) -> None:
        assert r.json()["archived_at"] is None
        assert (await lead_row(db, getattr(w, attr)))["archived_at"] is None

    return check


def noted(attr: str) -> Check:
    async def check(db: AsyncSession, w: World, r: httpx.Response) -> None:
        notes = (await lead_row(db, getattr(w, attr)))["notes"]
        assert notes.splitlines()[-1].endswith(": Hi.")

    return check


def called(attr: str) -> Check:
    async def check(db: AsyncSession, w: World, r: httpx.Response) -> None:
        assert r.json()["call_attempts"] == 1
        row = await lead_row(db, getattr(w, attr))
        assert row["call_attempts"] == 1
        assert row["last_contact_date"] is not None

    return check


STREAM_CALL = ENDPOINTS["GET /events/stream?follow=false"]
EXPORT_CALL = ENDPOINTS["GET /leads/export"]
IMPORT_CALL = ENDPOINTS["POST /leads/import"]


def imported_for(owner: str | None) -> Check:
    """The file's one lead was created, assigned to `owner` (a World name) or to nobody."""

    async def check(db: AsyncSession, w: World, r: httpx.Response) -> None:
        assert r.json()["created"] == 1
        owners = await db.scalars(
            select(LEADS.c.assigned_to).where(LEADS.c.email == "ann.lee@acme.com")
        )
        assert list(owners) == [None if owner is None else getattr(w, owner)]

    return check


def exports(*names: str) -> Check:
    """The export holds exactly these leads of the world (live ones: no archived), by id."""

    async def check(db: AsyncSession, w: World, r: httpx.Response) -> None:
        ids = [int(row["id"]) for row in csv.DictReader(io.StringIO(r.text))]
        assert ids == sorted(getattr(w, name) for name in names)

    return check


async def streams(db: AsyncSession, w: World, r: httpx.Response) -> None:
    assert r.headers["content-type"].startswith("text/event-stream")
    assert r.text.startswith(": stream open\n")


async def webhook_made(db: AsyncSession, w: World, r: httpx.Response) -> None:
    row = await db.scalar(select(WEBHOOKS.c.url).where(WEBHOOKS.c.id == r.json()["id"]))
    assert row == WEBHOOK_URL


async def lists_webhook(db: AsyncSession, w: World, r: httpx.Response) -> None:
    assert [item["id"] for item in r.json()["items"]] == [w.webhook]


async def reads_webhook(db: AsyncSession, w: World, r: httpx.Response) -> None:
    assert r.json()["id"] == w.webhook


async def lists_delivery(db: AsyncSession, w: World, r: httpx.Response) -> None:
    assert [item["id"] for item in r.json()["items"]] == [w.delivery]


LEAD_BY_RULE = lambda w: Call("POST", "/leads", {**NEW_LEAD, "assignment_rule_id": w.rule})  # noqa: E731


async def assigned_by_rule(db: AsyncSession, w: World, r: httpx.Response) -> None:
    assert (await lead_row(db, r.json()["id"]))["assigned_to"] == w.agent


async def rule_gone(db: AsyncSession, w: World, r: httpx.Response) -> None:
    assert (
        await db.scalar(select(AssignmentRule.id).where(AssignmentRule.id == w.spare_rule)) is None
    )


async def form_gone(db: AsyncSession, w: World, r: httpx.Response) -> None:
    assert await db.scalar(select(CaptureForm.id).where(CaptureForm.id == w.form)) is None


QUALIFY = {"status": "QUALIFIED"}

CASES = [
    # API keys
    Case(
        "POST /api-keys",
        "agent",
        "agent",
        lambda w: Call("POST", "/api-keys", {"name": "cron", "scope": "read"}),
        201,
        made_key_for("agent"),
    ),
    Case(
        "POST /api-keys",
        "other_agent",
        "agent",
        lambda w: Call(
            "POST", "/api-keys", {"name": "x", "scope": "read", "user_id": w.other_agent}
        ),
        403,
    ),
    Case(
        "POST /api-keys",
        "superuser",
        "superuser",
        lambda w: Call("POST", "/api-keys", {"name": "x", "scope": "write", "user_id": w.agent}),
        201,
        made_key_for("agent"),
    ),
    Case(
        "GET /api-keys",
        "agent",
        "agent",
        lambda w: Call("GET", "/api-keys"),
        200,
        lists_agents_keys,
    ),
    Case(
        "GET /api-keys",
        "other_agent",
        "agent",
        lambda w: Call("GET", "/api-keys", params={"user_id": w.other_agent}),
        403,
    ),
    Case(
        "GET /api-keys",
        "superuser",
        "superuser",
        lambda w: Call("GET", "/api-keys", params={"user_id": w.agent}),
        200,
        lists_agents_keys,
    ),
    Case(
        "GET /api-keys/{id}",
        "agent",
        "agent",
        lambda w: Call("GET", f"/api-keys/{w.agent_key_id}"),
        200,
        reads_key("agent_key_id"),
    ),
    Case(
        "GET /api-keys/{id}",
        "other_agent",
        "agent",
        lambda w: Call("GET", f"/api-keys/{w.other_key_id}"),
        404,
        code="api_key_not_found",
    ),
    Case(
        "GET /api-keys/{id}",
        "superuser",
        "superuser",
        lambda w: Call("GET", f"/api-keys/{w.other_key_id}"),
        200,
        reads_key("other_key_id"),
    ),
    Case(
        "DELETE /api-keys/{id}",
        "agent",
        "agent",
        lambda w: Call("DELETE", f"/api-keys/{w.agent_key_id}"),
        204,
        revoked_key("agent_key_id"),
    ),
    Case(
        "DELETE /api-keys/{id}",
        "other_agent",
        "agent",
        lambda w: Call("DELETE", f"/api-keys/{w.other_key_id}"),
        404,
        code="api_key_not_found",
    ),
    Case(
        "DELETE /api-keys/{id}",
        "superuser",
        "superuser",
        lambda w: Call("DELETE", f"/api-keys/{w.other_key_id}"),
        204,
        revoked_key("other_key_id"),
    ),
    # sessions
    Case(
        "POST /auth/logout",
        "agent",
        "agent",
        lambda w: Call("POST", "/auth/logout"),
        204,
        ended("agent_session", "logout", live=("other_session", "superuser_session")),
    ),
    Case(
        "POST /auth/logout",
        "superuser",
        "superuser",
        lambda w: Call("POST", "/auth/logout"),
        204,
        ended("superuser_session", "logout", live=("agent_session",)),
    ),
    Case(
        "GET /auth/sessions",
        "agent",
        "agent",
        lambda w: Call("GET", "/auth/sessions"),
        200,
        lists_sessions("agent_session", current=True),
    ),
    Case(
        "GET /auth/sessions",
        "superuser",
        "superuser",
        lambda w: Call("GET", "/auth/sessions"),
        200,
        lists_sessions("superuser_session", current=True),
    ),
    Case(
        "DELETE /auth/sessions/{id}",
        "agent",
        "agent",
        lambda w: Call("DELETE", f"/auth/sessions/{w.agent_session}"),
        204,
        ended("agent_session", "revoked", live=("other_session",)),
    ),
    Case(
        "DELETE /auth/sessions/{id}",
        "other_agent",
        "agent",
        lambda w: Call("DELETE", f"/auth/sessions/{w.other_session}"),
        404,
        code="session_not_found",
    ),
    Case(
        "DELETE /auth/sessions/{id}",
        "superuser",
        "superuser",
        lambda w: Call("DELETE", f"/auth/sessions/{w.superuser_session}"),
        204,
        ended("superuser_session", "revoked", live=("agent_session",)),
    ),
    Case(
        "DELETE /auth/sessions/{id}",
        "superuser_on_agent",  # /auth/sessions is the caller's own; /users/{id}/sessions not
        "superuser",
        lambda w: Call("DELETE", f"/auth/sessions/{w.agent_session}"),
        404,
        code="session_not_found",
    ),
    Case(
        "GET /users/{id}/sessions",
        "agent",
        "agent",
        lambda w: Call("GET", f"/users/{w.agent}/sessions"),
        200,
        lists_sessions("agent_session", current=True),
    ),
    Case(
        "GET /users/{id}/sessions",
        "other_agent",
        "agent",
        lambda w: Call("GET", f"/users/{w.other_agent}/sessions"),
        403,
    ),
    Case(
        "GET /users/{id}/sessions",
        "superuser",
        "superuser",
        lambda w: Call("GET", f"/users/{w.agent}/sessions"),
        200,
        lists_sessions("agent_session", current=False),
    ),
    Case(
        "DELETE /users/{id}/sessions/{id}",
        "agent",
        "agent",
        lambda w: Call("DELETE", f"/users/{w.agent}/sessions/{w.agent_session}"),
        204,
        ended("agent_session", "revoked"),
    ),
    Case(
        "DELETE /users/{id}/sessions/{id}",
        "other_agent",
        "agent",
        lambda w: Call("DELETE", f"/users/{w.other_agent}/sessions/{w.other_session}"),
        403,
    ),
    Case(
        "DELETE /users/{id}/sessions/{id}",
        "superuser",
        "superuser",
        lambda w: Call("DELETE", f"/users/{w.agent}/sessions/{w.agent_session}"),
        204,
        ended("agent_session", "revoked", live=("superuser_session",)),
    ),
    Case(
        "DELETE /users/{id}/sessions/{id}",
        "superuser_on_someone_elses",
        "superuser",
        lambda w: Call("DELETE", f"/users/{w.agent}/sessions/{w.other_session}"),
        404,
        code="session_not_found",
    ),
    # /users/me: everyone's own account
    Case("GET /users/me", "agent", "agent", lambda w: Call("GET", "/users/me"), 200, reads_self),
    Case(
        "GET /users/me",
        "superuser",
        "superuser",
        lambda w: Call("GET", "/users/me"),
        200,
        reads_user("superuser"),
    ),
    Case(
        "PATCH /users/me",
        "agent",
        "agent",
        lambda w: Call("PATCH", "/users/me", {"full_name": "Renamed"}),
        200,
        renamed_self,
    ),
    Case(
        "PATCH /users/me",
        "agent_makes_self_superuser",
        "agent",
        lambda w: Call("PATCH", "/users/me", {"is_superuser": True}),
        422,
    ),
    Case(
        "PATCH /users/me",
        "superuser",
        "superuser",
        lambda w: Call("PATCH", "/users/me", {"full_name": "Renamed"}),
        200,
        superuser_renamed_self,
    ),
    # user management: superusers only, except reading your own account
    Case("GET /users", "agent", "agent", lambda w: Call("GET", "/users"), 403),
    Case(
        "GET /users",
        "superuser",
        "superuser",
        lambda w: Call("GET", "/users"),
        200,
        lists_all_users,
    ),
    Case("POST /users", "agent", "agent", lambda w: Call("POST", "/users", NEW_USER), 403),
    Case(
        "POST /users",
        "agent_creates_superuser",
        "agent",
        lambda w: Call("POST", "/users", {**NEW_USER, "is_superuser": True}),
        403,
    ),
    Case(
        "POST /users",
        "superuser",
        "superuser",
        lambda w: Call("POST", "/users", NEW_USER),
        201,
        created_user,
    ),
    Case(
        "GET /users/{id}",
        "agent",
        "agent",
        lambda w: Call("GET", f"/users/{w.agent}"),
        200,
        reads_self,
    ),
    Case(
        "GET /users/{id}",
        "other_agent",
        "agent",
        lambda w: Call("GET", f"/users/{w.other_agent}"),
        403,
    ),
    Case(
        "GET /users/{id}",
        "agent_on_missing_user",  # 403, not 404: agents cannot probe which ids exist
        "agent",
        lambda w: Call("GET", "/users/987654"),
        403,
    ),
    Case(
        "GET /users/{id}",
        "superuser",
        "superuser",
        lambda w: Call("GET", f"/users/{w.other_agent}"),
        200,
        reads_user("other_agent"),
    ),
    Case(
        "PATCH /users/{id}",
        "agent",  # not even on their own account: that would let them make themselves superuser
        "agent",
        lambda w: Call("PATCH", f"/users/{w.agent}", {"is_superuser": True}),
        403,
    ),
    Case(
        "PATCH /users/{id}",
        "other_agent",
        "agent",
        lambda w: Call("PATCH", f"/users/{w.other_agent}", {"is_active": False}),
        403,
    ),
    Case(
        "PATCH /users/{id}",
        "superuser",
        "superuser",
        lambda w: Call("PATCH", f"/users/{w.other_agent}", {"is_active": False}),
        200,
        deactivated_other_agent,
    ),
    # GET /leads: another agent's leads are simply not there
    Case("GET /leads", "agent", "agent", lambda w: Call("GET", "/leads"), 200, lists_own_leads),
    Case(
        "GET /leads",
        "agent_include_archived",
        "agent",
        lambda w: Call("GET", "/leads", params={"include_archived": "true"}),
        200,
        lists_own_leads_with_archived,
    ),
    Case(
        "GET /leads",
        "other_agent",
        "agent",
        lambda w: Call(
            "GET", "/leads", params={"assigned_to": w.other_agent, "include_archived": "true"}
        ),
        200,
        sees_nothing,
    ),
    Case(
        "GET /leads",
        "other_agent_searched_by_name",
        "agent",
        lambda w: Call("GET", "/leads", params={"search": "Globex"}),  # the other agent's lead
        200,
        sees_nothing,
    ),
    Case(
        "GET /leads",
        "superuser",
        "superuser",
        lambda w: Call("GET", "/leads"),
        200,
        lists_all_leads,
    ),
    Case(
        "GET /leads",
        "superuser_include_archived",
        "superuser",
        lambda w: Call("GET", "/leads", params={"include_archived": "true"}),
        200,
        lists_all_leads_with_archived,
    ),
    Case(
        "GET /leads",
        "superuser_on_other_agent",
        "superuser",
        lambda w: Call("GET", "/leads", params={"assigned_to": w.other_agent}),
        200,
        lists_other_agents_leads,
    ),
    # POST /leads: an agent's lead is theirs; only a superuser gives one to someone else
    Case(
        "POST /leads",
        "agent",
        "agent",
        lambda w: Call("POST", "/leads", NEW_LEAD),
        201,
        created_lead_for("agent"),
    ),
    Case(
        "POST /leads",
        "agent_assigns_self",
        "agent",
        lambda w: Call("POST", "/leads", {**NEW_LEAD, "assigned_to": w.agent}),
        201,
        created_lead_for("agent"),
    ),
    Case(
        "POST /leads",
        "other_agent",
        "agent",
        lambda w: Call("POST", "/leads", {**NEW_LEAD, "assigned_to": w.other_agent}),
        403,
    ),
    Case(
        "POST /leads",
        "superuser",
        "superuser",
        lambda w: Call("POST", "/leads", {**NEW_LEAD, "assigned_to": w.other_agent}),
        201,
        created_lead_for("other_agent"),
    ),
    # statistics: over the leads the caller may see
    Case(
        "GET /leads/statistics",
        "agent",
        "agent",
        lambda w: Call("GET", "/leads/statistics"),
        200,
        own_statistics,
    ),
    Case(
        "GET /leads/statistics",
        "superuser",
        "superuser",
        lambda w: Call("GET", "/leads/statistics"),
        200,
        all_statistics,
    ),
    # bulk status: all the agent's own, or nothing
    Case(
        "POST /leads/bulk/status",
        "agent",
        "agent",
        lambda w: Call(
            "POST", "/leads/bulk/status", {"lead_ids": [w.own, w.own2], "status": "QUALIFIED"}
        ),
        200,
        bulk_set_status("own", "own2"),
    ),
    Case(
        "POST /leads/bulk/status",
        "other_agent",
        "agent",
        lambda w: Call(
            "POST", "/leads/bulk/status", {"lead_ids": [w.own, w.other], "status": "QUALIFIED"}
        ),
        404,
    ),
    Case(
        "POST /leads/bulk/status",
        "unassigned_lead",
        "agent",
        lambda w: Call(
            "POST",
            "/leads/bulk/status",
            {"lead_ids": [w.own, w.unassigned], "status": "QUALIFIED"},
        ),
        404,
    ),
    Case(
        "POST /leads/bulk/status",
        "superuser",
        "superuser",
        lambda w: Call(
            "POST", "/leads/bulk/status", {"lead_ids": [w.own, w.other], "status": "QUALIFIED"}
        ),
        200,
        bulk_set_status("own", "other"),
    ),
    # bulk assign: superusers only, even for the agent's own leads
    Case(
        "POST /leads/bulk/assign",
        "agent",
        "agent",
        lambda w: Call(
            "POST",
            "/leads/bulk/assign",
            {"lead_ids": [w.own, w.own2], "agent_user_id": w.other_agent},
        ),
        403,
    ),
    Case(
        "POST /leads/bulk/assign",
        "other_agent",  # taking another agent's lead
        "agent",
        lambda w: Call(
            "POST", "/leads/bulk/assign", {"lead_ids": [w.own, w.other], "agent_user_id": w.agent}
        ),
        403,
    ),
    Case(
        "POST /leads/bulk/assign",
        "superuser",
        "superuser",
        lambda w: Call(
            "POST",
            "/leads/bulk/assign",
            {"lead_ids": [w.own, w.other], "agent_user_id": w.other_agent},
        ),
        200,
        bulk_assigned_to_other_agent,
    ),
    # bulk changes by filter: an agent's filter matches their own live leads only
    Case(
        "POST /leads/bulk/status?filter",
        "agent",
        "agent",
        lambda w: Call(
            "POST", "/leads/bulk/status", BY_FILTER | {"status": "QUALIFIED", "expected_count": 2}
        ),
        200,
        bulk_set_status("own", "own2"),
    ),
    Case(
        "POST /leads/bulk/status?filter",
        "other_agent",  # the count a superuser sees for the other agent's leads: 1
        "agent",
        lambda w: Call(
            "POST",
            "/leads/bulk/status",
            {"filter": {"assigned_to": w.other_agent}, "status": "QUALIFIED", "expected_count": 1},
        ),
        409,
        code="match_count_changed",
    ),
    Case(
        "POST /leads/bulk/status?filter",
        "superuser",
        "superuser",
        lambda w: Call(
            "POST", "/leads/bulk/status", BY_FILTER | {"status": "QUALIFIED", "expected_count": 4}
        ),
        200,
        bulk_set_status("own", "own2", "other", "unassigned"),
    ),
    Case(
        "POST /leads/bulk/status?dry_run",
        "agent",
        "agent",
        lambda w: Call(
            "POST", "/leads/bulk/status", BY_FILTER | {"status": "QUALIFIED", "dry_run": True}
        ),
        200,
        previews(2),
    ),
    Case(
        "POST /leads/bulk/status?dry_run",
        "other_agent",
        "agent",
        lambda w: Call(
            "POST",
            "/leads/bulk/status",
            {"filter": {"assigned_to": w.other_agent}, "status": "QUALIFIED", "dry_run": True},
        ),
        200,
        previews(0),
    ),
    Case(
        "POST /leads/bulk/status?dry_run",
        "superuser",
        "superuser",
        lambda w: Call(
            "POST", "/leads/bulk/status", BY_FILTER | {"status": "QUALIFIED", "dry_run": True}
        ),
        200,
        previews(4),
    ),
    Case(
        "POST /leads/bulk/assign?filter",
        "agent",
        "agent",
        lambda w: Call(
            "POST",
            "/leads/bulk/assign",
            BY_FILTER | {"agent_user_id": w.other_agent, "expected_count": 2},
        ),
        403,
    ),
    Case(
        "POST /leads/bulk/assign?filter",
        "other_agent",  # taking another agent's leads, even only counting them
        "agent",
        lambda w: Call(
            "POST",
            "/leads/bulk/assign",
            {"filter": {"assigned_to": w.other_agent}, "agent_user_id": w.agent, "dry_run": True},
        ),
        403,
    ),
    Case(
        "POST /leads/bulk/assign?filter",
        "superuser",
        "superuser",
        lambda w: Call(
            "POST",
            "/leads/bulk/assign",
            {
                "filter": {"assigned_to": w.agent},
                "agent_user_id": w.other_agent,
                "expected_count": 2,
            },
        ),
        200,
        bulk_assigned_own_to_other_agent,
    ),
    # rescoring: superusers only
    Case(
        "POST /leads/rescore", "agent", "agent", lambda w: Call("POST", "/leads/rescore", {}), 403
    ),
    Case(
        "POST /leads/rescore",
        "other_agent",
        "agent",
        lambda w: Call(
            "POST", "/leads/rescore", {"filter": {"assigned_to": w.other_agent}, "dry_run": True}
        ),
        403,
    ),
    Case(
        "POST /leads/rescore",
        "superuser",
        "superuser",
        lambda w: Call("POST", "/leads/rescore", {}),
        200,
        rescored(4),
    ),
    # one lead
    Case(
        "GET /leads/{id}",
        "agent",
        "agent",
        lambda w: Call("GET", f"/leads/{w.own}"),
        200,
        reads_lead("own"),
    ),
    Case(
        "GET /leads/{id}",
        "agent_archived",
        "agent",
        lambda w: Call("GET", f"/leads/{w.own_archived}"),
        200,
        reads_lead("own_archived"),
    ),
    Case(
        "GET /leads/{id}", "other_agent", "agent", lambda w: Call("GET", f"/leads/{w.other}"), 404
    ),
    Case(
        "GET /leads/{id}",
        "other_agent_archived",
        "agent",
        lambda w: Call("GET", f"/leads/{w.other_archived}"),
        404,
    ),
    Case(
        "GET /leads/{id}",
        "unassigned_lead",
        "agent",
        lambda w: Call("GET", f"/leads/{w.unassigned}"),
        404,
    ),
    Case(
        "GET /leads/{id}",
        "superuser",
        "superuser",
        lambda w: Call("GET", f"/leads/{w.other}"),
        200,
        reads_lead("other"),
    ),
    Case(
        "PATCH /leads/{id}",
        "agent",
        "agent",
        lambda w: Call("PATCH", f"/leads/{w.own}", QUALIFY),
        200,
        qualified("own"),
    ),
    Case(
        "PATCH /leads/{id}",
        "agent_gives_lead_away",
        "agent",
        lambda w: Call("PATCH", f"/leads/{w.own}", {"assigned_to": w.other_agent}),
        403,
    ),
    Case(
        "PATCH /leads/{id}",
        "other_agent",
        "agent",
        lambda w: Call("PATCH", f"/leads/{w.other}", QUALIFY),
        404,
    ),
    Case(
        "PATCH /leads/{id}",
        "other_agent_takes_lead",
        "agent",
        lambda w: Call("PATCH", f"/leads/{w.other}", {"assigned_to": w.agent}),
        404,
    ),
    Case(
        "PATCH /leads/{id}",
        "unassigned_lead",
        "agent",
        lambda w: Call("PATCH", f"/leads/{w.unassigned}", {"assigned_to": w.agent}),
        404,
    ),
    Case(
        "PATCH /leads/{id}",
        "superuser",
        "superuser",
        lambda w: Call("PATCH", f"/leads/{w.other}", QUALIFY),
        200,
        qualified("other"),
    ),
    Case(
        "DELETE /leads/{id}",
        "agent",
        "agent",
        lambda w: Call("DELETE", f"/leads/{w.own}"),
        204,
        archived("own"),
    ),
    Case(
        "DELETE /leads/{id}",
        "other_agent",
        "agent",
        lambda w: Call("DELETE", f"/leads/{w.other}"),
        404,
    ),
    Case(
        "DELETE /leads/{id}",
        "superuser",
        "superuser",
        lambda w: Call("DELETE", f"/leads/{w.other}"),
        204,
        archived("other"),
    ),
    Case(
        "DELETE /leads/{id}?hard_delete=true",
        "agent",  # their own lead, but removing rows is for superusers
        "agent",
        lambda w: Call("DELETE", f"/leads/{w.own}", params={"hard_delete": "true"}),
        403,
    ),
    Case(
        "DELETE /leads/{id}?hard_delete=true",
        "other_agent",
        "agent",
        lambda w: Call("DELETE", f"/leads/{w.other}", params={"hard_delete": "true"}),
        404,
    ),
    Case(
        "DELETE /leads/{id}?hard_delete=true",
        "superuser",
        "superuser",
        lambda w: Call("DELETE", f"/leads/{w.other}", params={"hard_delete": "true"}),
        204,
        gone("other"),
    ),
    Case(
        "POST /leads/{id}/restore",
        "agent",
        "agent",
        lambda w: Call("POST", f"/leads/{w.own_archived}/restore"),
        200,
        restored("own_archived"),
    ),
    Case(
        "POST /leads/{id}/restore",
        "other_agent",
        "agent",
        lambda w: Call("POST", f"/leads/{w.other_archived}/restore"),
        404,
    ),
    Case(
        "POST /leads/{id}/restore",
        "superuser",
        "superuser",
        lambda w: Call("POST", f"/leads/{w.other_archived}/restore"),
        200,
        restored("other_archived"),
    ),
    Case(
        "POST /leads/{id}/notes",
        "agent",
        "agent",
        lambda w: Call("POST", f"/leads/{w.own}/notes", {"text": "Hi."}),
        200,
        noted("own"),
    ),
    Case(
        "POST /leads/{id}/notes",
        "other_agent",
        "agent",
        lambda w: Call("POST", f"/leads/{w.other}/notes", {"text": "Hi."}),
        404,
    ),
    Case(
        "POST /leads/{id}/notes",
        "superuser",
        "superuser",
        lambda w: Call("POST", f"/leads/{w.other}/notes", {"text": "Hi."}),
        200,
        noted("other"),
    ),
    Case(
        "POST /leads/{id}/calls",
        "agent",
        "agent",
        lambda w: Call("POST", f"/leads/{w.own}/calls", {"note": "Busy."}),
        200,
        called("own"),
    ),
    Case(
        "POST /leads/{id}/calls",
        "agent_without_body",
        "agent",
        lambda w: Call("POST", f"/leads/{w.own}/calls"),
        200,
        called("own"),
    ),
    Case(
        "POST /leads/{id}/calls",
        "other_agent",
        "agent",
        lambda w: Call("POST", f"/leads/{w.other}/calls", {"note": "Busy."}),
        404,
    ),
    Case(
        "POST /leads/{id}/calls",
        "superuser",
        "superuser",
        lambda w: Call("POST", f"/leads/{w.other}/calls", {"note": "Busy."}),
        200,
        called("other"),
    ),
    Case(
        "GET /leads/{id}/history",
        "agent",
        "agent",
        lambda w: Call("GET", f"/leads/{w.own}/history"),
        200,
        history_of("own"),
    ),
    Case(
        "GET /leads/{id}/history",
        "other_agent",
        "agent",
        lambda w: Call("GET", f"/leads/{w.other}/history"),
        404,
    ),
    Case(
        "GET /leads/{id}/history",
        "superuser",
        "superuser",
        lambda w: Call("GET", f"/leads/{w.other}/history"),
        200,
        history_of("other"),
    ),
    Case(
        "POST /leads/{id}/merge",
        "agent",
        "agent",
        lambda w: Call("POST", f"/leads/{w.own}/merge", {"merge_ids": [w.own2]}),
        200,
        merged("own", "own2"),
    ),
    Case(
        "POST /leads/{id}/merge",
        "other_agent",
        "agent",
        lambda w: Call("POST", f"/leads/{w.own}/merge", {"merge_ids": [w.other]}),
        404,
    ),
    Case(
        "POST /leads/{id}/merge",
        "superuser",
        "superuser",
        lambda w: Call("POST", f"/leads/{w.other}/merge", {"merge_ids": [w.own, w.unassigned]}),
        200,
        merged("other", "own", "unassigned"),
    ),
    Case(
        "POST /leads/{id}/unmerge",
        "agent",
        "agent",
        lambda w: Call("POST", f"/leads/{w.own}/unmerge"),
        200,
        unmerged,
        setup=merged_into("own", "agent"),
    ),
    Case(
        "POST /leads/{id}/unmerge",
        "other_agent",
        "agent",
        lambda w: Call("POST", f"/leads/{w.other}/unmerge"),
        404,
        setup=merged_into("other", "other_agent"),
    ),
    Case(
        "POST /leads/{id}/unmerge",
        "superuser",
        "superuser",
        lambda w: Call("POST", f"/leads/{w.other}/unmerge"),
        200,
        unmerged,
        setup=merged_into("other", "other_agent"),
    ),
    Case(
        "GET /leads/{id}/score",
        "agent",
        "agent",
        lambda w: Call("GET", f"/leads/{w.own}/score"),
        200,
        explains_score("own"),
    ),
    Case(
        "GET /leads/{id}/score",
        "other_agent",
        "agent",
        lambda w: Call("GET", f"/leads/{w.other}/score"),
        404,
    ),
    Case(
        "GET /leads/{id}/score",
        "superuser",
        "superuser",
        lambda w: Call("GET", f"/leads/{w.other}/score"),
        200,
        explains_score("other"),
    ),
    Case(
        "GET /leads/{id}/duplicates",
        "agent",
        "agent",
        lambda w: Call("GET", f"/leads/{w.own}/duplicates"),
        200,
        candidates("own2"),  # not the unassigned lead the superuser is shown
    ),
    Case(
        "GET /leads/{id}/duplicates",
        "other_agent",
        "agent",
        lambda w: Call("GET", f"/leads/{w.other}/duplicates"),
        404,
    ),
    Case(
        "GET /leads/{id}/duplicates",
        "superuser",
        "superuser",
        lambda w: Call("GET", f"/leads/{w.own}/duplicates"),
        200,
        candidates("own2", "unassigned"),
    ),
    Case(
        "GET /leads/{id}/history/status",
        "agent",
        "agent",
        lambda w: Call("GET", f"/leads/{w.own}/history/status"),
        200,
        history_of("own"),
    ),
    Case(
        "GET /leads/{id}/history/status",
        "other_agent",
        "agent",
        lambda w: Call("GET", f"/leads/{w.other}/history/status"),
        404,
    ),
    Case(
        "GET /leads/{id}/history/status",
        "superuser",
        "superuser",
        lambda w: Call("GET", f"/leads/{w.other}/history/status"),
        200,
        history_of("other"),
    ),
    # The import: an agent's rows become the agent's leads
    Case("POST /leads/import", "agent", "agent", IMPORT_CALL, 200, imported_for("agent")),
    Case("POST /leads/import", "superuser", "superuser", IMPORT_CALL, 200, imported_for(None)),
    # An import: whoever sent it, or a superuser
    Case("GET /imports/{id}", "agent", "agent", ENDPOINTS["GET /imports/{id}"], 200),
    Case(
        "GET /imports/{id}",
        "other_agent",
        "agent",
        lambda w: Call("GET", f"/imports/{w.other_import}"),
        404,
        code="import_not_found",
    ),
    Case("GET /imports/{id}", "superuser", "superuser", ENDPOINTS["GET /imports/{id}"], 200),
    # The export: an agent's own leads; a superuser's, everyone's
    Case("GET /leads/export", "agent", "agent", EXPORT_CALL, 200, exports("own", "own2")),
    Case(
        "GET /leads/export",
        "superuser",
        "superuser",
        EXPORT_CALL,
        200,
        exports("own", "own2", "other", "unassigned"),
    ),
    # The live stream: everyone signed in, each seeing their own share (test_event_stream.py)
    *[
        Case("GET /events/stream?follow=false", caller, caller, STREAM_CALL, 200, streams)
        for caller in ("agent", "superuser")
    ],
    # Assignment rules and capture forms: superusers only
    *[Case(endpoint, "agent", "agent", call, 403) for endpoint, call in CAPTURE_ENDPOINTS.items()],
    *[
        Case(endpoint, "superuser", "superuser", call, status)
        for endpoint, call, status in (
            (endpoint, call, 201 if endpoint.startswith("POST /") and "{" not in endpoint else 200)
            for endpoint, call in CAPTURE_ENDPOINTS.items()
        )
        if not endpoint.startswith("DELETE")
    ],
    *[
        Case(endpoint, "superuser", "superuser", CAPTURE_ENDPOINTS[endpoint], 204, check)
        for endpoint, check in (
            ("DELETE /assignment-rules/{id}", rule_gone),
            ("DELETE /capture-forms/{id}", form_gone),
        )
    ],
    # A lead assigned by a rule: superusers only
    Case("POST /leads", "agent", "agent", LEAD_BY_RULE, 403),
    Case("POST /leads", "superuser", "superuser", LEAD_BY_RULE, 201, assigned_by_rule),
    # Webhooks: superusers only
    *[Case(endpoint, "agent", "agent", call, 403) for endpoint, call in WEBHOOK_ENDPOINTS.items()],
    *[
        Case(endpoint, "superuser", "superuser", call, status, check)
        for endpoint, call, status, check in (
            ("POST /webhooks", WEBHOOK_ENDPOINTS["POST /webhooks"], 201, webhook_made),
            ("GET /webhooks", WEBHOOK_ENDPOINTS["GET /webhooks"], 200, lists_webhook),
            ("GET /webhooks/{id}", WEBHOOK_ENDPOINTS["GET /webhooks/{id}"], 200, reads_webhook),
            ("PATCH /webhooks/{id}", WEBHOOK_ENDPOINTS["PATCH /webhooks/{id}"], 200, None),
            ("DELETE /webhooks/{id}", WEBHOOK_ENDPOINTS["DELETE /webhooks/{id}"], 204, None),
            (
                "POST /webhooks/{id}/rotate-secret",
                WEBHOOK_ENDPOINTS["POST /webhooks/{id}/rotate-secret"],
                200,
                None,
            ),
            ("POST /webhooks/{id}/test", WEBHOOK_ENDPOINTS["POST /webhooks/{id}/test"], 202, None),
            (
                "GET /webhooks/{id}/deliveries",
                WEBHOOK_ENDPOINTS["GET /webhooks/{id}/deliveries"],
                200,
                lists_delivery,
            ),
            (
                "POST /webhooks/{id}/deliveries/{id}/retry",
                WEBHOOK_ENDPOINTS["POST /webhooks/{id}/deliveries/{id}/retry"],
                202,
                None,
            ),
        )
    ],
]

ERROR_CODES = {403: "permission_denied", 404: "lead_not_found", 422: "validation_error"}


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in CASES])
async def test_authenticated_callers(
    client: httpx.AsyncClient, db: AsyncSession, world: World, settings: Settings, case: Case
) -> None:
    headers = bearer(token_for(getattr(world, case.acting), settings))
    if case.setup is not None:
        await case.setup(db, world)
    before = await snapshot(db)

    response = await send(client, case.call(world), headers)

    assert response.status_code == case.status, response.text
    if case.status >= 400:
        assert response.json()["code"] == (case.code or ERROR_CODES[case.status])
        assert await snapshot(db) == before
    elif case.status == 204:
        assert response.content == b""
    if case.check is not None:
        await case.check(db, world, response)


# --- table 3: the agent's API keys ----------------------------------------------------------
#
# Each agent row again, sent with the agent's `read` key and with their `write` key: what the
# agent's token gets, but a read key's writes get 403, and so does every key on what only a
# person who logged in may do (keys, sessions, logging out).

KEY_FORBIDDEN = {
    "POST /auth/logout",
    "GET /auth/sessions",
    "DELETE /auth/sessions/{id}",
    "GET /users/{id}/sessions",
    "DELETE /users/{id}/sessions/{id}",
    "POST /api-keys",
    "GET /api-keys",
    "GET /api-keys/{id}",
    "DELETE /api-keys/{id}",
}


def key_status(case: Case, scope: str) -> int:
    if case.endpoint in KEY_FORBIDDEN:
        return 403
    if scope == "read" and not case.endpoint.startswith("GET "):
        return 403
    return case.status


KEY_CASES = [
    pytest.param(case, scope, id=f"{case.endpoint}-{case.caller}-{scope}_key")
    for case in CASES
    if case.acting == "agent"
    for scope in ("read", "write")
]


@pytest.mark.parametrize(("case", "scope"), KEY_CASES)
async def test_api_key_callers(
    client: httpx.AsyncClient, db: AsyncSession, world: World, case: Case, scope: str
) -> None:
    key = world.agent_read_key if scope == "read" else world.agent_write_key
    if case.setup is not None:
        await case.setup(db, world)
    before = await snapshot(db)

    response = await send(client, case.call(world), bearer(key))

    expected = key_status(case, scope)
    assert response.status_code == expected, response.text
    if expected >= 400:
        code = "permission_denied" if expected != case.status else case.code
        assert response.json()["code"] == (code or ERROR_CODES[expected])
        assert await snapshot(db) == before
    elif case.check is not None:
        await case.check(db, world, response)


def test_every_endpoint_is_in_both_tables(app: Any) -> None:
    """A new route must get rows here: the tables cover every operation the API serves."""
    served = {
        f"{method.upper()} {re.sub(r'{[^}]+}', '{id}', path.removeprefix(API))}"
        for path, operations in app.openapi()["paths"].items()
        if path.startswith(API)
        for method in operations
    }
    # tests/test_sessions.py; the capture endpoint takes no login: tests/test_lead_capture.py
    public = {"POST /auth/token", "POST /auth/refresh", "POST /capture/{id}"}
    tabled = {name.split("?")[0] for name in ENDPOINTS} | public
    assert served == tabled
    with_agent_rows = {c.endpoint for c in CASES if c.acting == "agent"}
    with_superuser_rows = {c.endpoint for c in CASES if c.acting == "superuser"}
    assert with_agent_rows == with_superuser_rows == set(ENDPOINTS)


@pytest.mark.parametrize("sub", ["0", "-1", str(2**31), str(2**40)])
async def test_token_naming_an_impossible_user_id_gets_401(
    client: httpx.AsyncClient, db: AsyncSession, world: World, settings: Settings, sub: str
) -> None:
    """Correctly signed, but no user can have this id (ids are positive 32-bit integers)."""
    token = sign({**claims(world.agent), "sub": sub}, secret(settings))

    response = await client.get(f"{API}/users/me", headers=bearer(token))

    assert response.status_code == 401, response.text
    assert response.json()["code"] == "not_authenticated"
    assert response.headers["WWW-Authenticate"] == "Bearer"


# --- logging in, and accounts changing under a live token -----------------------------------


async def login(client: httpx.AsyncClient, email: str, password: str) -> httpx.Response:
    return await client.post(f"{API}/auth/token", data={"username": email, "password": password})


async def test_login_with_an_inactive_users_credentials_gets_401(
    client: httpx.AsyncClient, db: AsyncSession, world: World
) -> None:
    works = await login(client, world.agent_email, PASSWORD)
    assert works.status_code == 200, works.text
    me = await client.get(f"{API}/users/me", headers=bearer(works.json()["access_token"]))
    assert me.json()["id"] == world.agent

    wrong_password = await login(client, world.agent_email, "not the password")
    inactive = await login(client, world.inactive_email, PASSWORD)

    assert wrong_password.status_code == 401
    assert inactive.status_code == 401, inactive.text
    assert inactive.json()["code"] == "not_authenticated"
    assert inactive.headers["WWW-Authenticate"] == "Bearer"
    assert inactive.json() == wrong_password.json()  # no hint that the password was right
    assert "access_token" not in inactive.json()


async def test_user_deactivated_after_token_was_issued_is_locked_out_at_once(
    client: httpx.AsyncClient, db: AsyncSession, world: World, settings: Settings
) -> None:
    agent = bearer(token_for(world.agent, settings))
    boss = bearer(token_for(world.superuser, settings))
    assert (await client.get(f"{API}/leads/{world.own}", headers=agent)).status_code == 200

    off = await client.patch(f"{API}/users/{world.agent}", json={"is_active": False}, headers=boss)
    assert off.status_code == 200, off.text

    before = await snapshot(db)
    for call in (
        Call("GET", "/users/me"),
        Call("GET", f"/leads/{world.own}"),
        Call("PATCH", f"/leads/{world.own}", QUALIFY),
        Call("POST", f"/leads/{world.own}/notes", {"text": "Still here?"}),
    ):
        response = await send(client, call, agent)
        assert response.status_code == 401, (call, response.text)
        assert response.json()["code"] == "not_authenticated"
        assert response.headers["WWW-Authenticate"] == "Bearer"
    assert await snapshot(db) == before
    assert (await login(client, world.agent_email, PASSWORD)).status_code == 401

    # Reactivation does not revive tokens issued before the deactivation: logging in again does.
    on = await client.patch(f"{API}/users/{world.agent}", json={"is_active": True}, headers=boss)
    assert on.status_code == 200, on.text
    assert (await client.get(f"{API}/leads/{world.own}", headers=agent)).status_code == 401
    again = await login(client, world.agent_email, PASSWORD)
    fresh = bearer(again.json()["access_token"])
    assert (await client.get(f"{API}/leads/{world.own}", headers=fresh)).status_code == 200


async def test_superuser_demoted_after_token_was_issued_loses_powers_at_once(
    client: httpx.AsyncClient, db: AsyncSession, world: World, settings: Settings, make_user: Any
) -> None:
    second_id = (await make_user(superuser=True)).id
    second = bearer(token_for(second_id, settings))
    boss = bearer(token_for(world.superuser, settings))
    assert (await client.get(f"{API}/leads/{world.other}", headers=second)).status_code == 200

    demoted = await client.patch(
        f"{API}/users/{second_id}", json={"is_superuser": False}, headers=boss
    )
    assert demoted.status_code == 200, demoted.text

    before = await snapshot(db)
    for call, status in (
        (Call("GET", "/users"), 403),
        (Call("GET", f"/leads/{world.other}"), 404),  # an agent now: not theirs, not there
        (Call("DELETE", f"/leads/{world.other}", params={"hard_delete": "true"}), 404),
        (
            Call("POST", "/leads/bulk/assign", {"lead_ids": [world.other], "agent_user_id": 1}),
            403,
        ),
    ):
        response = await send(client, call, second)
        assert response.status_code == status, (call, response.text)
        assert response.json()["code"] == ERROR_CODES[status]
    assert await snapshot(db) == before
    listed = await client.get(f"{API}/leads", headers=second)
    assert listed.json()["total"] == 0


# --- an agent cannot tell another agent's lead from a lead that does not exist ----------------

MISSING_LEAD = 8_765_431
LEAD_ID_CALLS: dict[str, Callable[[World, int], Call]] = {
    "GET /leads/{id}": lambda w, i: Call("GET", f"/leads/{i}"),
    "GET /leads/{id}/history": lambda w, i: Call("GET", f"/leads/{i}/history"),
    "GET /leads/{id}/history/status": lambda w, i: Call("GET", f"/leads/{i}/history/status"),
    "PATCH /leads/{id}": lambda w, i: Call("PATCH", f"/leads/{i}", QUALIFY),
    "PATCH /leads/{id} taking it": lambda w, i: Call(
        "PATCH", f"/leads/{i}", {"assigned_to": w.agent}
    ),
    "DELETE /leads/{id}": lambda w, i: Call("DELETE", f"/leads/{i}"),
    "DELETE /leads/{id}?hard_delete=true": lambda w, i: Call(
        "DELETE", f"/leads/{i}", params={"hard_delete": "true"}
    ),
    "POST /leads/{id}/restore": lambda w, i: Call("POST", f"/leads/{i}/restore"),
    "POST /leads/{id}/notes": lambda w, i: Call("POST", f"/leads/{i}/notes", {"text": "Hi."}),
    "POST /leads/{id}/calls": lambda w, i: Call("POST", f"/leads/{i}/calls", {"note": "Busy."}),
    "POST /leads/bulk/status": lambda w, i: Call(
        "POST", "/leads/bulk/status", {"lead_ids": [w.own, i], "status": "QUALIFIED"}
    ),
    "POST /leads/bulk/assign": lambda w, i: Call(
        "POST", "/leads/bulk/assign", {"lead_ids": [w.own, i], "agent_user_id": w.agent}
    ),
}


@pytest.mark.parametrize("whose", ["other", "other_archived", "unassigned"])
@pytest.mark.parametrize("endpoint", list(LEAD_ID_CALLS))
async def test_an_agent_gets_the_same_answer_for_another_agents_lead_as_for_a_missing_one(
    client: httpx.AsyncClient,
    db: AsyncSession,
    world: World,
    settings: Settings,
    endpoint: str,
    whose: str,
) -> None:
    """Whether an id exists is someone else's business: status and body are those a missing id
    gets (with the id in place), so an agent cannot map which ids are taken."""
    agent = bearer(token_for(world.agent, settings))
    unseen = getattr(world, whose)
    before = await snapshot(db)

    hidden = await send(client, LEAD_ID_CALLS[endpoint](world, unseen), agent)
    missing = await send(client, LEAD_ID_CALLS[endpoint](world, MISSING_LEAD), agent)

    assert hidden.status_code in (403, 404), hidden.text
    assert hidden.status_code == missing.status_code
    assert hidden.json() == json.loads(missing.text.replace(str(MISSING_LEAD), str(unseen)))
    assert await snapshot(db) == before
