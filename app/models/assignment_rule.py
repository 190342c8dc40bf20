"""`AssignmentRule`: who a new lead goes to when nobody names an assignee (issue 17).

The rule's turn (`last_position`, the place in `agent_ids` of the agent who got the last lead)
is a column, not process memory: every app process behind one database takes its turn from the
same row, locked for the length of the transaction that creates the lead, so concurrent leads
over several workers still go round in order.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import JSON, Integer, String, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base
from app.models.types import UTCDateTime

RULE_NAME_MAX_LENGTH = 100
RULE_MAX_AGENTS = 50


class AssignmentStrategy(StrEnum):
    ROUND_ROBIN = "round_robin"  # the listed active agents in turn
    LEAST_OPEN = "least_open"  # the listed active agent with the fewest open leads, ties by id
    FIXED = "fixed"  # always the one listed agent


class AssignmentRule(Base):
    __tablename__ = "assignment_rules"
    __table_args__ = ({"sqlite_autoincrement": True},)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(RULE_NAME_MAX_LENGTH), unique=True)
    strategy: Mapped[str] = mapped_column(String(20))  # an AssignmentStrategy value
    # User ids, in the order round robin visits them.
    agent_ids: Mapped[list[int]] = mapped_column(
        JSON().with_variant(postgresql.JSONB(), "postgresql")
    )
    # Where in `agent_ids` the last lead went (-1: none yet).
    last_position: Mapped[int] = mapped_column(Integer, server_default=text("-1"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())

    def __repr__(self) -> str:
        return f"<AssignmentRule {self.id} {self.name!r} {self.strategy}>"
