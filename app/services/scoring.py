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

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

import orjson

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


@dataclass(frozen=True, slots=True)
class ScoreFactor:
    """One line of the points table that applies to a lead."""

    factor: str  # source, company, business_email, high_value_tag
    points: int
    value: str | None = None  # what it applied to: the source, the email's domain, the tag


@dataclass(frozen=True, slots=True)
class ScoreExplanation:
    """The automatic score, line by line: BASE_SCORE plus every factor's points, then capped."""

    factors: tuple[ScoreFactor, ...]
    base: int = BASE_SCORE

    @property
    def uncapped(self) -> int:
        return self.base + sum(factor.points for factor in self.factors)

    @property
    def score(self) -> int:
        return min(self.uncapped, MAX_SCORE)

    @property
    def capped(self) -> bool:
        return self.uncapped > MAX_SCORE


def explain_lead_score(
    *,
    source: LeadSource | None,
    company: str | None,
    email: str | None,
    tags: Iterable[str] = (),
    settings: Settings | None = None,
) -> ScoreExplanation:
    """Which lines of the table apply, and their points: the one place the rules are applied
    (`calculate_lead_score` is its total)."""
    settings = settings or get_settings()
    source = source or LeadSource.OTHER
    factors = [ScoreFactor("source", SOURCE_POINTS.get(source, 0), source.value)]
    if company and company.strip():
        factors.append(ScoreFactor("company", COMPANY_POINTS))
    if is_business_email(email, settings):
        domain = (email or "").rsplit("@", 1)[1].strip().lower()
        factors.append(ScoreFactor("business_email", BUSINESS_EMAIL_POINTS, domain))
    valuable = [tag for tag in tags if tag.strip().lower() in settings.high_value_tags]
    if valuable:
        tag = valuable[0].strip().lower()
        factors.append(ScoreFactor("high_value_tag", HIGH_VALUE_TAG_POINTS, tag))
    return ScoreExplanation(tuple(factors))


def calculate_lead_score(
    *,
    source: LeadSource | None,
    company: str | None,
    email: str | None,
    tags: Iterable[str] = (),
    settings: Settings | None = None,
) -> int:
    return explain_lead_score(
        source=source, company=company, email=email, tags=tags, settings=settings
    ).score


def scoring_version(settings: Settings | None = None) -> str:
    """Names the rules in force: a hash of the points table and the settings it reads, so a
    score computed under other rules can be told apart (and rescored)."""
    settings = settings or get_settings()
    rules = {
        "base": BASE_SCORE,
        "source": {source.value: points for source, points in SOURCE_POINTS.items()},
        "company": COMPANY_POINTS,
        "business_email": BUSINESS_EMAIL_POINTS,
        "high_value_tag": HIGH_VALUE_TAG_POINTS,
        "max": MAX_SCORE,
        "free_email_domains": sorted(settings.free_email_domains),
        "high_value_tags": sorted(settings.high_value_tags),
    }
    return hashlib.sha256(orjson.dumps(rules, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]
