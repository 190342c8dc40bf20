"""Automatic lead scoring: a transparent points table a sales manager can read and argue with.

    base 50
    + source: REFERRAL 20, WEBSITE 15, FACEBOOK 10, INSTAGRAM 10, WHATSAPP 5, OTHER 0
    + 10 for a non-blank company
    + 10 for a business email (domain not in the free-mail list)
    + 15 when any tag is high-value
    capped at 100

The free-mail domains and high-value tags are settings (FREE_EMAIL_DOMAINS, HIGH_VALUE_TAGS).
"""

from __future__ import annotations

from collections.abc import Iterable

from app.config import Settings, get_settings
from app.models import LeadSource

BASE_SCORE = 50
SOURCE_POINTS: dict[LeadSource, int] = {
    LeadSource.REFERRAL: 20,
    LeadSource.WEBSITE: 15,
    LeadSource.FACEBOOK: 10,
    LeadSource.INSTAGRAM: 10,
    LeadSource.WHATSAPP: 5,
    LeadSource.OTHER: 0,
}
COMPANY_POINTS = 10
BUSINESS_EMAIL_POINTS = 10
HIGH_VALUE_TAG_POINTS = 15
MAX_SCORE = 100

# The fields the score depends on: a change to any of them re-scores an auto-scored lead.
SCORING_FIELDS = ("source", "company", "email", "tags")


def is_business_email(email: str | None, settings: Settings | None = None) -> bool:
    if not email or "@" not in email:
        return False
    domain = email.rsplit("@", 1)[1].strip().lower()
    return domain not in (settings or get_settings()).free_email_domains


def calculate_lead_score(
    *,
    source: LeadSource | None,
    company: str | None,
    email: str | None,
    tags: Iterable[str] = (),
    settings: Settings | None = None,
) -> int:
    settings = settings or get_settings()
    score = BASE_SCORE + SOURCE_POINTS.get(source or LeadSource.OTHER, 0)
    if company and company.strip():
        score += COMPANY_POINTS
    if is_business_email(email, settings):
        score += BUSINESS_EMAIL_POINTS
    if any(tag.strip().lower() in settings.high_value_tags for tag in tags):
        score += HIGH_VALUE_TAG_POINTS
    return min(score, MAX_SCORE)
