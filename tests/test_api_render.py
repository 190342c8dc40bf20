"""The hand-written JSON of lead responses (app/api/render.py) says exactly what `LeadRead` and
`LeadPage` would: same fields, same values, same spelling of dates, money and enums. If the two
ever drift, the OpenAPI document would lie to clients, so every difference fails here."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import orjson
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from app.api.render import lead_response, page_response
from app.models import Lead, LeadStatus, User
from app.models.types import utcnow
from app.schemas.lead import LeadPage, LeadRead, lead_fields
from app.services import LeadService
from tests.helpers import LeadFactory

LEADS = "/api/v1/leads"


async def varied_leads(make_lead: LeadFactory, db: AsyncSession, agent: User) -> list[int]:
    """Leads covering every kind of value a field can hold: empty and set optionals, money with
    and without cents, fractions, many tags, accents, hot and cold, archived, contacted."""
    leads = [
        await make_lead(first_name="Ana", last_name="Ñúñez", email="ana@acme.com"),
        await make_lead(
            first_name="Émile",
            last_name="O'Brien",
            phone="+1 (555) 010-2030",
            email=None,
            company="Société Générale",
            job_title="CFO",
            source="REFERRAL",
            status="NEGOTIATION",
            owner=agent,
            lead_score=95,
            probability=0.1,
            estimated_value=Decimal("1234567890123.45"),
            tags=["vip", "enterprise", "q4"],
            notes="Met at the fair — wants a demo 🚀",
            call_attempts=7,
            last_contact_date=datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC),
            next_follow_up_date=datetime(2031, 12, 31, 23, 59, 59, tzinfo=UTC),
        ),
        await make_lead(lead_score=85, status="WON", estimated_value=Decimal("10"), probability=1),
        await make_lead(lead_score=0, probability=0.0, estimated_value=Decimal("0.05")),
    ]
    ids = [lead.id for lead in leads]
    archived = await make_lead(lead_score=90)
    archived_id = archived.id
    await LeadService.delete_lead(db, archived_id, user_id=archived.created_by)
    # A lead created long ago, so the day counts are not all zero.
    await db.execute(
        update(Lead)
        .where(Lead.id == ids[0])
        .values(created_at=utcnow() - timedelta(days=400, hours=5))
    )
    await db.commit()
    return [*ids, archived_id]


def pydantic_json(lead: Any) -> dict[str, Any]:
    return orjson.loads(LeadRead.model_validate(lead).model_dump_json())


async def test_lead_json_equals_lead_read_for_orm_objects(
    db: AsyncSession, make_lead: LeadFactory, agent: User, superuser: User
) -> None:
    for lead_id in await varied_leads(make_lead, db, agent):
        lead = await LeadService.get_lead_by_id(db, lead_id)
        assert orjson.loads(lead_response(lead).body) == pydantic_json(lead), lead_id


async def test_lead_json_equals_lead_read_for_rows_from_list_leads(
    db: AsyncSession, make_lead: LeadFactory, agent: User, superuser: User
) -> None:
    ids = await varied_leads(make_lead, db, agent)
    page = await LeadService.list_leads(db, include_archived=True, user_id=superuser.id)
    assert sorted(row.id for row in page.items) == sorted(ids)
    for row in page.items:
        lead = await LeadService.get_lead_by_id(db, row.id)
        assert orjson.loads(lead_response(row).body) == pydantic_json(lead), row.id


async def test_derived_fields_follow_the_model(
    db: AsyncSession, make_lead: LeadFactory, agent: User, superuser: User
) -> None:
    for lead_id in await varied_leads(make_lead, db, agent):
        lead = await LeadService.get_lead_by_id(db, lead_id)
        fields = lead_fields(lead, utcnow())
        assert fields["is_hot_lead"] == lead.is_hot_lead
        assert fields["days_since_created"] == lead.days_since_created
        assert fields["days_since_last_contact"] == lead.days_since_last_contact


def test_page_json_validates_as_lead_page_and_keeps_every_field() -> None:
    body = orjson.loads(
        page_response(
            [], total=10_000, total_is_exact=False, skip=0, limit=50, next_cursor="abc"
        ).body
    )
    assert LeadPage.model_validate(body).model_dump(mode="json") == body
    assert set(body) == set(LeadPage.model_fields)


async def test_list_response_over_http_is_a_valid_lead_page_equal_to_lead_read(
    client: httpx.AsyncClient,
    db: AsyncSession,
    make_lead: LeadFactory,
    agent: User,
    superuser: User,
    auth_headers: Any,
) -> None:
    ids = await varied_leads(make_lead, db, agent)
    response = await client.get(
        LEADS, params={"include_archived": "true"}, headers=auth_headers(superuser)
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert LeadPage.model_validate(body).model_dump(mode="json") == body
    for item in body["items"]:
        lead = await LeadService.get_lead_by_id(db, item["id"])
        assert item == pydantic_json(lead)
    assert sorted(item["id"] for item in body["items"]) == sorted(ids)


async def test_status_enum_goes_out_as_its_value(
    db: AsyncSession, make_lead: LeadFactory, superuser: User
) -> None:
    lead = await make_lead(status=LeadStatus.PROPOSAL)
    assert orjson.loads(lead_response(lead).body)["status"] == "PROPOSAL"
