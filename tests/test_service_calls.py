"""The services' calling convention: the session is the first argument, `db`, given positionally
or as `db=` (the reference design's examples use the keyword), for every public method of
LeadService and UserService; and `get_leads`, the reference's call, takes exactly the filters and
paging `LeadFilters` and `LeadPaging` declare, with their defaults."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Lead, User
from app.schemas.filters import LeadFilters, LeadPaging
from app.services import LeadService
from app.services.user_service import UserService
from tests.helpers import PASSWORD, LeadFactory

Call = Callable[[dict[str, Any]], Awaitable[Any]]


def public_methods(service: type) -> set[str]:
    return {name for name in vars(service) if not name.startswith("_")}


NEW_ONE = LeadFilters(search="kw@acme.com")  # the lead create_lead makes in the table


def keyword_calls(
    agent: User, superuser: User, lead: Lead, other: Lead
) -> dict[tuple[type, str], dict[str, Any]]:
    """One call of every public method, all arguments as keywords (the session added later)."""
    return {
        (LeadService, "get_leads"): {"status": "NEW", "user_id": agent.id},
        (LeadService, "list_leads"): {"limit": 5, "user_id": agent.id},
        (LeadService, "get_lead_by_id"): {"lead_id": lead.id, "user_id": agent.id},
        (LeadService, "get_lead_statistics"): {"user_id": agent.id},
        (LeadService, "create_lead"): {
            "lead_data": {"first_name": "K", "last_name": "W", "email": "kw@acme.com"},
            "user_id": agent.id,
        },
        (LeadService, "update_lead"): {
            "lead_id": lead.id,
            "lead_data": {"status": "CONTACTED"},
            "user_id": agent.id,
        },
        (LeadService, "add_lead_note"): {"lead_id": lead.id, "text": "hi", "user_id": agent.id},
        (LeadService, "record_call_attempt"): {"lead_id": lead.id, "user_id": agent.id},
        (LeadService, "bulk_update_status"): {
            "lead_ids": [lead.id],
            "new_status": "QUALIFIED",
            "user_id": agent.id,
        },
        (LeadService, "assign_leads"): {
            "lead_ids": [other.id],
            "agent_user_id": agent.id,
            "assigned_by_user_id": superuser.id,
        },
        (LeadService, "count_bulk_matches"): {"filters": LeadFilters(), "user_id": agent.id},
        (LeadService, "bulk_update_status_by_filter"): {
            "filters": NEW_ONE,
            "new_status": "WON",
            "user_id": agent.id,
            "expected_count": 1,
        },
        (LeadService, "assign_leads_by_filter"): {
            "filters": NEW_ONE,
            "agent_user_id": agent.id,
            "assigned_by_user_id": superuser.id,
            "expected_count": 1,
        },
        (LeadService, "delete_lead"): {"lead_id": other.id, "user_id": superuser.id},
        (LeadService, "restore_lead"): {"lead_id": other.id, "user_id": superuser.id},
        (UserService, "authenticate"): {"email": agent.email, "password": PASSWORD},
        (UserService, "get_user"): {"user_id": agent.id, "acting_user_id": agent.id},
        (UserService, "list_users"): {"acting_user_id": superuser.id},
        (UserService, "create_user"): {
            "user_data": {"email": "new@crm.example.com", "full_name": "N", "password": PASSWORD},
            "acting_user_id": superuser.id,
        },
        (UserService, "update_user"): {
            "user_id": agent.id,
            "user_data": {"full_name": "Renamed"},
            "acting_user_id": superuser.id,
        },
        (UserService, "update_me"): {"user_id": agent.id, "user_data": {"full_name": "Me"}},
        (UserService, "ensure_superuser"): {"email": "first@crm.example.com", "password": PASSWORD},
    }


@pytest.fixture
async def calls(
    make_lead: LeadFactory, agent: User, superuser: User
) -> dict[tuple[type, str], dict[str, Any]]:
    lead = await make_lead(owner=agent)
    other = await make_lead()
    return keyword_calls(agent, superuser, lead, other)


def test_every_public_method_has_the_session_first_named_db() -> None:
    for service in (LeadService, UserService):
        for name in public_methods(service):
            first = next(iter(inspect.signature(getattr(service, name)).parameters))
            assert first == "db", (service.__name__, name)


async def test_the_table_calls_every_public_method(
    calls: dict[tuple[type, str], dict[str, Any]],
) -> None:
    for service in (LeadService, UserService):
        assert {name for s, name in calls if s is service} == public_methods(service)


async def test_every_public_method_takes_the_session_as_db_keyword(
    db: AsyncSession, calls: dict[tuple[type, str], dict[str, Any]]
) -> None:
    for (service, name), arguments in calls.items():
        await getattr(service, name)(db=db, **arguments)


async def test_every_public_method_takes_the_session_positionally(
    db: AsyncSession, calls: dict[tuple[type, str], dict[str, Any]]
) -> None:
    for (service, name), arguments in calls.items():
        await getattr(service, name)(db, **arguments)


async def test_a_call_without_the_session_says_what_is_missing() -> None:
    with pytest.raises(TypeError, match="session"):
        await LeadService.get_lead_statistics()


def test_get_leads_takes_exactly_the_declared_filters_and_paging() -> None:
    parameters = inspect.signature(LeadService.get_leads).parameters
    declared = {**LeadFilters.model_fields, **LeadPaging.model_fields}
    assert set(parameters) - {"db", "user_id"} == set(declared)
    for name, field in declared.items():
        assert parameters[name].default == field.default, name
