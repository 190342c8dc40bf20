"""Webhook delivery throughput (issue 15): one `python -m app worker`, a local receiver, and a
bulk status change of 10,000 leads, against the floor of a client that only signs and sends
the same bodies one at a time (what one subscription's in-order queue allows), with no
database at all, measured in the same run. See bench/README.md ("Results, issue 15").

    python bench/webhooks.py \\
        --database-url postgresql+asyncpg://postgres@127.0.0.1:5432/crm_bench \\
        [--leads 10000] [--subscriptions 1]

The database is a seeded benchmark one (bench/README.md); the leads changed keep their new
status. Every subscription the run makes is deleted at the end, with its deliveries.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import uvloop  # noqa: E402
from sqlalchemy import delete, select, update  # noqa: E402
from sqlalchemy.ext.asyncio import AsyncSession  # noqa: E402

from app.config import normalize_database_url  # noqa: E402
from app.database import create_engine, create_session_factory  # noqa: E402
from app.models import Lead, LeadEvent, LeadStatus, User, Webhook  # noqa: E402
from app.models.types import utcnow  # noqa: E402
from app.services import LeadService  # noqa: E402
from app.services.webhook_dispatch import body  # noqa: E402
from app.services.webhook_sending import Claimed, signature_header  # noqa: E402
from app.services.webhooks import new_secret  # noqa: E402
from bench.run import RESULTS_DIR, UVICORN_FLAGS, Server, free_port, log  # noqa: E402

FLOOR_REQUESTS = 3000
WAIT_SECONDS = 600.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python bench/webhooks.py", description=__doc__)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--leads", type=int, default=10_000, help="leads the bulk call changes")
    parser.add_argument("--subscriptions", type=int, default=1)
    return parser.parse_args(argv)


async def receiver_count(client: httpx.AsyncClient) -> dict[str, float]:
    return (await client.get("/count")).json()


async def floor_rate(url: str, payload: str, secret: str) -> float:
    """Deliveries per second of a bare sender: sign, POST, wait for the answer, next."""
    claimed = Claimed(0, 0, url, "1", payload, 0, (secret,))
    async with httpx.AsyncClient(trust_env=False) as client:
        started = time.perf_counter()
        for n in range(FLOOR_REQUESTS):
            headers = {
                "content-type": "application/json",
                "webhook-id": str(n),
                "webhook-timestamp": str(int(time.time())),
                "webhook-signature": signature_header(claimed, utcnow()),
            }
            response = await client.post(url, content=payload.encode(), headers=headers)
            assert response.status_code == 204
        return FLOOR_REQUESTS / (time.perf_counter() - started)


async def sample_payload(db: AsyncSession, lead_id: int) -> str:
    """A body like those the bulk change's events get: a status change of a real lead."""
    lead = await db.get(Lead, lead_id)
    event = SimpleNamespace(
        id=1,
        lead_id=lead_id,
        type="lead.status_changed",
        actor_id=1,
        occurred_at=utcnow(),
        changes={"status": {"old": "NEW", "new": "CONTACTED"}},
    )
    return body(event, lead, utcnow())  # type: ignore[arg-type]


async def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    url = normalize_database_url(args.database_url)
    engine = create_engine(url)
    sessions = create_session_factory(engine)
    port = free_port()
    hook_url = f"http://127.0.0.1:{port}/hook"
    receiver = Server(
        "webhook-receiver",
        [
            sys.executable,
            *("-m", "uvicorn", "bench.webhook_receiver:app", "--port", str(port)),
            *UVICORN_FLAGS,
        ],
        dict(os.environ),
        port,
    )
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "WEBHOOK_ALLOW_PRIVATE_NETWORKS": "true",
        "LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(ROOT),
    }
    worker: subprocess.Popen[bytes] | None = None
    hook_ids: list[int] = []
    try:
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        await receiver.start("/count")
        async with sessions() as db:
            admin = await db.scalar(select(User.id).where(User.is_superuser).limit(1))
            ids = list(
                await db.scalars(
                    select(Lead.id)
                    .where(Lead.status == LeadStatus.NEW, Lead.archived_at.is_(None))
                    .order_by(Lead.id)
                    .limit(args.leads)
                )
            )
            if admin is None or len(ids) < args.leads:
                raise SystemExit("error: seed the database first (bench/README.md)")
            payload = await sample_payload(db, ids[0])
        secret = new_secret()
        log(f"floor: {FLOOR_REQUESTS} signed POSTs one at a time, {len(payload)}-byte bodies")
        floor = await floor_rate(hook_url.replace("/hook", "/floor"), payload, secret)
        log(f"floor: {floor:.0f} deliveries/s")

        async with sessions() as db:
            # Events from earlier runs would be delivered too: they predate the subscriptions.
            await db.execute(
                update(LeadEvent)
                .where(LeadEvent.dispatched_at.is_(None))
                .values(dispatched_at=utcnow())
            )
            for _ in range(args.subscriptions):
                hook = Webhook(
                    url=hook_url,
                    event_types=["*"],
                    secret=secret,
                    is_active=True,
                    created_by=admin,
                    created_at=utcnow(),
                    updated_at=utcnow(),
                )
                db.add(hook)
                await db.flush()
                hook_ids.append(hook.id)
            await db.commit()
        log_file = (RESULTS_DIR / "webhook-worker.log").open("wb")
        worker = subprocess.Popen(  # noqa: ASYNC220 - started once, not awaited
            [sys.executable, "-m", "app", "worker"],
            cwd=ROOT,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        await asyncio.sleep(3)  # its start-up (migrations checked, first poll)
        expected = args.leads * args.subscriptions
        async with sessions() as db:
            log(f"bulk status change of {args.leads:,} leads (one event each)")
            committed = time.monotonic()
            await LeadService.bulk_update_status(
                db, ids, LeadStatus.CONTACTED, admin, ids_only=True
            )
            committed_after = time.monotonic() - committed
        async with httpx.AsyncClient(base_url=receiver.url, timeout=30) as client:
            deadline = time.monotonic() + WAIT_SECONDS
            while (count := await receiver_count(client))["count"] < expected:
                if time.monotonic() > deadline or worker.poll() is not None:
                    raise SystemExit(f"error: only {count['count']} of {expected} arrived")
                await asyncio.sleep(0.2)
        sending = count["last"] - count["first"]
        end_to_end = count["last"] - committed
        rate = expected / sending
        result: dict[str, Any] = {
            "leads": args.leads,
            "subscriptions": args.subscriptions,
            "deliveries": expected,
            "bulk_call_seconds": round(committed_after, 2),
            "first_to_last_seconds": round(sending, 2),
            "commit_to_last_seconds": round(end_to_end, 2),
            "deliveries_per_second": round(rate, 1),
            "floor_per_second": round(floor, 1),
            "ratio_to_floor": round(rate / floor, 2),
        }
        print(json.dumps(result, indent=2))
        print(
            f"\n{expected:,} deliveries: all received {end_to_end:.1f} s after the bulk call "
            f"began (target: under 60 s); {rate:.0f}/s from first to last (target: >= 300/s), "
            f"{rate / floor:.2f}x the floor's {floor:.0f}/s"
        )
        return 0
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(timeout=30)
        receiver.stop()
        if hook_ids:
            async with sessions() as db:
                await db.execute(delete(Webhook).where(Webhook.id.in_(hook_ids)))
                await db.commit()
        await engine.dispose()


if __name__ == "__main__":
    sys.exit(uvloop.run(main()))
