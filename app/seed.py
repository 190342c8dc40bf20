"""Realistic demo data, loaded fast enough that a frontend (or a benchmark) has something to show.

Statuses and sources are skewed the way a real pipeline is (many NEW, few WON), scores follow
the real scoring rules, a few leads are unassigned, and every lead has a short history. Dates
follow each lead's life: created within the last year, last contacted at some point after that
(leads still NEW were never contacted: no contact date, no calls), changed last at or after the
last contact, and nothing in the future.

SQLite gets batched INSERTs. PostgreSQL gets the bulk path: rows generated column by column and
streamed with binary COPY while the next ones are generated; for a large load the table's
secondary indexes are dropped first and rebuilt afterwards (same names and definitions, read
from the catalog), then the table is ANALYZEd. All of it is one transaction: a failed load
leaves the table and its indexes as they were. A VACUUM afterwards marks the new pages
all-visible. A million leads take well under two minutes.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

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
    if db.get_bind().dialect.name == "postgresql":
        inserted = await _copy_leads(db, rng, leads, agent_ids)
        await db.commit()
        if inserted >= REBUILD_INDEXES_FROM:
            await _vacuum_leads(db)
        return inserted, emails
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
    last_contact, updated_at = _life_dates(rng.random, now, created_at, contacted)
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
        "last_contact_date": last_contact,
        "created_at": created_at,
        "updated_at": updated_at,
        # A lead past NEW got its status at its last change; a NEW one has had it all along.
        "status_changed_at": updated_at if contacted else created_at,
    }


def _life_dates(
    r: Callable[[], float], now: datetime, created_at: datetime, contacted: bool
) -> tuple[datetime | None, datetime]:
    """(last_contact_date, updated_at) for a lead created at `created_at`: created <= last
    contact <= last change <= now. A contacted lead's last contact falls anywhere in its life
    so far, its last change after that; a lead never contacted was mostly left as created."""
    if contacted:
        last_contact = created_at + (now - created_at) * r()
        return last_contact, last_contact + (now - last_contact) * r()
    return None, created_at + (now - created_at) * r() ** 3


def _history(rng: random.Random, row: dict[str, Any]) -> str:
    stamp = row["created_at"].strftime("[%Y-%m-%d %H:%M UTC]")
    lines = [f"{stamp} system: Created (score {row['lead_score']})"]
    lines += [f"{stamp} system: {rng.choice(NOTE_SENTENCES)}" for _ in range(rng.randint(1, 3))]
    return "\n".join(lines)


# --------------------------------------------------------------------------- PostgreSQL: COPY

COPY_BATCH_SIZE = 20_000
# Below this many new leads (or fewer than the table already holds) the indexes are kept and
# maintained row by row; above it, rebuilding them once after the load is much faster.
REBUILD_INDEXES_FROM = 20_000
COPY_COLUMNS = (
    "first_name",
    "last_name",
    "email",
    "phone",
    "company",
    "job_title",
    "source",
    "status",
    "assigned_to",
    "lead_score",
    "score_is_manual",
    "probability",
    "tags",
    "notes",
    "call_attempts",
    "last_contact_date",
    "created_at",
    "updated_at",
    "status_changed_at",
)
TAG_COUNTS = (0, 0, 1, 1, 2, 3, 4)  # how many tags a lead has, as `_fake_lead` draws it
TAG_POOL_SIZE = 4_096  # distinct tag lists drawn per tag count


async def _copy_leads(
    db: AsyncSession, rng: random.Random, leads: int, agent_ids: list[int]
) -> int:
    """Stream `leads` generated leads into PostgreSQL with binary COPY, in the session's
    transaction; the caller commits."""
    if leads <= 0:
        return 0
    conn = await db.connection()
    # Loads and index builds outlast the app's statement timeout; index builds like memory.
    await conn.exec_driver_sql("SET LOCAL statement_timeout = 0")
    await conn.exec_driver_sql("SET LOCAL maintenance_work_mem = '512MB'")
    await conn.exec_driver_sql("SET LOCAL synchronous_commit = off")
    existing = await conn.scalar(text("SELECT count(*) FROM leads"))
    rebuild = leads >= REBUILD_INDEXES_FROM and leads >= (existing or 0)
    indexes = await _drop_secondary_indexes(conn) if rebuild else []

    raw = (await conn.get_raw_connection()).driver_connection
    generate = _lead_columns_factory(rng, agent_ids, leads)

    async def records() -> AsyncIterator[tuple[Any, ...]]:
        for start in range(0, leads, COPY_BATCH_SIZE):
            for row in generate(start, min(COPY_BATCH_SIZE, leads - start)):
                yield row

    await raw.copy_records_to_table("leads", records=records(), columns=COPY_COLUMNS)
    for statement in indexes:
        await conn.exec_driver_sql(statement)
    await conn.exec_driver_sql("ANALYZE leads")
    await conn.exec_driver_sql("ANALYZE users")
    return leads


async def _vacuum_leads(db: AsyncSession) -> None:
    """VACUUM the freshly loaded table (outside any transaction): it marks the pages all-visible,
    so index-only scans work at once and autovacuum does not do it later, in the middle of
    whatever runs next (a benchmark)."""
    conn = await db.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
    await conn.exec_driver_sql("SET statement_timeout = 0")
    await conn.exec_driver_sql("VACUUM leads")
    await conn.exec_driver_sql("RESET statement_timeout")
    await db.commit()


async def _drop_secondary_indexes(conn: AsyncConnection) -> list[str]:
    """Drop the leads indexes that back no constraint (the primary key stays) and return the
    CREATE INDEX statements that rebuild them exactly, largest build first."""
    rows = (
        await conn.execute(
            text(
                "SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname), "
                "pg_get_indexdef(i.indexrelid), am.amname "
                "FROM pg_index i "
                "JOIN pg_class c ON c.oid = i.indexrelid "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "JOIN pg_am am ON am.oid = c.relam "
                "WHERE i.indrelid = 'leads'::regclass "
                "AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid) "
                "ORDER BY c.relname"
            )
        )
    ).all()
    for name, _definition, _method in rows:
        await conn.exec_driver_sql(f"DROP INDEX {name}")
    # GIN (trigram, tags) builds take longest; start with them while memory is fresh.
    return [definition for _n, definition, method in sorted(rows, key=lambda r: r[2] != "gin")]


def _lead_columns_factory(
    rng: random.Random, agent_ids: Sequence[int], total: int
) -> Callable[[int, int], Any]:
    """A function making rows `start .. start+count` of `total` as COPY tuples.

    The same distributions as `_fake_lead` and `_history`, drawn a column at a time (one
    `choices(k=...)` call instead of a call per row). Leads are created in id order spread over
    the last year, as a real table grows; scores come from `calculate_lead_score`, memoised on
    the inputs it reads (source, company, email domain, tags).
    """
    settings = get_settings()
    now = utcnow()
    first_year = now - timedelta(days=365)
    step = 365 * 24 * 3600 / total
    statuses, status_weights = zip(*STATUS_WEIGHTS.items(), strict=True)
    sources, source_weights = zip(*SOURCE_WEIGHTS.items(), strict=True)
    status_values = [s.value for s in statuses]
    source_values = [s.value for s in sources]
    first_lower = {name: name.lower() for name in FIRST_NAMES}
    last_lower = {name: name.lower() for name in LAST_NAMES}
    company_domains = {c: c.lower().replace(" ", "") + ".example.com" for c in COMPANIES}
    tag_pools = {
        count: [tuple(rng.sample(TAGS, count)) for _ in range(TAG_POOL_SIZE if count else 1)]
        for count in set(TAG_COUNTS)
    }
    tag_arrays_of = {t: list(t) for pool in tag_pools.values() for t in pool}
    scores: dict[tuple[Any, ...], int] = {}
    agents = list(agent_ids)

    def score(source: LeadSource, company: str | None, domain: str, tags: tuple[str, ...]) -> int:
        key = (source, company, domain, tags)
        value = scores.get(key)
        if value is None:
            value = scores[key] = calculate_lead_score(
                source=source, company=company, email=f"x@{domain}", tags=tags, settings=settings
            )
        return value

    def rows(start: int, count: int) -> Any:
        r = rng.random
        span = range(count)
        firsts = rng.choices(FIRST_NAMES, k=count)
        lasts = rng.choices(LAST_NAMES, k=count)
        companies = [c if r() < 0.6 else None for c in rng.choices(COMPANIES, k=count)]
        free = rng.choices(FREE_DOMAINS, k=count)
        domains = [
            company_domains[c] if c is not None and r() < 0.7 else f
            for c, f in zip(companies, free, strict=True)
        ]
        emails = [
            f"{first_lower[f]}.{last_lower[la]}{int(r() * 9999) + 1}@{d}"
            for f, la, d in zip(firsts, lasts, domains, strict=True)
        ]
        phones = [f"+1555{int(r() * 10_000_000):07d}" if r() < 0.8 else None for _ in span]
        job_titles = [
            t if c is not None else None
            for c, t in zip(companies, rng.choices(JOB_TITLES, k=count), strict=True)
        ]
        status_idx = rng.choices(range(len(statuses)), status_weights, k=count)
        source_idx = rng.choices(range(len(sources)), source_weights, k=count)
        assignees = (
            [a if r() < 0.9 else None for a in rng.choices(agents, k=count)]
            if agents
            else [None] * count
        )
        contacted = [i != 0 for i in status_idx]  # statuses[0] is NEW
        probabilities = [round(r(), 2) if c else None for c in contacted]
        tag_lists = [
            tag_pools[n][int(r() * len(tag_pools[n]))] for n in rng.choices(TAG_COUNTS, k=count)
        ]
        tag_arrays = [tag_arrays_of[t] for t in tag_lists]
        lead_scores = [
            score(sources[s], c, d, t)
            for s, c, d, t in zip(source_idx, companies, domains, tag_lists, strict=True)
        ]
        created = [first_year + timedelta(seconds=(start + i + r()) * step) for i in span]
        calls = [int(r() * 6) + 1 if c else 0 for c in contacted]
        life_dates = [_life_dates(r, now, at, c) for at, c in zip(created, contacted, strict=True)]
        last_contact = [contact for contact, _ in life_dates]
        updated = [changed for _, changed in life_dates]
        notes = [_history_fast(rng, at, s) for at, s in zip(created, lead_scores, strict=True)]
        return zip(
            firsts,
            lasts,
            emails,
            phones,
            companies,
            job_titles,
            [source_values[i] for i in source_idx],
            [status_values[i] for i in status_idx],
            assignees,
            lead_scores,
            [False] * count,
            probabilities,
            tag_arrays,
            notes,
            calls,
            last_contact,
            created,
            updated,
            [u if c else at for u, at, c in zip(updated, created, contacted, strict=True)],
            strict=True,
        )

    return rows


def _history_fast(rng: random.Random, at: datetime, score: int) -> str:
    """`_history` for one lead, without strftime."""
    stamp = f"[{at.year}-{at.month:02d}-{at.day:02d} {at.hour:02d}:{at.minute:02d} UTC] system: "
    lines = [f"{stamp}Created (score {score})"]
    lines += [stamp + s for s in rng.choices(NOTE_SENTENCES, k=int(rng.random() * 3) + 1)]
    return "\n".join(lines)
