"""LeadService.bulk_update_status and assign_leads: all-or-nothing, noted, and a fixed number of
SQL statements whatever the number of ids."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Lead, LeadStatus, User
from app.services import LeadService
from app.services.exceptions import (
    ConflictException,
    InactiveUserException,
    LeadNotFoundException,
    PermissionDeniedException,
    UserNotFoundException,
    ValidationException,
)
from tests.helpers import LeadFactory, insert_leads, sql_statements, stamp

# ------------------------------------------------------------------------------------ helpers


async def snapshot(db: AsyncSession, ids: list[int]) -> list[tuple[Any, ...]]:
    """Everything a bulk call may change, read straight from the database in id order."""
    rows = await db.execute(
        select(
            Lead.id,
            Lead.status,
            Lead.assigned_to,
            Lead.notes,
            Lead.updated_at,
            Lead.archived_at,
        )
        .where(Lead.id.in_(ids))
        .order_by(Lead.id)
    )
    return [tuple(row) for row in rows]


async def stored(db: AsyncSession, lead_id: int) -> Any:
    row = await db.execute(
        select(Lead.status, Lead.assigned_to, Lead.notes, Lead.updated_at).where(Lead.id == lead_id)
    )
    return row.one()


def mentions(message: str, lead_id: int) -> bool:
    return re.search(rf"(?<!\d){lead_id}(?!\d)", message) is not None


@pytest.fixture
async def agent_leads(make_lead: LeadFactory, agent: User) -> list[int]:
    """Three leads of the agent: NEW, CONTACTED and CALLBACK."""
    statuses = (LeadStatus.NEW, LeadStatus.CONTACTED, LeadStatus.CALLBACK)
    return [(await make_lead(owner=agent, status=s)).id for s in statuses]


# ========================================================================= bulk_update_status


async def test_bulk_status_sets_the_status_and_returns_leads_in_id_order(
    db: AsyncSession, agent_leads: list[int], superuser: User
) -> None:
    leads = await LeadService.bulk_update_status(
        db, list(reversed(agent_leads)), LeadStatus.QUALIFIED, superuser.id
    )

    assert [lead.id for lead in leads] == agent_leads
    assert [lead.status for lead in leads] == [LeadStatus.QUALIFIED] * 3
    for lead_id in agent_leads:
        assert (await stored(db, lead_id)).status == LeadStatus.QUALIFIED


async def test_bulk_status_appends_one_line_per_lead_naming_its_old_status(
    db: AsyncSession, agent_leads: list[int], superuser: User
) -> None:
    before = {row[0]: row[3] for row in await snapshot(db, agent_leads)}

    leads = await LeadService.bulk_update_status(db, agent_leads, LeadStatus.WON, superuser.id)

    old = dict(zip(agent_leads, ["NEW", "CONTACTED", "CALLBACK"], strict=True))
    for lead in leads:
        line = f"{stamp(lead.updated_at)} user {superuser.id}: Status {old[lead.id]} → WON (bulk)"
        assert lead.notes == f"{before[lead.id]}\n{line}"
        assert (await stored(db, lead.id)).notes == lead.notes


async def test_bulk_status_with_note_appends_the_note_as_a_second_line(
    db: AsyncSession, agent_leads: list[int], superuser: User
) -> None:
    before = {row[0]: row[3] for row in await snapshot(db, agent_leads)}

    leads = await LeadService.bulk_update_status(
        db, agent_leads[:2], LeadStatus.PROPOSAL, superuser.id, note="Spring campaign"
    )

    old = dict(zip(agent_leads[:2], ["NEW", "CONTACTED"], strict=True))
    for lead in leads:
        at = stamp(lead.updated_at)
        assert lead.notes == (
            f"{before[lead.id]}\n"
            f"{at} user {superuser.id}: Status {old[lead.id]} → PROPOSAL (bulk)\n"
            f"{at} user {superuser.id}: Spring campaign"
        )


async def test_bulk_status_on_lead_without_notes_writes_just_the_line(
    db: AsyncSession, make_lead: LeadFactory, superuser: User
) -> None:
    lead = await make_lead()
    lead.notes = None
    await db.commit()

    [updated] = await LeadService.bulk_update_status(
        db, [lead.id], LeadStatus.CONTACTED, superuser.id
    )

    expected = f"{stamp(updated.updated_at)} user {superuser.id}: Status NEW → CONTACTED (bulk)"
    assert updated.notes == expected


async def test_bulk_status_sets_updated_at_to_now_on_every_lead(
    db: AsyncSession, agent_leads: list[int], superuser: User
) -> None:
    old = datetime(2020, 1, 1, tzinfo=UTC)
    for lead in await db.scalars(select(Lead).where(Lead.id.in_(agent_leads))):
        lead.updated_at = old
    await db.commit()

    started = datetime.now(UTC)
    await LeadService.bulk_update_status(db, agent_leads, LeadStatus.QUALIFIED, superuser.id)
    finished = datetime.now(UTC)

    stamps = {row[4] for row in await snapshot(db, agent_leads)}
    assert len(stamps) == 1
    assert started <= stamps.pop() <= finished


async def test_bulk_status_accepts_status_as_string(
    db: AsyncSession, agent_leads: list[int], superuser: User
) -> None:
    leads = await LeadService.bulk_update_status(db, agent_leads, "NEGOTIATION", superuser.id)

    assert [lead.status for lead in leads] == [LeadStatus.NEGOTIATION] * 3


async def test_agent_may_bulk_update_their_own_leads(
    db: AsyncSession, agent_leads: list[int], agent: User
) -> None:
    leads = await LeadService.bulk_update_status(db, agent_leads, LeadStatus.LOST, agent.id)

    assert [lead.status for lead in leads] == [LeadStatus.LOST] * 3
    assert all(
        lead.notes.endswith(f"user {agent.id}: Status {old} → LOST (bulk)")
        for lead, old in zip(leads, ["NEW", "CONTACTED", "CALLBACK"], strict=True)
    )


async def test_bulk_status_with_a_missing_id_changes_nothing_and_names_it(
    db: AsyncSession, agent_leads: list[int], superuser: User
) -> None:
    before = await snapshot(db, agent_leads)
    missing = [max(agent_leads) + 100, max(agent_leads) + 7]
    superuser_id = superuser.id

    with pytest.raises(LeadNotFoundException) as caught:
        await LeadService.bulk_update_status(
            db, [*agent_leads, *missing], LeadStatus.WON, superuser_id
        )

    assert caught.value.lead_ids == sorted(missing)
    assert all(mentions(str(caught.value), i) for i in missing)
    assert await snapshot(db, agent_leads) == before


async def test_agent_bulk_status_including_someone_elses_lead_changes_nothing(
    db: AsyncSession,
    agent_leads: list[int],
    make_lead: LeadFactory,
    agent: User,
    other_agent: User,
) -> None:
    foreign = [(await make_lead(owner=other_agent)).id, (await make_lead()).id]
    everything = [*agent_leads, *foreign]
    before = await snapshot(db, everything)
    agent_id = agent.id

    with pytest.raises(LeadNotFoundException) as caught:
        await LeadService.bulk_update_status(db, everything, LeadStatus.WON, agent_id)

    assert caught.value.lead_ids == sorted(foreign)
    assert all(mentions(str(caught.value), i) for i in foreign)
    assert await snapshot(db, everything) == before


async def test_bulk_status_including_an_archived_lead_conflicts_and_changes_nothing(
    db: AsyncSession, agent_leads: list[int], make_lead: LeadFactory, superuser: User
) -> None:
    archived = (await make_lead()).id
    await LeadService.delete_lead(db, archived, superuser.id)
    everything = [*agent_leads, archived]
    before = await snapshot(db, everything)
    superuser_id = superuser.id

    with pytest.raises(ConflictException) as caught:
        await LeadService.bulk_update_status(db, everything, LeadStatus.WON, superuser_id)

    assert mentions(str(caught.value), archived)
    assert await snapshot(db, everything) == before


async def test_bulk_status_with_unknown_status_is_refused_and_changes_nothing(
    db: AsyncSession, agent_leads: list[int], superuser: User
) -> None:
    before = await snapshot(db, agent_leads)
    superuser_id = superuser.id

    with pytest.raises(ValidationException) as caught:
        await LeadService.bulk_update_status(db, agent_leads, "FINISHED", superuser_id)

    assert caught.value.field == "status"
    assert await snapshot(db, agent_leads) == before


def _bad_id_lists(ids: list[int]) -> dict[str, Any]:
    return {
        "duplicate": [ids[0], ids[1], ids[0]],
        "empty": [],
        "too-many": list(range(1, 10_002)),
        "string-id": [ids[0], str(ids[1])],
        "float-id": [ids[0], float(ids[1])],
        "bool-id": [ids[0], True],
        "none-id": [ids[0], None],
        "not-a-list": str(ids[0]),
    }


BAD_ID_CASES = list(_bad_id_lists([1, 2]))


@pytest.mark.parametrize("case", BAD_ID_CASES)
async def test_bulk_status_refuses_a_bad_id_list_and_changes_nothing(
    db: AsyncSession, agent_leads: list[int], superuser: User, case: str
) -> None:
    before = await snapshot(db, agent_leads)
    superuser_id = superuser.id

    with pytest.raises(ValidationException) as caught:
        await LeadService.bulk_update_status(
            db, _bad_id_lists(agent_leads)[case], LeadStatus.WON, superuser_id
        )

    assert caught.value.field == "lead_ids"
    assert await snapshot(db, agent_leads) == before


async def test_bulk_status_names_the_repeated_ids(
    db: AsyncSession, agent_leads: list[int], superuser: User
) -> None:
    a, b, c = agent_leads
    with pytest.raises(ValidationException) as caught:
        await LeadService.bulk_update_status(db, [c, a, b, c, a], LeadStatus.WON, superuser.id)

    assert mentions(str(caught.value), a)
    assert mentions(str(caught.value), c)
    assert not mentions(str(caught.value), b)


async def test_bulk_status_by_inactive_user_is_refused_and_changes_nothing(
    db: AsyncSession, agent_leads: list[int], inactive_user: User
) -> None:
    before = await snapshot(db, agent_leads)
    inactive_id = inactive_user.id

    with pytest.raises(InactiveUserException):
        await LeadService.bulk_update_status(db, agent_leads, LeadStatus.WON, inactive_id)

    assert await snapshot(db, agent_leads) == before


async def test_bulk_status_by_unknown_user_is_refused_and_changes_nothing(
    db: AsyncSession, agent_leads: list[int]
) -> None:
    before = await snapshot(db, agent_leads)

    with pytest.raises(UserNotFoundException):
        await LeadService.bulk_update_status(db, agent_leads, LeadStatus.WON, 987654)

    assert await snapshot(db, agent_leads) == before


async def test_bulk_status_runs_the_same_number_of_statements_for_5_or_200_ids(
    db: AsyncSession, superuser: User
) -> None:
    few = await insert_leads(db, 5, prefix="few")
    many = await insert_leads(db, 200, prefix="many")

    async with sql_statements(db) as for_few:
        await LeadService.bulk_update_status(db, few, LeadStatus.CONTACTED, superuser.id)
    async with sql_statements(db) as for_many:
        await LeadService.bulk_update_status(db, many, LeadStatus.CONTACTED, superuser.id)

    assert len(for_few) > 0
    assert len(for_many) == len(for_few), (for_few, for_many)


async def test_bulk_status_handles_10000_ids_in_one_call(db: AsyncSession, superuser: User) -> None:
    ids = await insert_leads(db, 10_000, prefix="big")
    assert len(ids) == 10_000

    leads = await LeadService.bulk_update_status(db, ids, LeadStatus.QUALIFIED, superuser.id)

    assert [lead.id for lead in leads] == ids
    qualified = await db.scalar(
        select(func.count()).select_from(Lead).where(Lead.status == LeadStatus.QUALIFIED)
    )
    assert qualified == 10_000
    sample = await stored(db, ids[-1])
    assert sample.notes == (
        f"seed 9999\n{stamp(sample.updated_at)} user {superuser.id}: Status NEW → QUALIFIED (bulk)"
    )


# =============================================================================== assign_leads


async def test_assign_leads_sets_the_agent_and_returns_leads_in_id_order(
    db: AsyncSession, make_lead: LeadFactory, agent: User, other_agent: User, superuser: User
) -> None:
    ids = [(await make_lead(owner=agent)).id, (await make_lead()).id]

    leads = await LeadService.assign_leads(db, list(reversed(ids)), other_agent.id, superuser.id)

    assert [lead.id for lead in leads] == ids
    assert [lead.assigned_to for lead in leads] == [other_agent.id] * 2
    assert [lead.assignee.id for lead in leads] == [other_agent.id] * 2
    for lead_id in ids:
        assert (await stored(db, lead_id)).assigned_to == other_agent.id


async def test_assign_leads_notes_the_previous_owner_or_unassigned(
    db: AsyncSession, make_lead: LeadFactory, agent: User, other_agent: User, superuser: User
) -> None:
    reassigned = await make_lead(owner=agent)
    unassigned = await make_lead()
    before = {reassigned.id: reassigned.notes, unassigned.id: unassigned.notes}

    leads = await LeadService.assign_leads(
        db, [reassigned.id, unassigned.id], other_agent.id, superuser.id
    )

    was = {reassigned.id: f"user {agent.id}", unassigned.id: "unassigned"}
    for lead in leads:
        line = (
            f"{stamp(lead.updated_at)} user {superuser.id}: "
            f"Assigned to user {other_agent.id} (was {was[lead.id]})"
        )
        assert lead.notes == f"{before[lead.id]}\n{line}"
        assert (await stored(db, lead.id)).notes == lead.notes


async def test_assign_leads_sets_updated_at_to_now(
    db: AsyncSession, make_lead: LeadFactory, agent: User, superuser: User
) -> None:
    ids = [(await make_lead()).id for _ in range(2)]
    for lead in await db.scalars(select(Lead).where(Lead.id.in_(ids))):
        lead.updated_at = datetime(2020, 1, 1, tzinfo=UTC)
    await db.commit()

    started = datetime.now(UTC)
    await LeadService.assign_leads(db, ids, agent.id, superuser.id)
    finished = datetime.now(UTC)

    stamps = {row[4] for row in await snapshot(db, ids)}
    assert len(stamps) == 1
    assert started <= stamps.pop() <= finished


async def test_agent_may_not_assign_leads(
    db: AsyncSession, agent_leads: list[int], agent: User, other_agent: User
) -> None:
    before = await snapshot(db, agent_leads)
    agent_id, other_id = agent.id, other_agent.id

    with pytest.raises(PermissionDeniedException):
        await LeadService.assign_leads(db, agent_leads, other_id, agent_id)

    assert await snapshot(db, agent_leads) == before


async def test_assign_leads_to_unknown_agent_is_refused_and_changes_nothing(
    db: AsyncSession, agent_leads: list[int], superuser: User
) -> None:
    before = await snapshot(db, agent_leads)
    superuser_id = superuser.id

    with pytest.raises(UserNotFoundException):
        await LeadService.assign_leads(db, agent_leads, 987654, superuser_id)

    assert await snapshot(db, agent_leads) == before


async def test_assign_leads_to_inactive_agent_is_refused_and_changes_nothing(
    db: AsyncSession, agent_leads: list[int], superuser: User, inactive_user: User
) -> None:
    before = await snapshot(db, agent_leads)
    superuser_id, inactive_id = superuser.id, inactive_user.id

    with pytest.raises(InactiveUserException):
        await LeadService.assign_leads(db, agent_leads, inactive_id, superuser_id)

    assert await snapshot(db, agent_leads) == before


async def test_assign_leads_by_inactive_superuser_is_refused(
    db: AsyncSession, agent_leads: list[int], make_user: Any, other_agent: User
) -> None:
    retired_boss = await make_user(superuser=True, active=False)
    before = await snapshot(db, agent_leads)
    boss_id, other_id = retired_boss.id, other_agent.id

    with pytest.raises(InactiveUserException):
        await LeadService.assign_leads(db, agent_leads, other_id, boss_id)

    assert await snapshot(db, agent_leads) == before


async def test_assign_leads_with_a_missing_id_changes_nothing_and_names_it(
    db: AsyncSession, agent_leads: list[int], superuser: User, other_agent: User
) -> None:
    before = await snapshot(db, agent_leads)
    missing = max(agent_leads) + 50
    superuser_id, other_id = superuser.id, other_agent.id

    with pytest.raises(LeadNotFoundException) as caught:
        await LeadService.assign_leads(db, [missing, *agent_leads], other_id, superuser_id)

    assert caught.value.lead_ids == [missing]
    assert mentions(str(caught.value), missing)
    assert await snapshot(db, agent_leads) == before


async def test_assign_leads_including_an_archived_lead_conflicts_and_changes_nothing(
    db: AsyncSession,
    agent_leads: list[int],
    make_lead: LeadFactory,
    superuser: User,
    other_agent: User,
) -> None:
    archived = (await make_lead()).id
    await LeadService.delete_lead(db, archived, superuser.id)
    everything = [*agent_leads, archived]
    before = await snapshot(db, everything)
    superuser_id, other_id = superuser.id, other_agent.id

    with pytest.raises(ConflictException) as caught:
        await LeadService.assign_leads(db, everything, other_id, superuser_id)

    assert mentions(str(caught.value), archived)
    assert await snapshot(db, everything) == before


@pytest.mark.parametrize("case", BAD_ID_CASES)
async def test_assign_leads_refuses_a_bad_id_list_and_changes_nothing(
    db: AsyncSession, agent_leads: list[int], superuser: User, other_agent: User, case: str
) -> None:
    before = await snapshot(db, agent_leads)
    superuser_id, other_id = superuser.id, other_agent.id

    with pytest.raises(ValidationException) as caught:
        await LeadService.assign_leads(db, _bad_id_lists(agent_leads)[case], other_id, superuser_id)

    assert caught.value.field == "lead_ids"
    assert await snapshot(db, agent_leads) == before


async def test_assign_leads_runs_the_same_number_of_statements_for_5_or_200_ids(
    db: AsyncSession, superuser: User, agent: User, other_agent: User
) -> None:
    few = await insert_leads(db, 5, prefix="few", owner_id=agent.id)
    many = await insert_leads(db, 200, prefix="many", owner_id=agent.id)

    async with sql_statements(db) as for_few:
        await LeadService.assign_leads(db, few, other_agent.id, superuser.id)
    async with sql_statements(db) as for_many:
        await LeadService.assign_leads(db, many, other_agent.id, superuser.id)

    assert len(for_few) > 0
    assert len(for_many) == len(for_few), (for_few, for_many)


async def test_assign_leads_handles_10000_ids_in_one_call(
    db: AsyncSession, superuser: User, agent: User
) -> None:
    ids = await insert_leads(db, 10_000, prefix="big")

    leads = await LeadService.assign_leads(db, ids, agent.id, superuser.id)

    assert [lead.id for lead in leads] == ids
    mine = await db.scalar(
        select(func.count()).select_from(Lead).where(Lead.assigned_to == agent.id)
    )
    assert mine == 10_000
    sample = await stored(db, ids[0])
    assert sample.notes == (
        f"seed 0\n{stamp(sample.updated_at)} user {superuser.id}: "
        f"Assigned to user {agent.id} (was unassigned)"
    )


# ================================================================== ids_only, one UPDATE per call


def is_update(statement: str) -> bool:
    return statement.lstrip().upper().startswith("UPDATE")


def reads_leads(statement: str) -> bool:
    return statement.lstrip().upper().startswith("SELECT") and "FROM leads" in statement


async def test_bulk_status_ids_only_returns_the_ids_and_changes_the_rows_the_same_way(
    db: AsyncSession, make_lead: LeadFactory, agent: User
) -> None:
    statuses = (LeadStatus.NEW, LeadStatus.CONTACTED, LeadStatus.CALLBACK)
    full = [(await make_lead(owner=agent, status=s)).id for s in statuses]
    short = [(await make_lead(owner=agent, status=s)).id for s in statuses]
    bystander = (await make_lead(owner=agent)).id
    before = {row[0]: row for row in await snapshot(db, [*full, *short, bystander])}

    leads = await LeadService.bulk_update_status(
        db, list(reversed(full)), LeadStatus.PROPOSAL, agent.id, note="Spring campaign"
    )
    ids = await LeadService.bulk_update_status(
        db, list(reversed(short)), "PROPOSAL", agent.id, note="Spring campaign", ids_only=True
    )

    assert ids == short
    assert all(type(i) is int for i in ids)
    after = {row[0]: row for row in await snapshot(db, [*full, *short, bystander])}
    assert after[bystander] == before[bystander]
    for lead_ids in (full, short):
        for lead_id, old in zip(lead_ids, statuses, strict=True):
            _, status, assigned_to, notes, updated_at, archived_at = after[lead_id]
            at = stamp(updated_at)
            assert (status, assigned_to, archived_at) == (LeadStatus.PROPOSAL, agent.id, None)
            assert notes == (
                f"{before[lead_id][3]}\n"
                f"{at} user {agent.id}: Status {old.value} → PROPOSAL (bulk)\n"
                f"{at} user {agent.id}: Spring campaign"
            )
    assert [lead.notes for lead in leads] == [after[i][3] for i in full]


async def test_assign_leads_ids_only_returns_the_ids_and_changes_the_rows_the_same_way(
    db: AsyncSession, make_lead: LeadFactory, agent: User, other_agent: User, superuser: User
) -> None:
    full = [(await make_lead(owner=agent)).id, (await make_lead()).id]
    short = [(await make_lead(owner=agent)).id, (await make_lead()).id]
    before = {row[0]: row for row in await snapshot(db, [*full, *short])}

    await LeadService.assign_leads(db, list(reversed(full)), other_agent.id, superuser.id)
    ids = await LeadService.assign_leads(
        db, list(reversed(short)), other_agent.id, superuser.id, ids_only=True
    )

    assert ids == short
    after = {row[0]: row for row in await snapshot(db, [*full, *short])}
    for lead_ids in (full, short):
        for lead_id, was in zip(lead_ids, [f"user {agent.id}", "unassigned"], strict=True):
            _, status, assigned_to, notes, updated_at, _ = after[lead_id]
            assert (status, assigned_to) == (before[lead_id][1], other_agent.id)
            assert notes == (
                f"{before[lead_id][3]}\n{stamp(updated_at)} user {superuser.id}: "
                f"Assigned to user {other_agent.id} (was {was})"
            )


@pytest.mark.parametrize("ids_only", [False, True])
async def test_bulk_status_refusals_name_unseen_ids_before_archived_ones(
    db: AsyncSession,
    agent_leads: list[int],
    make_lead: LeadFactory,
    agent: User,
    other_agent: User,
    superuser: User,
    ids_only: bool,
) -> None:
    """Missing ids and (for an agent) someone else's leads win over archived ones. The first
    two are one kind, "not found", so the answer cannot tell an agent which ids are taken;
    each error names only its own kind, in id order."""
    archived = (await make_lead(owner=agent)).id
    await LeadService.delete_lead(db, archived, superuser.id)
    foreign = [(await make_lead(owner=other_agent)).id, (await make_lead()).id]
    missing = [max(foreign) + 500, max(foreign) + 77]
    everything = [*agent_leads, archived, *foreign]
    before = await snapshot(db, everything)
    agent_id = agent.id

    async def call(lead_ids: list[int]) -> None:
        await LeadService.bulk_update_status(
            db, lead_ids, LeadStatus.WON, agent_id, ids_only=ids_only
        )

    with pytest.raises(LeadNotFoundException) as not_found:
        await call([*missing, *everything])
    with pytest.raises(LeadNotFoundException) as foreign_not_found:
        await call(list(reversed(everything)))
    with pytest.raises(ConflictException) as conflict:
        await call([archived, *agent_leads])

    assert not_found.value.lead_ids == sorted([*missing, *foreign])
    assert foreign_not_found.value.lead_ids == sorted(foreign)
    assert str(foreign_not_found.value) == f"Leads not found: {foreign[0]}, {foreign[1]}."
    assert str(conflict.value) == f"Leads archived, restore them first: {archived}."
    assert await snapshot(db, everything) == before


@pytest.mark.parametrize("ids_only", [False, True])
async def test_a_refusal_after_the_update_changed_the_rest_changes_nothing(
    db: AsyncSession, make_lead: LeadFactory, superuser: User, other_agent: User, ids_only: bool
) -> None:
    """10,000 ids, the last one archived: the UPDATE changes the 9,999 others before the check
    finds it, and the refusal rolls them back."""
    archived = (await make_lead()).id
    await LeadService.delete_lead(db, archived, superuser.id)
    ids = [*(await insert_leads(db, 9_999, prefix="mixed")), archived]
    before = await snapshot(db, ids)
    superuser_id, other_id = superuser.id, other_agent.id

    with pytest.raises(ConflictException) as status_refused:
        await LeadService.bulk_update_status(
            db, ids, LeadStatus.WON, superuser_id, ids_only=ids_only
        )
    with pytest.raises(ConflictException) as assign_refused:
        await LeadService.assign_leads(db, ids, other_id, superuser_id, ids_only=ids_only)

    assert mentions(str(status_refused.value), archived)
    assert mentions(str(assign_refused.value), archived)
    assert await snapshot(db, ids) == before


@pytest.mark.parametrize("ids_only", [False, True])
async def test_bulk_status_sends_the_same_statements_for_5_or_10000_ids(
    db: AsyncSession, agent: User, ids_only: bool
) -> None:
    """One UPDATE does the work however many ids there are; with `ids_only` nothing reads the
    leads. On PostgreSQL the ids are one array parameter, so even the UPDATE's text is the same
    for 5 ids and 10,000."""
    few = await insert_leads(db, 5, prefix="few", owner_id=agent.id)
    many = await insert_leads(db, 10_000, prefix="many", owner_id=agent.id)

    async with sql_statements(db) as for_few:
        await LeadService.bulk_update_status(
            db, few, LeadStatus.CONTACTED, agent.id, note="Hi", ids_only=ids_only
        )
    async with sql_statements(db) as for_many:
        await LeadService.bulk_update_status(
            db, many, LeadStatus.CONTACTED, agent.id, note="Hi", ids_only=ids_only
        )

    assert len(for_many) == len(for_few), (for_few, for_many)
    assert sum(map(is_update, for_many)) == 1, for_many
    assert any(map(reads_leads, for_many)) is not ids_only, for_many
    if db.get_bind().dialect.name == "postgresql":
        assert list(filter(is_update, for_many)) == list(filter(is_update, for_few))
    contacted = await db.scalar(
        select(func.count())
        .select_from(Lead)
        .where(Lead.id.in_(many), Lead.status == LeadStatus.CONTACTED)
    )
    assert contacted == 10_000


async def test_assign_leads_sends_the_same_statements_for_5_or_10000_ids(
    db: AsyncSession, superuser: User, agent: User
) -> None:
    few = await insert_leads(db, 5, prefix="few")
    many = await insert_leads(db, 10_000, prefix="many")

    async with sql_statements(db) as for_few:
        await LeadService.assign_leads(db, few, agent.id, superuser.id, ids_only=True)
    async with sql_statements(db) as for_many:
        ids = await LeadService.assign_leads(db, many, agent.id, superuser.id, ids_only=True)

    assert ids == many
    assert len(for_many) == len(for_few), (for_few, for_many)
    assert sum(map(is_update, for_many)) == 1, for_many
    assert not any(map(reads_leads, for_many)), for_many
    if db.get_bind().dialect.name == "postgresql":
        assert list(filter(is_update, for_many)) == list(filter(is_update, for_few))
