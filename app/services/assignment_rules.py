"""`AssignmentRuleService`: rules that pick the agent of a new lead (superusers manage them),
and `pick_assignee`, which applies one inside the transaction that creates the lead.

The rule's row is locked (`SELECT ... FOR UPDATE`; on SQLite the transaction already holds the
database's write lock) before its agents are looked at, and stays locked until the lead is
committed. So leads that arrive at once, through any number of app processes, take their
turns one after another: round robin's turn (`last_position`) is read and moved on by one
transaction at a time, and least_open counts the leads the previous one committed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import (
    CLOSED_STATUSES,
    AssignmentRule,
    AssignmentStrategy,
    CaptureForm,
    Lead,
    User,
)
from app.models.lead_stats import LeadStats
from app.models.types import utcnow
from app.services.base import load_by_id, require_superuser, transactional
from app.services.exceptions import (
    AssignmentRuleNotFoundException,
    ConflictException,
    DuplicateException,
    UserNotFoundException,
    ValidationException,
)

WHAT = "assignment rules"
UPDATABLE = frozenset({"name", "strategy", "agent_ids"})


@dataclass(frozen=True, slots=True)
class RuleView:
    """A rule and which of its listed users are active now (in list order)."""

    rule: AssignmentRule
    active_agent_ids: list[int]

    @property
    def status(self) -> str:
        return "active" if self.active_agent_ids else "no_active_agent"


class AssignmentRuleService:
    @staticmethod
    @transactional
    async def create(db: AsyncSession, data: Mapping[str, Any], *, acting_user_id: int) -> RuleView:
        await require_superuser(db, acting_user_id, WHAT)
        strategy = AssignmentStrategy(data["strategy"])
        agent_ids = list(data["agent_ids"])
        await _check_agents(db, strategy, agent_ids)
        await _check_name_free(db, data["name"])
        now = utcnow()
        rule = AssignmentRule(
            name=data["name"],
            strategy=strategy.value,
            agent_ids=agent_ids,
            last_position=-1,
            created_at=now,
            updated_at=now,
        )
        db.add(rule)
        await db.flush()
        return (await _views(db, [rule]))[0]

    @staticmethod
    @transactional
    async def list_rules(
        db: AsyncSession, *, acting_user_id: int, skip: int = 0, limit: int = 100
    ) -> tuple[list[RuleView], int]:
        await require_superuser(db, acting_user_id, WHAT)
        total = await db.scalar(select(func.count()).select_from(AssignmentRule))
        rules = await db.scalars(
            select(AssignmentRule).order_by(AssignmentRule.id).offset(skip).limit(limit)
        )
        return await _views(db, list(rules)), int(total or 0)

    @staticmethod
    @transactional
    async def get(db: AsyncSession, rule_id: int, *, acting_user_id: int) -> RuleView:
        await require_superuser(db, acting_user_id, WHAT)
        return (await _views(db, [await _load(db, rule_id)]))[0]

    @staticmethod
    @transactional
    async def update(
        db: AsyncSession, rule_id: int, data: Mapping[str, Any], *, acting_user_id: int
    ) -> RuleView:
        """A new agent list (or strategy) starts round robin again from its first agent."""
        await require_superuser(db, acting_user_id, WHAT)
        rule = await _load(db, rule_id, for_update=True)
        changes = {name: data[name] for name in UPDATABLE if name in data}
        strategy = AssignmentStrategy(changes.get("strategy", rule.strategy))
        agent_ids = list(changes.get("agent_ids", rule.agent_ids))
        if "strategy" in changes or "agent_ids" in changes:
            await _check_agents(db, strategy, agent_ids)
            if strategy.value != rule.strategy or agent_ids != rule.agent_ids:
                rule.last_position = -1
        if "name" in changes and changes["name"] != rule.name:
            await _check_name_free(db, changes["name"])
            rule.name = changes["name"]
        rule.strategy, rule.agent_ids = strategy.value, agent_ids
        rule.updated_at = utcnow()
        await db.flush()
        return (await _views(db, [rule]))[0]

    @staticmethod
    @transactional
    async def delete(db: AsyncSession, rule_id: int, *, acting_user_id: int) -> None:
        """Refused (409) while a capture form uses the rule: its leads would silently go
        unassigned."""
        await require_superuser(db, acting_user_id, WHAT)
        rule = await _load(db, rule_id, for_update=True)
        forms = list(
            await db.scalars(
                select(CaptureForm.id)
                .where(CaptureForm.assignment_rule_id == rule.id)
                .order_by(CaptureForm.id)
            )
        )
        if forms:
            listed = ", ".join(str(i) for i in forms)
            raise ConflictException(
                f"Assignment rule {rule.id} is used by capture forms {listed}; "
                "give them another rule (or none) first."
            )
        await db.delete(rule)


async def pick_assignee(db: AsyncSession, rule_id: int) -> int | None:
    """The agent the rule gives the next lead to, its turn taken (None: no listed agent is
    active). Locks the rule until the caller's transaction ends; call it in the transaction
    that stores the lead."""
    rule = await _load(db, rule_id, for_update=True)
    active = set(await _active_ids(db, rule.agent_ids))
    if rule.strategy == AssignmentStrategy.LEAST_OPEN:
        return await _least_open(db, [i for i in rule.agent_ids if i in active])
    if rule.strategy == AssignmentStrategy.FIXED:
        return rule.agent_ids[0] if rule.agent_ids[0] in active else None
    count = len(rule.agent_ids)
    for step in range(1, count + 1):
        position = (rule.last_position + step) % count
        if rule.agent_ids[position] in active:
            rule.last_position = position
            return rule.agent_ids[position]
    return None


async def assign_by_rule(db: AsyncSession, lead: Lead, rule_id: int) -> None:
    """Give the new `lead` to the rule's pick (`pick_assignee`), or note why nobody got it."""
    lead.assigned_to = await pick_assignee(db, rule_id)
    if lead.assigned_to is None:
        name = (await _load(db, rule_id)).name
        lead.add_note(
            f"Left unassigned: assignment rule {name} has no active agent", at=lead.created_at
        )


async def _least_open(db: AsyncSession, candidates: Sequence[int]) -> int | None:
    """Of `candidates`, the one with the fewest open live leads, ties to the lowest id: read
    from the statistics table (one row per assignee, status and source), not the leads."""
    if not candidates:
        return None
    open_counts = dict(
        (
            await db.execute(
                select(LeadStats.assignee_id, func.sum(LeadStats.lead_count))
                .where(
                    LeadStats.assignee_id.in_(candidates),
                    LeadStats.status.not_in([s.value for s in CLOSED_STATUSES]),
                )
                .group_by(LeadStats.assignee_id)
            )
        ).all()
    )
    return min(candidates, key=lambda agent: (int(open_counts.get(agent) or 0), agent))


async def _active_ids(db: AsyncSession, ids: Iterable[int]) -> list[int]:
    return list(
        await db.scalars(select(User.id).where(User.id.in_(list(ids)), User.is_active.is_(True)))
    )


async def _views(db: AsyncSession, rules: Sequence[AssignmentRule]) -> list[RuleView]:
    """Each rule with its active agents: one query for all of them."""
    listed = {agent for rule in rules for agent in rule.agent_ids}
    active = set(await _active_ids(db, listed)) if listed else set()
    return [RuleView(rule, [i for i in rule.agent_ids if i in active]) for rule in rules]


async def _check_agents(db: AsyncSession, strategy: AssignmentStrategy, ids: list[int]) -> None:
    if strategy is AssignmentStrategy.FIXED and len(ids) != 1:
        raise ValidationException.at("agent_ids", "must list exactly one user for fixed")
    found = set(await db.scalars(select(User.id).where(User.id.in_(ids))))
    missing = [i for i in ids if i not in found]
    if missing:  # as for any id a body names (`assigned_to`, `agent_user_id`): 404
        raise UserNotFoundException(missing[0], role="Agent")


async def _check_name_free(db: AsyncSession, name: str) -> None:
    taken = await db.scalar(select(AssignmentRule.id).where(AssignmentRule.name == name))
    if taken is not None:
        raise DuplicateException(f"An assignment rule named {name!r} exists already ({taken}).")


async def _load(db: AsyncSession, rule_id: int, *, for_update: bool = False) -> AssignmentRule:
    return await load_by_id(
        db, AssignmentRule, rule_id, AssignmentRuleNotFoundException, for_update=for_update
    )
