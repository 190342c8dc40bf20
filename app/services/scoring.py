"""Automatic lead scoring: a transparent points table a sales manager can read and argue with.

    base 50
    + source: REFERRAL 20, WEBSITE 15, FACEBOOK 10, INSTAGRAM 10, WHATSAPP 5, OTHER 0
    + 10 for a non-blank company
    + 10 for a business email (domain not in the free-mail list)
    + 15 when any tag is high-value
    capped at 100

The free-mail domains and high-value tags are settings (FREE_EMAIL_DOMAINS, HIGH_VALUE_TAGS).

`explain_lead_score` applies the table to one lead in Python; `automatic_score_sql` is the same
table as one SQL expression over the leads table, for set-based rescoring (app/services/
lead_rescore.py). tests/test_lead_rescore.py holds the two equal for every line of the table.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import and_, case, false, func, literal
from sqlalchemy.sql.elements import ColumnElement

from app.config import Settings, get_settings
from app.models import Lead, LeadSource
from app.models.types import TAG_MAX_LENGTH, tags_overlap

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


# What Python's `str.strip()` removes: every character `isspace()` says is whitespace.
WHITESPACE = "".join(c for c in map(chr, range(sys.maxunicode + 1)) if c.isspace())


def automatic_score_sql(
    columns: Any = None, settings: Settings | None = None
) -> ColumnElement[int]:
    """The automatic score `explain_lead_score` gives, as one SQL expression over the leads
    table's `columns` (the same on SQLite and PostgreSQL), under `settings`' FREE_EMAIL_DOMAINS
    and HIGH_VALUE_TAGS. Built from the same constants as the Python rules.

    - the source: a CASE over SOURCE_POINTS (no source counts as OTHER);
    - the company: not null and not empty once stripped of whitespace (all of `str.strip()`'s);
    - a business email: it has an `@`, and the part after the last one, stripped and
      lowercased, is not a free-mail domain. The part after the last `@` is found with
      `rtrim(email, <email without its @>)`, which cuts back to the last `@` (both databases
      have it). SQLite's `lower()` lowercases ASCII only; stored emails have their domain
      lowercased already (email-validator normalises it);
    - a high-value tag: tags are stored trimmed and lowercased, so the tag test is the list
      filter's `tags_overlap` with the settings' tags;
    - capped at MAX_SCORE.
    """
    settings = settings or get_settings()
    leads = Lead.__table__.c if columns is None else columns
    source_points = case(
        {source.value: points for source, points in SOURCE_POINTS.items()},
        value=leads.source,
        else_=SOURCE_POINTS[LeadSource.OTHER],
    )
    has_company = and_(leads.company.is_not(None), _stripped(leads.company) != "")
    email = leads.email
    domain = func.substr(email, func.length(func.rtrim(email, func.replace(email, "@", ""))) + 1)
    business = and_(
        email.is_not(None),
        email.contains("@", autoescape=True),
        func.lower(_stripped(domain)).not_in(sorted(settings.free_email_domains)),
    )
    # No stored tag is longer than TAG_MAX_LENGTH, so a longer setting can match none (and
    # PostgreSQL's cast to varchar(50)[] would cut it to a prefix that might).
    valuable = sorted(t for t in settings.high_value_tags if len(t) <= TAG_MAX_LENGTH)
    has_valuable_tag = tags_overlap(leads.tags, valuable) if valuable else false()
    total = (
        literal(BASE_SCORE)
        + source_points
        + case((has_company, COMPANY_POINTS), else_=0)
        + case((business, BUSINESS_EMAIL_POINTS), else_=0)
        + case((has_valuable_tag, HIGH_VALUE_TAG_POINTS), else_=0)
    )
    return case((total > MAX_SCORE, MAX_SCORE), else_=total)


def _stripped(text: ColumnElement[str]) -> ColumnElement[str]:
    """`text.strip()` in SQL."""
    whitespace = literal(WHITESPACE)
    return func.ltrim(func.rtrim(text, whitespace), whitespace)
