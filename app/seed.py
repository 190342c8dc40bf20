"""Realistic demo data, inserted in large batches so a frontend has something to show in seconds.

Statuses and sources are skewed the way a real pipeline is (many NEW, few WON), scores follow
the real scoring rules, a few leads are unassigned, and every lead has a short history.
"""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import get_settings
from app.models import Lead, LeadSource, LeadStatus, User
from app.models.types import utcnow
from app.services.scoring import calculate_lead_score
from app.services.security import hash_password

FIRST_NAMES = [
    "James",
    "Mary",
    "Robert",
    "Patricia",
    "John",
    "Jennifer",
    "Michael",
    "Linda",
    "David",
    "Elizabeth",
    "William",
    "Barbara",
    "Richard",
    "Susan",
    "Joseph",
    "Jessica",
    "Thomas",
    "Sarah",
    "Charles",
    "Karen",
    "Maria",
    "Ahmed",
    "Yuki",
    "Olga",
    "Pierre",
    "Sofia",
    "Lucas",
    "Amara",
    "Chen",
    "Priya",
    "Mateo",
    "Ingrid",
    "Kwame",
    "Fatima",
    "Noah",
    "Elena",
    "Omar",
    "Hana",
    "Diego",
    "Zara",
]
LAST_NAMES = [
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Jones",
    "Garcia",
    "Miller",
    "Davis",
    "Rodriguez",
    "Martinez",
    "Hernandez",
    "Lopez",
    "Wilson",
    "Anderson",
    "Thomas",
    "Taylor",
    "Moore",
    "Jackson",
    "Martin",
    "Lee",
    "Perez",
    "Thompson",
    "White",
    "Harris",
    "Clark",
    "Lewis",
    "Walker",
    "Young",
    "Allen",
    "King",
    "Wright",
    "Scott",
    "Nguyen",
    "Hill",
    "Flores",
    "Green",
    "Adams",
    "Nelson",
    "Baker",
    "Kim",
]
COMPANIES = (
    "Acme Corp",
    "Globex",
    "Initech",
    "Umbrella Health",
    "Stark Industries",
    "Wayne Logistics",
    "Hooli",
    "Vandelay Imports",
    "Soylent Foods",
    "Tyrell Systems",
    "Cyberdyne",
    "Wonka Confectionery",
    "Massive Dynamic",
    "Oscorp",
    "Blue Sun",
    "Aperture Labs",
)
JOB_TITLES = ("CEO", "CTO", "Head of Sales", "Procurement Manager", "Office Manager", "Founder")
FREE_DOMAINS = ("gmail.com", "yahoo.com", "outlook.com", "hotmail.com", "icloud.com")
TAGS = [
    "vip",
    "enterprise",
    "decision-maker",
    "high-value",
    "smb",
    "startup",
    "q1",
    "q2",
    "q3",
    "q4",
    "webinar",
    "trade-show",
    "newsletter",
    "demo-requested",
    "pricing",
    "follow-up",
    "cold",
    "warm",
    "hot",
    "partner",
    "upsell",
    "renewal",
    "churn-risk",
    "healthcare",
    "finance",
    "retail",
    "education",
    "manufacturing",
    "logistics",
    "saas",
]
STATUS_WEIGHTS = {
    LeadStatus.NEW: 35,
    LeadStatus.CONTACTED: 20,
    LeadStatus.QUALIFIED: 12,
    LeadStatus.PROPOSAL: 7,
    LeadStatus.NEGOTIATION: 4,
    LeadStatus.WON: 6,
    LeadStatus.LOST: 10,
    LeadStatus.CALLBACK: 6,
}
SOURCE_WEIGHTS = {
    LeadSource.WEBSITE: 35,
    LeadSource.FACEBOOK: 18,
    LeadSource.INSTAGRAM: 12,
    LeadSource.WHATSAPP: 8,
    LeadSource.REFERRAL: 10,
    LeadSource.OTHER: 17,
}
NOTE_SENTENCES = (
    "Asked for pricing for a team of twenty.",
    "Interested in the annual plan; wants a call next week.",
    "Came in through the spring campaign landing page.",
    "Decision expected after their board meeting.",
    "Currently using a competitor, contract ends in March.",
    "Prefers email over phone; based in another time zone.",
    "Requested a product demo with their operations lead.",
)
BATCH_SIZE = 5_000
DEMO_AGENT_PASSWORD = "demo-agent-password"


async def seed_demo(
    db: AsyncSession, leads: int, agents: int = 10, seed: int = 42
) -> tuple[int, list[str]]:
    """Insert `leads` demo leads spread over `agents` demo agents (created when missing).
    Returns how many leads were inserted and the agents' emails."""
    rng = random.Random(seed)
    agent_ids, emails = await _ensure_agents(db, agents)
    statuses, status_weights = zip(*STATUS_WEIGHTS.items(), strict=True)
    sources, source_weights = zip(*SOURCE_WEIGHTS.items(), strict=True)
    settings = get_settings()
    now = utcnow()

    inserted = 0
    while inserted < leads:
        batch = []
        for _ in range(min(BATCH_SIZE, leads - inserted)):
            batch.append(
                _fake_lead(rng, now, agent_ids, statuses, status_weights, sources, source_weights)
            )
            row = batch[-1]
            row["lead_score"] = calculate_lead_score(
                source=row["source"],
                company=row["company"],
                email=row["email"],
                tags=row["tags"],
                settings=settings,
            )
            row["notes"] = _history(rng, row)
        await db.execute(insert(Lead), batch)
        inserted += len(batch)
    await db.commit()
    return inserted, emails


async def _ensure_agents(db: AsyncSession, count: int) -> tuple[list[int], list[str]]:
    emails = [f"agent{n}@demo.example.com" for n in range(1, count + 1)]
    existing = {
        user.email: user for user in await db.scalars(select(User).where(User.email.in_(emails)))
    }
    hashed = hash_password(DEMO_AGENT_PASSWORD) if len(existing) < count else ""
    for n, email in enumerate(emails, start=1):
        if email not in existing:
            existing[email] = User(email=email, full_name=f"Demo Agent {n}", hashed_password=hashed)
            db.add(existing[email])
    await db.flush()
    return [existing[email].id for email in emails], emails


def _fake_lead(
    rng: random.Random,
    now: Any,
    agent_ids: list[int],
    statuses: tuple[LeadStatus, ...],
    status_weights: tuple[int, ...],
    sources: tuple[LeadSource, ...],
    source_weights: tuple[int, ...],
) -> dict[str, Any]:
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    company = rng.choice(COMPANIES) if rng.random() < 0.6 else None
    if company and rng.random() < 0.7:
        domain = company.lower().replace(" ", "") + ".example.com"
    else:
        domain = rng.choice(FREE_DOMAINS)
    status = rng.choices(statuses, status_weights)[0]
    created_at = now - timedelta(seconds=rng.randint(0, 365 * 24 * 3600))
    contacted = status is not LeadStatus.NEW
    return {
        "first_name": first,
        "last_name": last,
        "email": f"{first}.{last}{rng.randint(1, 9999)}@{domain}".lower(),
        "phone": f"+1555{rng.randint(0, 9_999_999):07d}" if rng.random() < 0.8 else None,
        "company": company,
        "job_title": rng.choice(JOB_TITLES) if company else None,
        "source": rng.choices(sources, source_weights)[0],
        "status": status,
        "assigned_to": rng.choice(agent_ids) if agent_ids and rng.random() < 0.9 else None,
        "score_is_manual": False,
        "probability": round(rng.random(), 2) if contacted else None,
        "tags": rng.sample(TAGS, rng.choice((0, 0, 1, 1, 2, 3, 4))),
        "call_attempts": rng.randint(1, 6) if contacted else 0,
        "last_contact_date": (
            min(now, created_at + timedelta(days=rng.randint(0, 30))) if contacted else None
        ),
        "created_at": created_at,
        "updated_at": created_at,
    }


def _history(rng: random.Random, row: dict[str, Any]) -> str:
    stamp = row["created_at"].strftime("[%Y-%m-%d %H:%M UTC]")
    lines = [f"{stamp} system: Created (score {row['lead_score']})"]
    lines += [f"{stamp} system: {rng.choice(NOTE_SENTENCES)}" for _ in range(rng.randint(1, 3))]
    return "\n".join(lines)
