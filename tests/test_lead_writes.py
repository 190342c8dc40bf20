"""LeadService's write side: create, update, delete/restore, notes and call attempts, and the
single-lead read with its permission check.

Every "changes nothing" check re-reads the row from the database after the failed call.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import inspect, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Lead, LeadSource, LeadStatus, User
from app.services import LeadService
from app.services.exceptions import (
    ConflictException,
    InactiveUserException,
    LeadNotFoundException,
    PermissionDeniedException,
    UserNotFoundException,
    ValidationException,
)
from tests.helpers import LeadFactory, count_rows, stamp

NO_SUCH_ID = 987_654
FREE_MAIL = "pat@gmail.com"
BUSINESS_MAIL = "pat@acme-industries.com"


# ---------------------------------------------------------------------------------- helpers


def note(at: datetime, user: User, text: str) -> str:
    """One history line exactly as the service must write it."""
    return f"{stamp(at)} user {user.id}: {text}"


def note_lines(lead: Lead) -> list[str]:
    return (lead.notes or "").split("\n")


def error_fields(exc: ValidationException) -> set[str]:
    return {error["loc"][0] for error in exc.errors}


def id_of(lead: Lead | int) -> int:
    """A lead's id without touching its (possibly expired, after a failed call) attributes."""
    if isinstance(lead, int):
        return lead
    identity = inspect(lead).identity
    assert identity is not None
    return int(identity[0])


async def reload(db: AsyncSession, lead: Lead | int) -> Lead:
    """The lead as stored, whatever the session had in memory."""
    lead_id = id_of(lead)
    found = await db.scalar(
        select(Lead).where(Lead.id == lead_id).execution_options(populate_existing=True)
    )
    assert found is not None, f"lead {lead_id} is gone"
    return found


def snapshot(lead: Lead) -> dict[str, Any]:
    return {c.key: getattr(lead, c.key) for c in Lead.__mapper__.column_attrs}


async def stored(db: AsyncSession, lead: Lead | int) -> dict[str, Any]:
    return snapshot(await reload(db, lead))


async def deactivate(db: AsyncSession, user: User) -> None:
    user.is_active = False
    await db.commit()


def person(**fields: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"first_name": "Pat", "last_name": "Doe", "email": FREE_MAIL}
    data.update(fields)
    return data


@pytest.fixture
async def lead(make_lead: LeadFactory, agent: User) -> Lead:
    """An auto-scored lead (OTHER source, free mail: score 50) assigned to `agent`."""
    created = await make_lead(owner=agent, first_name="Pat", last_name="Doe", email=FREE_MAIL)
    assert (created.lead_score, created.score_is_manual) == (50, False)
    return created


@pytest.fixture
async def archived_lead(db: AsyncSession, lead: Lead, superuser: User) -> Lead:
    archived = await LeadService.delete_lead(db, lead.id, user_id=superuser.id)
    assert archived is not None
    return archived


# ============================================================================== create_lead


async def test_create_scores_the_lead_when_no_score_is_given(
    db: AsyncSession, superuser: User
) -> None:
    created = await LeadService.create_lead(
        db, person(source="WEBSITE", company="Acme", email=BUSINESS_MAIL), user_id=superuser.id
    )
    saved = await reload(db, created)
    assert (saved.lead_score, saved.score_is_manual) == (85, False)


async def test_create_with_a_score_keeps_it_and_marks_it_manual(
    db: AsyncSession, superuser: User
) -> None:
    created = await LeadService.create_lead(
        db, person(source="REFERRAL", lead_score=33), user_id=superuser.id
    )
    saved = await reload(db, created)
    assert (saved.lead_score, saved.score_is_manual) == (33, True)


async def test_create_with_a_score_of_zero_keeps_it_as_a_manual_score(
    db: AsyncSession, superuser: User
) -> None:
    created = await LeadService.create_lead(
        db, person(source="REFERRAL", lead_score=0), user_id=superuser.id
    )
    saved = await reload(db, created)
    assert (saved.lead_score, saved.score_is_manual) == (0, True)


async def test_create_with_a_score_of_none_scores_automatically(
    db: AsyncSession, superuser: User
) -> None:
    created = await LeadService.create_lead(
        db, person(source="REFERRAL", lead_score=None), user_id=superuser.id
    )
    saved = await reload(db, created)
    assert (saved.lead_score, saved.score_is_manual) == (70, False)


async def test_create_notes_the_creation_with_the_score(db: AsyncSession, superuser: User) -> None:
    created = await LeadService.create_lead(db, person(source="WEBSITE"), user_id=superuser.id)
    saved = await reload(db, created)
    assert saved.notes == note(saved.created_at, superuser, "Created (score 65)")
    assert re.fullmatch(
        r"\[\d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC\] "
        rf"user {superuser.id}: Created \(score 65\)",
        saved.notes,
    )


async def test_create_note_shows_a_manual_score(db: AsyncSession, superuser: User) -> None:
    created = await LeadService.create_lead(db, person(lead_score=12), user_id=superuser.id)
    saved = await reload(db, created)
    assert saved.notes == note(saved.created_at, superuser, "Created (score 12)")


async def test_create_keeps_given_notes_as_their_own_line(
    db: AsyncSession, superuser: User
) -> None:
    created = await LeadService.create_lead(
        db, person(notes="Met at the expo"), user_id=superuser.id
    )
    saved = await reload(db, created)
    assert sorted(note_lines(saved)) == sorted(
        [
            note(saved.created_at, superuser, "Created (score 50)"),
            note(saved.created_at, superuser, "Met at the expo"),
        ]
    )


async def test_create_records_creator_and_timestamps(db: AsyncSession, agent: User) -> None:
    before = datetime.now(UTC)
    created = await LeadService.create_lead(db, person(), user_id=agent.id)
    saved = await reload(db, created)
    assert saved.created_by == agent.id
    assert saved.created_at == saved.updated_at
    assert before <= saved.created_at <= datetime.now(UTC)
    assert (saved.status, saved.source, saved.call_attempts) == (
        LeadStatus.NEW,
        LeadSource.OTHER,
        0,
    )
    assert (saved.archived_at, saved.status_before_archive) == (None, None)


async def test_create_stores_normalised_values(db: AsyncSession, superuser: User) -> None:
    created = await LeadService.create_lead(
        db,
        person(
            first_name="  Pat ",
            last_name=" Doe  ",
            phone="+1 (555) 010-1234",
            tags=[" Hot", "hot", "COLD "],
            source="website",
        ),
        user_id=superuser.id,
    )
    saved = await reload(db, created)
    assert (saved.first_name, saved.last_name, saved.phone) == ("Pat", "Doe", "+15550101234")
    assert (saved.tags, saved.source) == (["hot", "cold"], LeadSource.WEBSITE)


async def test_an_agents_new_lead_is_assigned_to_the_agent(db: AsyncSession, agent: User) -> None:
    created = await LeadService.create_lead(db, person(), user_id=agent.id)
    assert created.assignee is not None
    assert created.assignee.id == agent.id
    assert (await reload(db, created)).assigned_to == agent.id


async def test_an_agent_may_name_themselves_as_assignee(db: AsyncSession, agent: User) -> None:
    created = await LeadService.create_lead(db, person(assigned_to=agent.id), user_id=agent.id)
    assert (await reload(db, created)).assigned_to == agent.id


async def test_an_agent_may_not_assign_a_new_lead_to_someone_else(
    db: AsyncSession, agent: User, other_agent: User
) -> None:
    with pytest.raises(PermissionDeniedException):
        await LeadService.create_lead(db, person(assigned_to=other_agent.id), user_id=agent.id)
    assert await count_rows(db) == 0


async def test_a_superuser_may_assign_a_new_lead_to_an_active_user(
    db: AsyncSession, superuser: User, agent: User
) -> None:
    created = await LeadService.create_lead(db, person(assigned_to=agent.id), user_id=superuser.id)
    assert created.assignee is not None
    assert created.assignee.email == "agent@crm.example.com"
    assert (await reload(db, created)).assigned_to == agent.id


async def test_a_new_lead_cannot_be_assigned_to_an_unknown_user(
    db: AsyncSession, superuser: User
) -> None:
    with pytest.raises(UserNotFoundException):
        await LeadService.create_lead(db, person(assigned_to=NO_SUCH_ID), user_id=superuser.id)
    assert await count_rows(db) == 0


async def test_a_new_lead_cannot_be_assigned_to_an_inactive_user(
    db: AsyncSession, superuser: User, inactive_user: User
) -> None:
    with pytest.raises(InactiveUserException):
        await LeadService.create_lead(
            db, person(assigned_to=inactive_user.id), user_id=superuser.id
        )
    assert await count_rows(db) == 0


async def test_an_unknown_user_may_not_create_a_lead(db: AsyncSession) -> None:
    with pytest.raises(UserNotFoundException):
        await LeadService.create_lead(db, person(), user_id=NO_SUCH_ID)
    assert await count_rows(db) == 0


async def test_an_inactive_user_may_not_create_a_lead(
    db: AsyncSession, inactive_user: User
) -> None:
    with pytest.raises(InactiveUserException):
        await LeadService.create_lead(db, person(), user_id=inactive_user.id)
    assert await count_rows(db) == 0


async def test_create_without_names_names_both_fields_and_writes_nothing(
    db: AsyncSession, superuser: User
) -> None:
    with pytest.raises(ValidationException) as caught:
        await LeadService.create_lead(db, {"email": FREE_MAIL}, user_id=superuser.id)
    assert error_fields(caught.value) == {"first_name", "last_name"}
    assert await count_rows(db) == 0


async def test_create_with_blank_names_names_both_fields_and_writes_nothing(
    db: AsyncSession, superuser: User
) -> None:
    with pytest.raises(ValidationException) as caught:
        await LeadService.create_lead(
            db, person(first_name="  ", last_name=""), user_id=superuser.id
        )
    assert error_fields(caught.value) == {"first_name", "last_name"}
    assert await count_rows(db) == 0


BAD_VALUES: dict[str, Any] = {
    "email": "not-an-email",
    "phone": "12345",
    "lead_score": 101,
    "probability": 1.5,
    "estimated_value": -1,
    "call_attempts": -1,
    "status": "MAYBE",
    "source": "TIKTOK",
    "tags": ["t" * 51],
}


@pytest.mark.parametrize(("field", "value"), BAD_VALUES.items(), ids=list(BAD_VALUES))
async def test_create_with_a_bad_value_names_the_field_and_writes_nothing(
    db: AsyncSession, superuser: User, field: str, value: Any
) -> None:
    data = person(phone="+15550101234") | {field: value}
    with pytest.raises(ValidationException) as caught:
        await LeadService.create_lead(db, data, user_id=superuser.id)
    assert error_fields(caught.value) == {field}
    assert await count_rows(db) == 0


async def test_create_with_many_bad_values_names_every_field(
    db: AsyncSession, superuser: User
) -> None:
    with pytest.raises(ValidationException) as caught:
        await LeadService.create_lead(
            db, {"first_name": " ", "last_name": "Doe", **BAD_VALUES}, user_id=superuser.id
        )
    assert error_fields(caught.value) == {"first_name", *BAD_VALUES}
    assert await count_rows(db) == 0


async def test_create_without_email_or_phone_is_refused(db: AsyncSession, superuser: User) -> None:
    with pytest.raises(ValidationException) as caught:
        await LeadService.create_lead(db, person(email=None), user_id=superuser.id)
    assert error_fields(caught.value) == {"email"}
    assert await count_rows(db) == 0


async def test_create_with_only_a_phone_is_accepted(db: AsyncSession, superuser: User) -> None:
    created = await LeadService.create_lead(
        db, person(email=None, phone="555 010 1234"), user_id=superuser.id
    )
    saved = await reload(db, created)
    assert (saved.email, saved.phone) == (None, "5550101234")


async def test_create_refuses_unknown_fields_and_names_them(
    db: AsyncSession, superuser: User
) -> None:
    with pytest.raises(ValidationException) as caught:
        await LeadService.create_lead(
            db, person(favourite_colour="blue", shoe_size=44), user_id=superuser.id
        )
    assert error_fields(caught.value) == {"favourite_colour", "shoe_size"}
    assert await count_rows(db) == 0


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("id", 42),
        ("created_at", datetime(2020, 1, 1, tzinfo=UTC)),
        ("updated_at", datetime(2020, 1, 1, tzinfo=UTC)),
        ("created_by", 1),
        ("archived_at", datetime(2020, 1, 1, tzinfo=UTC)),
        ("status_before_archive", "NEW"),
        ("score_is_manual", True),
    ],
)
async def test_create_refuses_read_only_fields(
    db: AsyncSession, superuser: User, field: str, value: Any
) -> None:
    with pytest.raises(ValidationException) as caught:
        await LeadService.create_lead(db, person(**{field: value}), user_id=superuser.id)
    assert error_fields(caught.value) == {field}
    assert await count_rows(db) == 0


# ============================================================================== update_lead


async def test_update_changes_only_the_given_fields(
    db: AsyncSession, lead: Lead, agent: User
) -> None:
    before = await stored(db, lead)
    await LeadService.update_lead(db, lead.id, {"job_title": "CTO"}, user_id=agent.id)
    after = await stored(db, lead)
    changed = {key for key in before if before[key] != after[key]}
    assert changed == {"job_title", "notes", "updated_at", "version"}  # version: one more
    assert after["job_title"] == "CTO"


async def test_update_writes_the_reference_change_line(
    db: AsyncSession, make_lead: LeadFactory, agent: User
) -> None:
    manual = await make_lead(owner=agent, lead_score=50)
    await LeadService.update_lead(
        db,
        manual.id,
        {"status": LeadStatus.CONTACTED, "lead_score": 85},
        user_id=agent.id,
    )
    saved = await reload(db, manual)
    assert note_lines(saved)[-1] == note(
        saved.updated_at, agent, "Updated: status: NEW → CONTACTED; lead_score: 50 → 85"
    )
    assert re.fullmatch(
        rf"\[\d{{4}}-\d{{2}}-\d{{2}} \d{{2}}:\d{{2}} UTC\] user {agent.id}: Updated: "
        r"status: NEW → CONTACTED; lead_score: 50 → 85",
        note_lines(saved)[-1],
    )


async def test_update_appends_exactly_one_line_and_keeps_history(
    db: AsyncSession, lead: Lead, agent: User
) -> None:
    history = (await reload(db, lead)).notes
    await LeadService.update_lead(db, lead.id, {"status": "CONTACTED"}, user_id=agent.id)
    saved = await reload(db, lead)
    assert saved.notes == f"{history}\n" + note(
        saved.updated_at, agent, "Updated: status: NEW → CONTACTED"
    )


async def test_update_lists_fields_in_the_same_order_whatever_the_input_order(
    db: AsyncSession, make_lead: LeadFactory, agent: User
) -> None:
    first = await make_lead(owner=agent, lead_score=50, job_title="CEO", company="Old Co")
    second = await make_lead(owner=agent, lead_score=50, job_title="CEO", company="Old Co")
    changes = {"lead_score": 85, "job_title": "CTO", "status": "QUALIFIED", "company": "New Co"}
    await LeadService.update_lead(db, first.id, changes, user_id=agent.id)
    await LeadService.update_lead(db, second.id, dict(reversed(changes.items())), user_id=agent.id)
    expected = (
        "Updated: company: Old Co → New Co; job_title: CEO → CTO; status: NEW → QUALIFIED; "
        "lead_score: 50 → 85"
    )
    for lead_id in (first.id, second.id):
        saved = await reload(db, lead_id)
        assert note_lines(saved)[-1] == note(saved.updated_at, agent, expected)


async def test_update_does_not_list_fields_whose_value_did_not_change(
    db: AsyncSession, make_lead: LeadFactory, agent: User
) -> None:
    existing = await make_lead(owner=agent, job_title="CEO", first_name="Pat")
    await LeadService.update_lead(
        db,
        existing.id,
        {"status": "NEW", "first_name": "Pat", "job_title": "CTO", "source": "OTHER"},
        user_id=agent.id,
    )
    saved = await reload(db, existing)
    assert note_lines(saved)[-1] == note(saved.updated_at, agent, "Updated: job_title: CEO → CTO")


async def test_update_of_values_that_normalise_to_the_stored_ones_is_no_change(
    db: AsyncSession, make_lead: LeadFactory, agent: User
) -> None:
    existing = await make_lead(owner=agent, first_name="Pat", phone="+15550101234")
    before = await stored(db, existing)
    await LeadService.update_lead(
        db,
        existing.id,
        {"first_name": "  Pat ", "phone": "+1 (555) 010-1234", "status": "new"},
        user_id=agent.id,
    )
    assert await stored(db, existing) == before


async def test_update_that_changes_nothing_appends_nothing(
    db: AsyncSession, lead: Lead, agent: User
) -> None:
    before = await stored(db, lead)
    await LeadService.update_lead(
        db, lead.id, {"status": "NEW", "email": FREE_MAIL, "tags": []}, user_id=agent.id
    )
    assert (await reload(db, lead)).notes == before["notes"]


async def test_update_that_changes_nothing_leaves_updated_at_alone(
    db: AsyncSession, lead: Lead, agent: User
) -> None:
    before = await stored(db, lead)
    await LeadService.update_lead(db, lead.id, {"status": "NEW"}, user_id=agent.id)
    assert await stored(db, lead) == before


async def test_empty_update_changes_nothing(db: AsyncSession, lead: Lead, agent: User) -> None:
    before = await stored(db, lead)
    await LeadService.update_lead(db, lead.id, {}, user_id=agent.id)
    assert await stored(db, lead) == before


async def test_update_moves_updated_at_forward_when_something_changes(
    db: AsyncSession, lead: Lead, agent: User
) -> None:
    before = (await reload(db, lead)).updated_at
    await LeadService.update_lead(db, lead.id, {"status": "CONTACTED"}, user_id=agent.id)
    assert (await reload(db, lead)).updated_at > before


async def test_update_notes_are_appended_as_their_own_line(
    db: AsyncSession, lead: Lead, agent: User
) -> None:
    history = (await reload(db, lead)).notes
    await LeadService.update_lead(db, lead.id, {"notes": "Left a voicemail"}, user_id=agent.id)
    saved = await reload(db, lead)
    assert saved.notes == f"{history}\n" + note(saved.updated_at, agent, "Left a voicemail")


async def test_update_notes_never_replace_history(
    db: AsyncSession, lead: Lead, agent: User
) -> None:
    history = (await reload(db, lead)).notes
    await LeadService.update_lead(db, lead.id, {"notes": "first"}, user_id=agent.id)
    await LeadService.update_lead(db, lead.id, {"notes": "second"}, user_id=agent.id)
    saved = await reload(db, lead)
    assert note_lines(saved)[0] == history
    assert [line.split(": ", 1)[1] for line in note_lines(saved)] == [
        "Created (score 50)",
        "first",
        "second",
    ]


async def test_update_with_notes_and_changes_writes_both_lines(
    db: AsyncSession, lead: Lead, agent: User
) -> None:
    history = (await reload(db, lead)).notes
    await LeadService.update_lead(
        db, lead.id, {"status": "CONTACTED", "notes": "Spoke to Pat"}, user_id=agent.id
    )
    saved = await reload(db, lead)
    lines = note_lines(saved)
    assert lines[0] == history
    assert sorted(lines[1:]) == sorted(
        [
            note(saved.updated_at, agent, "Updated: status: NEW → CONTACTED"),
            note(saved.updated_at, agent, "Spoke to Pat"),
        ]
    )


async def test_update_tags_replace_the_set_and_are_tracked(
    db: AsyncSession, make_lead: LeadFactory, agent: User
) -> None:
    tagged = await make_lead(owner=agent, tags=["alpha", "beta"])
    await LeadService.update_lead(db, tagged.id, {"tags": [" Gamma "]}, user_id=agent.id)
    saved = await reload(db, tagged)
    assert saved.tags == ["gamma"]
    assert note_lines(saved)[-1] == note(
        saved.updated_at, agent, "Updated: tags: alpha, beta → gamma"
    )


async def test_update_with_the_same_tags_in_another_order_is_no_change(
    db: AsyncSession, make_lead: LeadFactory, agent: User
) -> None:
    tagged = await make_lead(owner=agent, tags=["alpha", "beta"])
    before = await stored(db, tagged)
    await LeadService.update_lead(db, tagged.id, {"tags": ["BETA", "alpha"]}, user_id=agent.id)
    assert await stored(db, tagged) == before


@pytest.mark.parametrize(
    ("start", "change", "score", "line"),
    [
        (
            {},
            {"source": "REFERRAL"},
            70,
            "Updated: source: OTHER → REFERRAL; lead_score: 50 → 70",
        ),
        (
            {},
            {"email": BUSINESS_MAIL},
            60,
            f"Updated: email: {FREE_MAIL} → {BUSINESS_MAIL}; lead_score: 50 → 60",
        ),
        (
            {"company": "Acme"},
            {"company": None},
            50,
            "Updated: company: Acme → (none); lead_score: 60 → 50",
        ),
        (
            {"tags": ["cold"]},
            {"tags": ["cold", "vip"]},
            65,
            "Updated: lead_score: 50 → 65; tags: cold → cold, vip",
        ),
    ],
    ids=["source", "email", "company", "tags"],
)
async def test_update_of_a_scoring_field_rescores_an_auto_scored_lead(
    db: AsyncSession,
    make_lead: LeadFactory,
    agent: User,
    start: dict[str, Any],
    change: dict[str, Any],
    score: int,
    line: str,
) -> None:
    existing = await make_lead(owner=agent, email=FREE_MAIL, **start)
    await LeadService.update_lead(db, existing.id, change, user_id=agent.id)
    saved = await reload(db, existing)
    assert (saved.lead_score, saved.score_is_manual) == (score, False)
    assert note_lines(saved)[-1] == note(saved.updated_at, agent, line)


async def test_rescore_that_gives_the_same_score_does_not_list_lead_score(
    db: AsyncSession, make_lead: LeadFactory, agent: User
) -> None:
    existing = await make_lead(owner=agent, company="Acme")
    await LeadService.update_lead(db, existing.id, {"company": "Beta"}, user_id=agent.id)
    saved = await reload(db, existing)
    assert saved.lead_score == 60
    assert note_lines(saved)[-1] == note(saved.updated_at, agent, "Updated: company: Acme → Beta")


async def test_update_of_a_scoring_field_keeps_a_manual_score(
    db: AsyncSession, make_lead: LeadFactory, agent: User
) -> None:
    manual = await make_lead(owner=agent, lead_score=40)
    await LeadService.update_lead(
        db,
        manual.id,
        {"source": "REFERRAL", "company": "Acme", "email": BUSINESS_MAIL, "tags": ["vip"]},
        user_id=agent.id,
    )
    saved = await reload(db, manual)
    assert (saved.lead_score, saved.score_is_manual) == (40, True)


async def test_setting_a_score_by_update_makes_it_manual(
    db: AsyncSession, lead: Lead, agent: User
) -> None:
    await LeadService.update_lead(db, lead.id, {"lead_score": 85}, user_id=agent.id)
    saved = await reload(db, lead)
    assert (saved.lead_score, saved.score_is_manual) == (85, True)
    assert note_lines(saved)[-1] == note(saved.updated_at, agent, "Updated: lead_score: 50 → 85")


async def test_setting_a_score_of_zero_by_update_makes_it_manual(
    db: AsyncSession, lead: Lead, agent: User
) -> None:
    await LeadService.update_lead(db, lead.id, {"lead_score": 0}, user_id=agent.id)
    saved = await reload(db, lead)
    assert (saved.lead_score, saved.score_is_manual) == (0, True)


async def test_a_score_given_with_a_scoring_field_change_wins_over_the_rescore(
    db: AsyncSession, lead: Lead, agent: User
) -> None:
    await LeadService.update_lead(
        db, lead.id, {"source": "REFERRAL", "lead_score": 42}, user_id=agent.id
    )
    saved = await reload(db, lead)
    assert (saved.lead_score, saved.score_is_manual) == (42, True)
    assert note_lines(saved)[-1] == note(
        saved.updated_at,
        agent,
        "Updated: source: OTHER → REFERRAL; lead_score: 50 → 42",
    )


async def test_a_score_set_by_update_survives_later_changes_to_scoring_fields(
    db: AsyncSession, lead: Lead, agent: User
) -> None:
    await LeadService.update_lead(db, lead.id, {"lead_score": 20}, user_id=agent.id)
    await LeadService.update_lead(db, lead.id, {"source": "REFERRAL"}, user_id=agent.id)
    saved = await reload(db, lead)
    assert (saved.lead_score, saved.score_is_manual) == (20, True)


async def test_setting_the_score_to_none_returns_to_automatic_scoring(
    db: AsyncSession, make_lead: LeadFactory, agent: User
) -> None:
    manual = await make_lead(owner=agent, lead_score=40, source="REFERRAL")
    await LeadService.update_lead(db, manual.id, {"lead_score": None}, user_id=agent.id)
    saved = await reload(db, manual)
    assert (saved.lead_score, saved.score_is_manual) == (70, False)
    assert note_lines(saved)[-1] == note(saved.updated_at, agent, "Updated: lead_score: 40 → 70")


async def test_a_switch_to_automatic_scoring_that_keeps_the_score_is_noted(
    db: AsyncSession, make_lead: LeadFactory, agent: User
) -> None:
    manual = await make_lead(owner=agent, lead_score=70, source="REFERRAL")
    await LeadService.update_lead(db, manual.id, {"score_is_manual": False}, user_id=agent.id)
    saved = await reload(db, manual)
    assert (saved.lead_score, saved.score_is_manual) == (70, False)
    assert note_lines(saved)[-1] == note(
        saved.updated_at, agent, "Updated: score_is_manual: True → False"
    )


async def test_returning_to_auto_scoring_uses_the_fields_of_the_same_update(
    db: AsyncSession, make_lead: LeadFactory, agent: User
) -> None:
    manual = await make_lead(owner=agent, lead_score=40)
    await LeadService.update_lead(
        db, manual.id, {"lead_score": None, "source": "WEBSITE"}, user_id=agent.id
    )
    saved = await reload(db, manual)
    assert (saved.lead_score, saved.score_is_manual) == (65, False)


async def test_setting_the_score_to_none_on_an_auto_scored_lead_changes_nothing(
    db: AsyncSession, lead: Lead, agent: User
) -> None:
    before = await stored(db, lead)
    await LeadService.update_lead(db, lead.id, {"lead_score": None}, user_id=agent.id)
    assert await stored(db, lead) == before


async def test_update_returns_the_lead_with_its_assignee_loaded(
    db: AsyncSession, lead: Lead, agent: User
) -> None:
    db.expunge_all()
    updated = await LeadService.update_lead(db, lead.id, {"job_title": "CTO"}, user_id=agent.id)
    assert updated.job_title == "CTO"
    assert updated.assignee is not None
    assert updated.assignee.id == agent.id


async def test_an_agent_may_not_update_another_agents_lead(
    db: AsyncSession, lead: Lead, other_agent: User
) -> None:
    before = await stored(db, lead)
    with pytest.raises(LeadNotFoundException):
        await LeadService.update_lead(db, lead.id, {"status": "WON"}, user_id=other_agent.id)
    assert await stored(db, lead) == before


async def test_an_agent_may_not_update_an_unassigned_lead(
    db: AsyncSession, make_lead: LeadFactory, agent: User
) -> None:
    unassigned = await make_lead()
    before = await stored(db, unassigned)
    with pytest.raises(LeadNotFoundException):
        await LeadService.update_lead(db, unassigned.id, {"status": "WON"}, user_id=agent.id)
    assert await stored(db, unassigned) == before


async def test_a_superuser_may_update_any_lead(
    db: AsyncSession, lead: Lead, superuser: User
) -> None:
    await LeadService.update_lead(db, lead.id, {"status": "WON"}, user_id=superuser.id)
    saved = await reload(db, lead)
    assert saved.status == LeadStatus.WON
    assert note_lines(saved)[-1] == note(saved.updated_at, superuser, "Updated: status: NEW → WON")


@pytest.mark.parametrize("new_owner", ["other", "nobody"])
async def test_an_agent_may_not_reassign_their_lead(
    db: AsyncSession, lead: Lead, agent: User, other_agent: User, new_owner: str
) -> None:
    target = other_agent.id if new_owner == "other" else None
    before = await stored(db, lead)
    with pytest.raises(PermissionDeniedException):
        await LeadService.update_lead(
            db, lead.id, {"assigned_to": target, "status": "CONTACTED"}, user_id=agent.id
        )
    assert await stored(db, lead) == before


async def test_an_agent_naming_themselves_as_assignee_is_no_reassignment(
    db: AsyncSession, lead: Lead, agent: User
) -> None:
    await LeadService.update_lead(
        db, lead.id, {"assigned_to": agent.id, "status": "CONTACTED"}, user_id=agent.id
    )
    saved = await reload(db, lead)
    assert (saved.assigned_to, saved.status) == (agent.id, LeadStatus.CONTACTED)
    assert note_lines(saved)[-1] == note(
        saved.updated_at, agent, "Updated: status: NEW → CONTACTED"
    )


async def test_a_superuser_may_reassign_a_lead_and_it_is_tracked(
    db: AsyncSession, lead: Lead, superuser: User, agent: User, other_agent: User
) -> None:
    updated = await LeadService.update_lead(
        db, lead.id, {"assigned_to": other_agent.id}, user_id=superuser.id
    )
    assert updated.assignee is not None
    assert updated.assignee.id == other_agent.id
    saved = await reload(db, lead)
    assert saved.assigned_to == other_agent.id
    assert note_lines(saved)[-1] == note(
        saved.updated_at, superuser, f"Updated: assigned_to: {agent.id} → {other_agent.id}"
    )


async def test_a_superuser_may_unassign_a_lead(
    db: AsyncSession, lead: Lead, superuser: User, agent: User
) -> None:
    updated = await LeadService.update_lead(
        db, lead.id, {"assigned_to": None}, user_id=superuser.id
    )
    assert updated.assignee is None
    saved = await reload(db, lead)
    assert saved.assigned_to is None
    assert note_lines(saved)[-1] == note(
        saved.updated_at, superuser, f"Updated: assigned_to: {agent.id} → (none)"
    )


async def test_a_lead_cannot_be_reassigned_to_an_unknown_user(
    db: AsyncSession, lead: Lead, superuser: User
) -> None:
    before = await stored(db, lead)
    with pytest.raises(UserNotFoundException):
        await LeadService.update_lead(
            db, lead.id, {"assigned_to": NO_SUCH_ID}, user_id=superuser.id
        )
    assert await stored(db, lead) == before


async def test_a_lead_cannot_be_reassigned_to_an_inactive_user(
    db: AsyncSession, lead: Lead, superuser: User, inactive_user: User
) -> None:
    before = await stored(db, lead)
    with pytest.raises(InactiveUserException):
        await LeadService.update_lead(
            db, lead.id, {"assigned_to": inactive_user.id}, user_id=superuser.id
        )
    assert await stored(db, lead) == before


async def test_an_archived_lead_cannot_be_updated(
    db: AsyncSession, archived_lead: Lead, superuser: User
) -> None:
    before = await stored(db, archived_lead)
    with pytest.raises(ConflictException):
        await LeadService.update_lead(
            db, archived_lead.id, {"status": "CONTACTED"}, user_id=superuser.id
        )
    assert await stored(db, archived_lead) == before


async def test_update_with_a_bad_value_changes_nothing(
    db: AsyncSession, lead: Lead, agent: User
) -> None:
    before = await stored(db, lead)
    with pytest.raises(ValidationException) as caught:
        await LeadService.update_lead(
            db,
            lead.id,
            {"status": "CONTACTED", "job_title": "CTO", "email": "not-an-email"},
            user_id=agent.id,
        )
    assert error_fields(caught.value) == {"email"}
    assert await stored(db, lead) == before


async def test_update_with_many_bad_values_names_every_field(
    db: AsyncSession, lead: Lead, agent: User
) -> None:
    before = await stored(db, lead)
    with pytest.raises(ValidationException) as caught:
        await LeadService.update_lead(
            db, lead.id, {"last_name": "  ", **BAD_VALUES}, user_id=agent.id
        )
    assert error_fields(caught.value) == {"last_name", *BAD_VALUES}
    assert await stored(db, lead) == before


async def test_update_that_removes_both_email_and_phone_is_refused(
    db: AsyncSession, lead: Lead, agent: User
) -> None:
    before = await stored(db, lead)
    with pytest.raises(ValidationException) as caught:
        await LeadService.update_lead(db, lead.id, {"email": None}, user_id=agent.id)
    assert error_fields(caught.value) == {"email"}
    assert await stored(db, lead) == before


async def test_update_may_swap_email_for_phone(db: AsyncSession, lead: Lead, agent: User) -> None:
    await LeadService.update_lead(
        db, lead.id, {"email": None, "phone": "+44 20 7946 0958"}, user_id=agent.id
    )
    saved = await reload(db, lead)
    assert (saved.email, saved.phone) == (None, "+442079460958")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("favourite_colour", "blue"),
        ("id", 42),
        ("created_at", datetime(2020, 1, 1, tzinfo=UTC)),
        ("created_by", 1),
        ("archived_at", datetime(2020, 1, 1, tzinfo=UTC)),
        ("status_before_archive", "NEW"),
    ],
)
async def test_update_refuses_unknown_and_read_only_fields(
    db: AsyncSession, lead: Lead, superuser: User, field: str, value: Any
) -> None:
    before = await stored(db, lead)
    with pytest.raises(ValidationException) as caught:
        await LeadService.update_lead(
            db, lead.id, {"status": "WON", field: value}, user_id=superuser.id
        )
    assert error_fields(caught.value) == {field}
    assert await stored(db, lead) == before


async def test_update_of_a_missing_lead_is_not_found(db: AsyncSession, superuser: User) -> None:
    with pytest.raises(LeadNotFoundException):
        await LeadService.update_lead(db, NO_SUCH_ID, {"status": "WON"}, user_id=superuser.id)


async def test_an_unknown_user_may_not_update_a_lead(db: AsyncSession, lead: Lead) -> None:
    before = await stored(db, lead)
    with pytest.raises(UserNotFoundException):
        await LeadService.update_lead(db, lead.id, {"status": "WON"}, user_id=NO_SUCH_ID)
    assert await stored(db, lead) == before


async def test_a_deactivated_user_may_not_update_their_lead(
    db: AsyncSession, lead: Lead, agent: User
) -> None:
    await deactivate(db, agent)
    before = await stored(db, lead)
    with pytest.raises(InactiveUserException):
        await LeadService.update_lead(db, lead.id, {"status": "WON"}, user_id=agent.id)
    assert await stored(db, lead) == before


# ============================================================================== delete_lead


async def test_soft_delete_archives_the_lead(
    db: AsyncSession, make_lead: LeadFactory, agent: User, superuser: User
) -> None:
    existing = await make_lead(owner=agent, status="CONTACTED", tags=["vip"])
    history = (await reload(db, existing)).notes
    before = datetime.now(UTC)
    returned = await LeadService.delete_lead(db, existing.id, user_id=superuser.id)
    saved = await reload(db, existing)
    assert returned is not None
    assert returned.id == existing.id
    assert saved.status == LeadStatus.LOST
    assert saved.status_before_archive == LeadStatus.CONTACTED
    assert sorted(saved.tags) == ["archived", "vip"]
    assert saved.archived_at is not None
    assert before <= saved.archived_at <= datetime.now(UTC)
    assert saved.notes == f"{history}\n" + note(
        saved.archived_at, superuser, "Archived (status was CONTACTED)"
    )


async def test_soft_delete_keeps_the_row(db: AsyncSession, lead: Lead, superuser: User) -> None:
    await LeadService.delete_lead(db, lead.id, user_id=superuser.id)
    assert await count_rows(db) == 1


async def test_soft_delete_twice_changes_nothing_the_second_time(
    db: AsyncSession, archived_lead: Lead, superuser: User
) -> None:
    before = await stored(db, archived_lead)
    await LeadService.delete_lead(db, archived_lead.id, user_id=superuser.id)
    after = await stored(db, archived_lead)
    assert after == before
    assert after["status_before_archive"] == LeadStatus.NEW


async def test_an_agent_may_soft_delete_their_own_lead(
    db: AsyncSession, lead: Lead, agent: User
) -> None:
    await LeadService.delete_lead(db, lead.id, user_id=agent.id)
    saved = await reload(db, lead)
    assert (saved.status, saved.status_before_archive) == (LeadStatus.LOST, LeadStatus.NEW)
    assert saved.archived_at is not None
    assert note_lines(saved)[-1] == note(saved.archived_at, agent, "Archived (status was NEW)")


async def test_an_agent_may_not_soft_delete_another_agents_lead(
    db: AsyncSession, lead: Lead, other_agent: User
) -> None:
    before = await stored(db, lead)
    with pytest.raises(LeadNotFoundException):
        await LeadService.delete_lead(db, lead.id, user_id=other_agent.id)
    assert await stored(db, lead) == before


async def test_hard_delete_by_a_superuser_removes_the_row(
    db: AsyncSession, lead: Lead, make_lead: LeadFactory, superuser: User
) -> None:
    await make_lead()
    assert await count_rows(db) == 2
    result = await LeadService.delete_lead(db, lead.id, user_id=superuser.id, hard_delete=True)
    assert result is None
    assert await count_rows(db) == 1
    with pytest.raises(LeadNotFoundException):
        await LeadService.get_lead_by_id(db, lead.id)


async def test_hard_delete_of_an_archived_lead_removes_it(
    db: AsyncSession, archived_lead: Lead, superuser: User
) -> None:
    await LeadService.delete_lead(db, archived_lead.id, user_id=superuser.id, hard_delete=True)
    assert await count_rows(db) == 0


async def test_an_agent_may_not_hard_delete_even_their_own_lead(
    db: AsyncSession, lead: Lead, agent: User
) -> None:
    before = await stored(db, lead)
    with pytest.raises(PermissionDeniedException):
        await LeadService.delete_lead(db, lead.id, user_id=agent.id, hard_delete=True)
    assert await count_rows(db) == 1
    assert await stored(db, lead) == before


async def test_delete_of_a_missing_lead_is_not_found(db: AsyncSession, superuser: User) -> None:
    with pytest.raises(LeadNotFoundException):
        await LeadService.delete_lead(db, NO_SUCH_ID, user_id=superuser.id)


async def test_an_unknown_user_may_not_delete_a_lead(db: AsyncSession, lead: Lead) -> None:
    with pytest.raises(UserNotFoundException):
        await LeadService.delete_lead(db, lead.id, user_id=NO_SUCH_ID, hard_delete=True)
    assert await count_rows(db) == 1


# ============================================================================= restore_lead


async def test_restore_undoes_a_soft_delete_and_notes_it(
    db: AsyncSession, make_lead: LeadFactory, agent: User, superuser: User
) -> None:
    existing = await make_lead(owner=agent, status="QUALIFIED", tags=["vip"])
    await LeadService.delete_lead(db, existing.id, user_id=superuser.id)
    archived_history = (await reload(db, existing)).notes
    await LeadService.restore_lead(db, existing.id, user_id=agent.id)
    saved = await reload(db, existing)
    assert saved.status == LeadStatus.QUALIFIED
    assert (saved.archived_at, saved.status_before_archive) == (None, None)
    assert saved.tags == ["vip"]
    assert saved.notes == f"{archived_history}\n" + note(
        saved.updated_at, agent, "Restored (status LOST → QUALIFIED)"
    )


async def test_restore_gives_back_the_archived_tag_a_lead_already_had(
    db: AsyncSession, make_lead: LeadFactory, agent: User
) -> None:
    tagged = await make_lead(owner=agent, tags=["archived", "vip"])
    await LeadService.delete_lead(db, tagged.id, user_id=agent.id)
    assert (await reload(db, tagged)).tags == ["archived", "vip"]
    await LeadService.restore_lead(db, tagged.id, user_id=agent.id)
    assert (await reload(db, tagged)).tags == ["archived", "vip"]


async def test_restore_removes_the_archived_tag_the_archive_added(
    db: AsyncSession, make_lead: LeadFactory, agent: User
) -> None:
    plain = await make_lead(owner=agent, tags=["vip"])
    await LeadService.delete_lead(db, plain.id, user_id=agent.id)
    assert (await reload(db, plain)).tags == ["vip", "archived"]
    await LeadService.restore_lead(db, plain.id, user_id=agent.id)
    assert (await reload(db, plain)).tags == ["vip"]


async def test_archiving_again_after_a_restore_remembers_afresh(
    db: AsyncSession, make_lead: LeadFactory, agent: User
) -> None:
    lead = await make_lead(owner=agent, tags=["vip"])
    for _ in range(2):
        await LeadService.delete_lead(db, lead.id, user_id=agent.id)
        await LeadService.restore_lead(db, lead.id, user_id=agent.id)
    assert (await reload(db, lead)).tags == ["vip"]


async def test_a_restored_lead_can_be_updated_again(
    db: AsyncSession, archived_lead: Lead, agent: User
) -> None:
    await LeadService.restore_lead(db, archived_lead.id, user_id=agent.id)
    await LeadService.update_lead(db, archived_lead.id, {"status": "WON"}, user_id=agent.id)
    assert (await reload(db, archived_lead)).status == LeadStatus.WON


async def test_restore_of_a_lead_that_is_not_archived_changes_nothing(
    db: AsyncSession, lead: Lead, agent: User
) -> None:
    before = await stored(db, lead)
    restored = await LeadService.restore_lead(db, lead.id, user_id=agent.id)
    assert restored.id == lead.id
    assert await stored(db, lead) == before


async def test_an_agent_may_not_restore_another_agents_lead(
    db: AsyncSession, archived_lead: Lead, other_agent: User
) -> None:
    before = await stored(db, archived_lead)
    with pytest.raises(LeadNotFoundException):
        await LeadService.restore_lead(db, archived_lead.id, user_id=other_agent.id)
    assert await stored(db, archived_lead) == before


async def test_restore_of_a_missing_lead_is_not_found(db: AsyncSession, superuser: User) -> None:
    with pytest.raises(LeadNotFoundException):
        await LeadService.restore_lead(db, NO_SUCH_ID, user_id=superuser.id)


# ==================================================================== notes and call attempts


async def test_add_lead_note_appends_one_stamped_line(
    db: AsyncSession, lead: Lead, agent: User
) -> None:
    history = (await reload(db, lead)).notes
    await LeadService.add_lead_note(db, lead.id, "Asked for a quote", user_id=agent.id)
    saved = await reload(db, lead)
    assert saved.notes == f"{history}\n" + note(saved.updated_at, agent, "Asked for a quote")


async def test_add_lead_note_moves_updated_at_forward(
    db: AsyncSession, lead: Lead, agent: User
) -> None:
    before = (await reload(db, lead)).updated_at
    await LeadService.add_lead_note(db, lead.id, "Hello", user_id=agent.id)
    assert (await reload(db, lead)).updated_at > before


@pytest.mark.parametrize("text", ["", "   ", "\n\t"])
async def test_a_blank_note_is_refused(
    db: AsyncSession, lead: Lead, agent: User, text: str
) -> None:
    before = await stored(db, lead)
    with pytest.raises(ValidationException):
        await LeadService.add_lead_note(db, lead.id, text, user_id=agent.id)
    assert await stored(db, lead) == before


async def test_an_agent_may_not_note_another_agents_lead(
    db: AsyncSession, lead: Lead, other_agent: User
) -> None:
    before = await stored(db, lead)
    with pytest.raises(LeadNotFoundException):
        await LeadService.add_lead_note(db, lead.id, "Mine now", user_id=other_agent.id)
    assert await stored(db, lead) == before


async def test_an_archived_lead_cannot_get_a_note(
    db: AsyncSession, archived_lead: Lead, superuser: User
) -> None:
    before = await stored(db, archived_lead)
    with pytest.raises(ConflictException):
        await LeadService.add_lead_note(db, archived_lead.id, "Too late", user_id=superuser.id)
    assert await stored(db, archived_lead) == before


async def test_add_lead_note_to_a_missing_lead_is_not_found(
    db: AsyncSession, superuser: User
) -> None:
    with pytest.raises(LeadNotFoundException):
        await LeadService.add_lead_note(db, NO_SUCH_ID, "Hello", user_id=superuser.id)


async def test_record_call_attempt_counts_stamps_and_notes_the_call(
    db: AsyncSession, lead: Lead, agent: User
) -> None:
    history = (await reload(db, lead)).notes
    before = datetime.now(UTC)
    await LeadService.record_call_attempt(db, lead.id, user_id=agent.id)
    saved = await reload(db, lead)
    assert saved.call_attempts == 1
    assert saved.last_contact_date is not None
    assert before <= saved.last_contact_date <= datetime.now(UTC)
    assert saved.updated_at == saved.last_contact_date
    assert saved.days_since_last_contact == 0
    assert saved.notes == f"{history}\n" + note(saved.last_contact_date, agent, "Call attempt 1")


async def test_record_call_attempt_with_a_note_adds_it_to_the_line(
    db: AsyncSession, lead: Lead, agent: User
) -> None:
    await LeadService.record_call_attempt(db, lead.id, user_id=agent.id)
    await LeadService.record_call_attempt(db, lead.id, user_id=agent.id, note="Left voicemail")
    saved = await reload(db, lead)
    assert saved.call_attempts == 2
    assert saved.last_contact_date is not None
    assert note_lines(saved)[-1] == note(
        saved.last_contact_date, agent, "Call attempt 2: Left voicemail"
    )
    assert len(note_lines(saved)) == 3


async def test_an_agent_may_not_record_a_call_on_another_agents_lead(
    db: AsyncSession, lead: Lead, other_agent: User
) -> None:
    before = await stored(db, lead)
    with pytest.raises(LeadNotFoundException):
        await LeadService.record_call_attempt(db, lead.id, user_id=other_agent.id)
    assert await stored(db, lead) == before


async def test_an_archived_lead_cannot_get_a_call_attempt(
    db: AsyncSession, archived_lead: Lead, superuser: User
) -> None:
    before = await stored(db, archived_lead)
    with pytest.raises(ConflictException):
        await LeadService.record_call_attempt(db, archived_lead.id, user_id=superuser.id)
    assert await stored(db, archived_lead) == before


# ============================================================================ get_lead_by_id


async def test_get_lead_by_id_returns_the_lead(db: AsyncSession, lead: Lead) -> None:
    found = await LeadService.get_lead_by_id(db, lead.id)
    assert (found.id, found.first_name, found.email) == (lead.id, "Pat", FREE_MAIL)


async def test_get_lead_by_id_of_a_missing_lead_is_not_found(db: AsyncSession) -> None:
    with pytest.raises(LeadNotFoundException) as caught:
        await LeadService.get_lead_by_id(db, NO_SUCH_ID)
    assert caught.value.lead_ids == [NO_SUCH_ID]


async def test_get_lead_by_id_loads_the_assignee(db: AsyncSession, lead: Lead, agent: User) -> None:
    db.expunge_all()
    found = await LeadService.get_lead_by_id(db, lead.id)
    assert found.assignee is not None
    assert (found.assignee.id, found.assignee.email) == (agent.id, "agent@crm.example.com")


async def test_get_lead_by_id_of_an_unassigned_lead_has_no_assignee(
    db: AsyncSession, make_lead: LeadFactory
) -> None:
    unassigned = await make_lead()
    db.expunge_all()
    found = await LeadService.get_lead_by_id(db, unassigned.id)
    assert found.assignee is None


async def test_the_assignee_may_read_their_lead_when_assignment_is_checked(
    db: AsyncSession, lead: Lead, agent: User
) -> None:
    found = await LeadService.get_lead_by_id(db, lead.id, user_id=agent.id, check_assignment=True)
    assert found.id == lead.id


async def test_another_agent_may_not_read_a_lead_when_assignment_is_checked(
    db: AsyncSession, lead: Lead, other_agent: User
) -> None:
    with pytest.raises(LeadNotFoundException):
        await LeadService.get_lead_by_id(db, lead.id, user_id=other_agent.id, check_assignment=True)


async def test_an_agent_may_not_read_an_unassigned_lead_when_assignment_is_checked(
    db: AsyncSession, make_lead: LeadFactory, agent: User
) -> None:
    unassigned = await make_lead()
    with pytest.raises(LeadNotFoundException):
        await LeadService.get_lead_by_id(db, unassigned.id, user_id=agent.id, check_assignment=True)


async def test_a_superuser_may_read_any_lead_when_assignment_is_checked(
    db: AsyncSession, lead: Lead, superuser: User
) -> None:
    found = await LeadService.get_lead_by_id(
        db, lead.id, user_id=superuser.id, check_assignment=True
    )
    assert found.id == lead.id


async def test_assignment_is_not_checked_unless_asked(
    db: AsyncSession, lead: Lead, other_agent: User
) -> None:
    found = await LeadService.get_lead_by_id(db, lead.id, user_id=other_agent.id)
    assert found.id == lead.id


async def test_missing_lead_is_not_found_before_permission_is_considered(
    db: AsyncSession, agent: User
) -> None:
    with pytest.raises(LeadNotFoundException):
        await LeadService.get_lead_by_id(db, NO_SUCH_ID, user_id=agent.id, check_assignment=True)


async def test_an_unknown_user_may_not_read_a_lead(db: AsyncSession, lead: Lead) -> None:
    with pytest.raises(UserNotFoundException):
        await LeadService.get_lead_by_id(db, lead.id, user_id=NO_SUCH_ID, check_assignment=True)


async def test_a_deactivated_user_may_not_read_even_their_own_lead(
    db: AsyncSession, lead: Lead, agent: User
) -> None:
    await deactivate(db, agent)
    with pytest.raises(InactiveUserException):
        await LeadService.get_lead_by_id(db, lead.id, user_id=agent.id, check_assignment=True)


async def test_a_note_with_a_nul_character_is_refused_and_nothing_is_written(
    db: AsyncSession, lead: Lead, agent: User
) -> None:
    lead_id, agent_id = lead.id, agent.id
    before = (await reload(db, lead)).notes
    with pytest.raises(ValidationException):
        await LeadService.add_lead_note(db, lead_id, "bad\x00note", user_id=agent_id)
    assert (await db.get(Lead, lead_id, populate_existing=True)).notes == before


async def test_a_call_attempt_past_the_counter_limit_is_a_conflict(
    db: AsyncSession, lead: Lead, agent: User
) -> None:
    lead_id, agent_id = lead.id, agent.id
    await LeadService.update_lead(db, lead_id, {"call_attempts": 2**31 - 1}, user_id=agent_id)
    with pytest.raises(ConflictException):
        await LeadService.record_call_attempt(db, lead_id, user_id=agent_id)
    assert (await db.get(Lead, lead_id, populate_existing=True)).call_attempts == 2**31 - 1
