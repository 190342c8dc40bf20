"""Duplicate candidates (`GET /leads/{id}/duplicates`) and merges (issue 16)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from app.schemas.common import BodyId, RequestBody
from app.schemas.lead import LeadRead
from app.services.lead_merges import MAX_MERGED, MERGEABLE_FIELDS


class DuplicateCandidate(BaseModel):
    """A live lead that may be the same person as the one asked about."""

    lead: LeadRead = Field(description="The candidate.")
    score: float = Field(
        ge=0,
        le=1,
        description="How likely the two are one person, 0-1: 1 - (1 - 0.9 if the email is "
        "shared) x (1 - 0.8 if the phone is) x (1 - the names' similarity).",
    )
    matched_on: list[Literal["email", "phone", "name+company"]] = Field(
        description="What the two share: the email (case aside), the phone, or first name, "
        "last name and company alike (pg_trgm similarity of 0.3 or more, case and accents "
        "aside)."
    )


class DuplicateCandidates(BaseModel):
    """A lead's likely duplicates, best first."""

    items: list[DuplicateCandidate] = Field(
        description="At most 20, highest score first (ties: lowest id first)."
    )


MergeableField = Literal[MERGEABLE_FIELDS]  # type: ignore[valid-type]


class LeadMerge(RequestBody):
    """Which leads go into this one, and where fields come from."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"merge_ids": [102, 103], "fields": {"email": 103}}]}
    )

    merge_ids: list[BodyId] = Field(
        min_length=1,
        max_length=MAX_MERGED,
        description="The leads to fold into this one (not this one, none twice): archived "
        "afterwards, with `merged_into_id` set.",
    )
    fields: dict[MergeableField, BodyId] = Field(
        default_factory=dict,
        description="Field -> the id (this lead's or one of `merge_ids`) whose value this lead "
        "takes. A field not named keeps this lead's value, or if it has none takes the first "
        "one found in `merge_ids`' order. Tags are always united, call attempts added, the "
        "latest contact date kept and the notes interleaved in time order.",
    )


class LeadMergeResult(BaseModel):
    """The lead that remains, and the leads merged into it (or brought back by an unmerge)."""

    lead: LeadRead = Field(description="The lead merged into, as it is now.")
    merged: list[LeadRead] = Field(
        description="The merged leads as they are now: archived with `merged_into_id` after a "
        "merge, live again after an unmerge."
    )
