"""A lead's score explained (issue 17): the points table's lines that apply to it, the rules'
version, and whether the score was set by hand (app/services/scoring.py holds the rules)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.services.base import get_acting_user, transactional
from app.services.lead_service import visible_lead
from app.services.scoring import explain_lead_score, scoring_version


class LeadScores:
    @staticmethod
    @transactional
    async def explain(db: AsyncSession, lead_id: int, user_id: int) -> dict[str, Any]:
        """`{score, is_manual, automatic_score, version, base, factors, capped}` for a lead
        the user may see (else LeadNotFoundException)."""
        user = await get_acting_user(db, user_id)
        lead = await visible_lead(db, lead_id, user)
        explained = explain_lead_score(
            source=lead.source, company=lead.company, email=lead.email, tags=lead.tags
        )
        return {
            "score": lead.lead_score,
            "is_manual": lead.score_is_manual,
            "automatic_score": explained.score,
            "version": scoring_version(),
            "base": explained.base,
            "factors": [asdict(factor) for factor in explained.factors],
            "capped": explained.capped,
        }
