"""Assignment rule bodies (issue 17): a rule as made, changed and shown, with whether it can
assign at all (`status`)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import MISSING, AfterValidator, BaseModel, ConfigDict, Field

from app.models.assignment_rule import RULE_MAX_AGENTS, RULE_NAME_MAX_LENGTH, AssignmentStrategy
from app.models.validation import NOT_BLANK_PATTERN
from app.schemas.common import BodyId, RequestBody

RuleName = Annotated[
    str, Field(min_length=1, max_length=RULE_NAME_MAX_LENGTH, pattern=NOT_BLANK_PATTERN)
]
STRATEGY_RULE = (
    "round_robin: the listed agents in turn, skipping inactive ones; least_open: the listed "
    "active agent with the fewest open leads (not WON or LOST, not archived), ties to the "
    "lowest id; fixed: always the one listed agent."
)
AGENTS_RULE = (
    "Existing users (404 otherwise), distinct, in the order round robin visits them; fixed "
    "takes exactly one (422 otherwise)."
)


def _distinct_ids(ids: list[int]) -> list[int]:
    if len(set(ids)) != len(ids):
        raise ValueError("must not list a user twice")
    return ids


AgentIds = Annotated[
    list[BodyId],
    Field(min_length=1, max_length=RULE_MAX_AGENTS, json_schema_extra={"uniqueItems": True}),
    AfterValidator(_distinct_ids),
]


class AssignmentRuleCreate(RequestBody):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"name": "Inbound", "strategy": "round_robin", "agent_ids": [2, 3, 4]}]
        },
    )

    name: RuleName = Field(description="Unique among the rules.")
    strategy: AssignmentStrategy = Field(description=STRATEGY_RULE)
    agent_ids: AgentIds = Field(description=AGENTS_RULE)


class AssignmentRuleUpdate(RequestBody):
    """The fields to change. A new `agent_ids` starts round robin again from its first agent."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"agent_ids": [2, 3, 4, 5]}]})

    name: RuleName | MISSING = Field(MISSING, description="Unique among the rules.")
    strategy: AssignmentStrategy | MISSING = Field(MISSING, description=STRATEGY_RULE)
    agent_ids: AgentIds | MISSING = Field(MISSING, description=AGENTS_RULE)


RuleStatus = Literal["active", "no_active_agent"]


class AssignmentRuleRead(BaseModel):
    id: int = Field(description="The rule's id.")
    name: str = Field(description="Its name.")
    strategy: AssignmentStrategy = Field(description=STRATEGY_RULE)
    agent_ids: list[int] = Field(description="The listed users, in round robin's order.")
    active_agent_ids: list[int] = Field(description="Those of them active now: who can get leads.")
    status: RuleStatus = Field(
        description="active; or no_active_agent: none of the listed users is active, so new "
        "leads it assigns stay unassigned."
    )
    created_at: datetime = Field(description="When it was made.")
    updated_at: datetime = Field(description="When it last changed.")


class AssignmentRulePage(BaseModel):
    items: list[AssignmentRuleRead] = Field(description="The rules of this page, by id.")
    total: int = Field(description="How many there are.")
    skip: int = Field(description="The `skip` asked for.")
    limit: int = Field(description="The `limit` asked for.")
