"""Rescoring a million leads (issue 17): `LeadRescore.rescore` after a change of HIGH_VALUE_TAGS,
timed through the service on PostgreSQL, with the app's own engine settings (its statement
timeout, DB_STATEMENT_TIMEOUT_MS, included: a call that outgrew it would fail here as it would
in the API). The floor, in the same run: the bare UPDATE of the same rows to the same score (no
events, no note lines, no version), rolled back. See bench/README.md ("Results, issue 17:
rescore").

    python bench/rescore.py \\
        --database-url postgresql+asyncpg://postgres@127.0.0.1:5432/crm_bench

The database is the seeded one of bench/README.md (`seed-demo --leads 1000000 --agents 50`).
The run adds `--extra-tags` (default: pricing, renewal, warm: 118,256 of the seeded leads then
score otherwise) to the high-value tags, rescores (a dry run, then calls until nothing
remains, BULK_MAX_IDS leads a call), and rescores back under the default tags the same way,
so the database ends as it began (but for the events and note lines). Prints the floor, the
first call's time and its ratio to the floor, the slowest call and the total.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import uvloop  # noqa: E402
from sqlalchemy import and_, not_, select, update  # noqa: E402

from app.config import Settings, get_settings, use_settings  # noqa: E402
from app.database import create_engine, create_session_factory  # noqa: E402
from app.models import Lead, User  # noqa: E402
from app.services.lead_rescore import LeadRescore  # noqa: E402
from app.services.scoring import automatic_score_sql  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python bench/rescore.py", description=__doc__)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--extra-tags", default="pricing,renewal,warm")
    return parser.parse_args(argv)


async def floor_seconds(sessions: object, cap: int) -> tuple[float, int]:
    """The bare UPDATE a rescore call's work comes down to (the same first `cap` stale leads,
    by id), rolled back: its time and row count."""
    score = automatic_score_sql()
    stale = and_(not_(Lead.score_is_manual), Lead.lead_score != score, Lead.archived_at.is_(None))
    first = select(Lead.id).where(stale).order_by(Lead.id).limit(cap).scalar_subquery()
    async with sessions() as db:  # type: ignore[operator]
        started = time.perf_counter()
        result = await db.execute(
            update(Lead)
            .where(stale, Lead.id.in_(first))
            .values(lead_score=score)
            .execution_options(synchronize_session=False)
        )
        seconds = time.perf_counter() - started
        await db.rollback()
    return seconds, int(result.rowcount)


async def superuser_id(sessions: object) -> int:
    """A superuser to act as (the seeded database has agents only until a server starts)."""
    async with sessions() as db:  # type: ignore[operator]
        found = await db.scalar(select(User.id).where(User.is_superuser).limit(1))
        if found is not None:
            return int(found)
        user = User(
            email="bench-admin@demo.example.com",
            full_name="Bench admin",
            hashed_password="!",  # no password: this account only acts through the service
            is_superuser=True,
        )
        db.add(user)
        await db.commit()
        return int(user.id)


async def timed_rescore(sessions: object, user_id: int, *, dry_run: bool) -> tuple[float, object]:
    async with sessions() as db:  # type: ignore[operator]
        started = time.perf_counter()
        outcome = await LeadRescore.rescore(db, user_id, dry_run=dry_run)
        return time.perf_counter() - started, outcome


async def rescore_all(sessions: object, user_id: int) -> list[float]:
    """Calls until nothing remains, as a client would: each call's seconds."""
    times = []
    while True:
        seconds, outcome = await timed_rescore(sessions, user_id, dry_run=False)
        times.append(seconds)
        if not outcome.remaining:  # type: ignore[attr-defined]
            return times


async def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    base = Settings(database_url=args.database_url)
    tags = ",".join([*base.high_value_tags, *args.extra_tags.split(",")])
    changed_rules = Settings(database_url=args.database_url, high_value_tags=tags)
    engine = create_engine(args.database_url, settings=base)
    sessions = create_session_factory(engine)
    admin = await superuser_id(sessions)
    print(f"statement timeout: {get_settings().db_statement_timeout_ms} ms")
    cap = base.bulk_max_ids
    with use_settings(changed_rules):
        floor, rows = await floor_seconds(sessions, cap)
        dry, preview = await timed_rescore(sessions, admin, dry_run=True)
        calls = await rescore_all(sessions, admin)
    with use_settings(base):
        back = await rescore_all(sessions, admin)
    await engine.dispose()
    first = calls[0]
    print(f"floor (bare UPDATE of the first call's {rows} leads, rolled back): {floor:.2f} s")
    print(f"dry run: {dry:.2f} s -> {preview}")
    print(
        f"rescore: {len(calls)} calls, first {first:.2f} s ({first / floor:.2f}x the floor), "
        f"slowest {max(calls):.2f} s, all {sum(calls):.1f} s"
    )
    print(f"rescore back: {len(back)} calls, slowest {max(back):.2f} s, all {sum(back):.1f} s")
    return 0


if __name__ == "__main__":
    uvloop.install()
    raise SystemExit(asyncio.run(main()))
