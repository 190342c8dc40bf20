"""A lead's score explained (`GET /leads/{id}/score`, issue 17)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class ScoreFactorRead(BaseModel):
    """One line of the points table that applies to the lead."""

    factor: Literal["source", "company", "business_email", "high_value_tag"] = Field(
        description="Which rule."
    )
    value: str | None = Field(
        description="What it applied to: the source, the email's domain or the tag; null for "
        "the company."
    )
    points: int = Field(description="The points it adds.")


class LeadScore(BaseModel):
    """Why a lead has its score."""

    score: int = Field(description="The lead's score as stored (0-100).")
    is_manual: bool = Field(
        description="Set by hand: then `factors` explain the automatic score it replaces."
    )
    automatic_score: int = Field(
        description="The score the rules give: `base` plus every factor's points, at most 100. "
        "Equal to `score` unless the score is manual."
    )
    version: str = Field(
        description="Names the rules in force: a hash of the points table and the settings it "
        "reads (FREE_EMAIL_DOMAINS, HIGH_VALUE_TAGS)."
    )
    base: int = Field(description="The points every lead starts with.")
    factors: list[ScoreFactorRead] = Field(
        description="The rules that apply, in the table's order; the source always."
    )
    capped: bool = Field(description="Whether base and factors add up to more than 100.")
