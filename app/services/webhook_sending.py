"""Deliveries out (issue 15): which are due, the signed request, and what became of it.

- **Claiming.** A subscription is ready when its oldest pending delivery (its queue's head)
  is due and no worker holds it (`lease_until` passed or unset). A worker takes ready
  subscriptions' rows `FOR UPDATE SKIP LOCKED` (PostgreSQL), and leases each one's head with
  the due deliveries behind it (a batch) in the same transaction: another worker then finds
  the head held and leaves the subscription alone. So a subscription's events go out one at a
  time, in event order, and a retry in backoff holds back the ones behind it. A worker that
  dies holding a batch lets it go when the lease ends, and another sends it again (at least
  once). The lease is sized for one request; a worker whose batch is still going when less
  than that is left renews the lease of the rest (`renew`), and stops if it no longer held
  them, so a batch of slow answers is not taken over and sent twice while it is being sent.
- **Sending** happens outside any transaction: the URL is checked again (DNS may have changed,
  app/services/webhook_urls.py), the body is signed per Standard Webhooks with the
  `standardwebhooks` package (with the previous secret too, for 24 hours after a rotation),
  and any 2xx within WEBHOOK_TIMEOUT_SECONDS is a success. Redirects are not followed.
- **Recording.** Successes are recorded a few at a time (one UPDATE), a failure at once, and
  the rest of its batch given back. A failure is retried after about 5 s, 5 min, 30 min, 2 h,
  5 h, 10 h and 10 h (each +-20%, so retries of many subscriptions do not arrive together),
  then marked `failed`. A subscription failing without a single success for
  WEBHOOK_DISABLE_AFTER_HOURS is turned off (`disabled_reason` says so).
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx
from sqlalchemy import and_, exists, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased
from sqlalchemy.sql.elements import ColumnElement
from standardwebhooks import Webhook as Signer

from app.config import Settings
from app.models.types import utcnow
from app.models.webhook import ERROR_MAX_LENGTH, DeliveryStatus, Webhook, WebhookDelivery
from app.services.base import transactional
from app.services.webhook_urls import Resolver, UnsafeUrl, check_url, system_resolver
from app.services.webhooks import deactivate_for_failures

RETRY_AFTER = (
    timedelta(seconds=5),
    timedelta(minutes=5),
    timedelta(minutes=30),
    timedelta(hours=2),
    timedelta(hours=5),
    timedelta(hours=10),
    timedelta(hours=10),
)
JITTER = 0.2
LEASE_MARGIN = timedelta(seconds=5)
BODY_READ_LIMIT = 4 * ERROR_MAX_LENGTH  # bytes of a failed answer read, for `last_error`
USER_AGENT = "crm-leads-webhooks/1"
PENDING = DeliveryStatus.PENDING.value


@dataclass(frozen=True)
class Claimed:
    id: int
    webhook_id: int
    url: str
    message_id: str
    payload: str
    attempts: int
    secrets: tuple[str, ...]


@dataclass(frozen=True)
class Outcome:
    ok: bool
    status_code: int | None
    error: str | None


def lease_for(settings: Settings) -> timedelta:
    """How long a claim holds: the request's own limit twice over (the answer is recorded
    after it), and a margin. A worker killed while sending is replaced after this long."""
    return 2 * timedelta(seconds=settings.webhook_timeout_seconds) + LEASE_MARGIN


def _due(now: datetime) -> tuple[ColumnElement[bool], ...]:
    """A delivery whose time has come and that no worker holds."""
    return (
        WebhookDelivery.next_attempt_at <= now,
        or_(WebhookDelivery.lease_until.is_(None), WebhookDelivery.lease_until <= now),
    )


async def has_due(db: AsyncSession) -> bool:
    """Whether any delivery is due now (a read: see `dispatch.has_undispatched`)."""
    now = utcnow()
    query = select(
        exists().where(
            WebhookDelivery.status == PENDING,
            *_due(now),
            Webhook.id == WebhookDelivery.webhook_id,
            Webhook.is_active.is_(True),
        )
    )
    return bool(await db.scalar(query))


@dataclass(frozen=True)
class Batch:
    """A subscription's next deliveries, oldest first, leased to one worker, which sends them
    one after the other and stops at the first that fails."""

    webhook_id: int
    items: list[Claimed]


@transactional
async def claim_due(
    db: AsyncSession, *, subscriptions: int, batch: int, lease: timedelta
) -> list[Batch]:
    """For up to `subscriptions` subscriptions whose oldest pending delivery is due and not
    held: that delivery and the due ones after it, up to `batch`, leased. The subscription's
    row is locked while they are picked (`SKIP LOCKED`: another worker picks others), and
    once the leases are committed its head is held, so no other worker takes any of them."""
    now = utcnow()
    queued = aliased(WebhookDelivery)
    head = (
        select(queued.id)
        .where(queued.webhook_id == Webhook.id, queued.status == PENDING)
        .order_by(queued.id)
        .limit(1)
        .correlate(Webhook)
        .scalar_subquery()
    )
    ready = (
        exists()
        .where(
            WebhookDelivery.id == head,
            *_due(now),
        )
        .correlate(Webhook)
    )
    hooks = (
        await db.execute(
            select(
                Webhook.id,
                Webhook.url,
                Webhook.secret,
                Webhook.previous_secret,
                Webhook.previous_secret_expires_at,
            )
            .where(Webhook.is_active.is_(True), ready)
            .order_by(Webhook.id)
            .limit(subscriptions)
            .with_for_update(of=Webhook, skip_locked=True)
        )
    ).all()
    batches = []
    for hook in hooks:
        rows = (
            await db.execute(
                select(
                    WebhookDelivery.id,
                    WebhookDelivery.message_id,
                    WebhookDelivery.payload,
                    WebhookDelivery.attempts,
                    WebhookDelivery.next_attempt_at,
                )
                .where(WebhookDelivery.webhook_id == hook.id, WebhookDelivery.status == PENDING)
                .order_by(WebhookDelivery.id)
                .limit(batch)
            )
        ).all()
        secrets = _signing_secrets(
            hook.secret, hook.previous_secret, hook.previous_secret_expires_at, now
        )
        items = []
        for row in rows:
            if row.next_attempt_at > now:  # a retry waiting: it and those behind it wait
                break
            items.append(
                Claimed(
                    row.id, hook.id, hook.url, row.message_id, row.payload, row.attempts, secrets
                )
            )
        if items:
            batches.append(Batch(hook.id, items))
    leased = [item.id for found in batches for item in found.items]
    if leased:
        await db.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id.in_(leased))
            .values(lease_until=now + lease)
            .execution_options(synchronize_session=False)
        )
    return batches


def _signing_secrets(
    secret: str, previous: str | None, previous_until: datetime | None, now: datetime
) -> tuple[str, ...]:
    if previous and previous_until is not None and previous_until > now:
        return (secret, previous)
    return (secret,)


def signature_header(claimed: Claimed, at: datetime) -> str:
    """`webhook-signature`: one `v1,<base64>` per live secret, space-separated."""
    return " ".join(
        Signer(secret).sign(claimed.message_id, at, claimed.payload) for secret in claimed.secrets
    )


async def send(
    client: httpx.AsyncClient,
    claimed: Claimed,
    settings: Settings,
    *,
    resolve: Resolver = system_resolver,
) -> Outcome:
    """POST the delivery once; what came of it. Never raises for the receiver's failings."""
    try:
        await check_url(claimed.url, settings, resolve=resolve)
    except UnsafeUrl as exc:
        return Outcome(False, None, f"not sent: the URL {exc}")
    at = utcnow()
    headers = {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": claimed.message_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signature_header(claimed, at),
    }
    try:
        async with asyncio.timeout(settings.webhook_timeout_seconds):
            request = client.build_request(
                "POST", claimed.url, content=claimed.payload.encode(), headers=headers
            )
            response = await client.send(request, stream=True, follow_redirects=False)
            try:
                if response.is_success:
                    return Outcome(True, response.status_code, None)
                return Outcome(False, response.status_code, await _start_of(response))
            finally:
                await response.aclose()
    except TimeoutError:
        return Outcome(False, None, f"no answer within {settings.webhook_timeout_seconds:g} s")
    except httpx.HTTPError as exc:
        return Outcome(False, None, f"{type(exc).__name__}: {exc}"[:ERROR_MAX_LENGTH])


async def _start_of(response: httpx.Response) -> str:
    """The first characters of a failed answer's body; never the whole of a huge one."""
    read = bytearray()
    async for chunk in response.aiter_raw():
        read += chunk
        if len(read) >= BODY_READ_LIMIT:
            break
    text = read.decode("utf-8", "replace").replace("\x00", "")
    return (text or f"HTTP {response.status_code}")[:ERROR_MAX_LENGTH]


def next_attempt(attempts: int, now: datetime, rng: random.Random | None = None) -> datetime | None:
    """When to try again after `attempts` failed attempts; None when they are used up."""
    if attempts > len(RETRY_AFTER):
        return None
    factor = 1 + (rng or random).uniform(-JITTER, JITTER)
    return now + RETRY_AFTER[attempts - 1] * factor


@transactional
async def record_delivered(db: AsyncSession, delivered: list[tuple[Claimed, int]]) -> None:
    """Mark these delivered (each with the status code it got), one UPDATE per code, and end
    their subscriptions' failing period."""
    if not delivered:
        return
    now = utcnow()
    by_code: dict[int, list[int]] = {}
    for claimed, code in delivered:
        by_code.setdefault(code, []).append(claimed.id)
    for code, ids in by_code.items():
        await db.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id.in_(ids), WebhookDelivery.status == PENDING)
            .values(
                status=DeliveryStatus.DELIVERED.value,
                attempts=WebhookDelivery.attempts + 1,
                last_attempt_at=now,
                last_status_code=code,
                last_error=None,
                delivered_at=now,
                lease_until=None,
            )
            .execution_options(synchronize_session=False)
        )
    hook = Webhook.__table__.c
    await db.execute(
        update(Webhook)
        .where(hook.id.in_({c.webhook_id for c, _ in delivered}), hook.failing_since.is_not(None))
        .values(failing_since=None)
        .execution_options(synchronize_session=False)
    )


@transactional
async def record_failure(
    db: AsyncSession, claimed: Claimed, outcome: Outcome, settings: Settings
) -> None:
    """The attempt failed: try again later, or give up after the last retry; and turn the
    subscription off once it has failed without a success for too long."""
    now = utcnow()
    attempts = claimed.attempts + 1
    retry = next_attempt(attempts, now)
    values: dict[str, object] = {
        "attempts": attempts,
        "last_attempt_at": now,
        "last_status_code": outcome.status_code,
        "last_error": outcome.error,
        "lease_until": None,
    }
    if retry is None:
        values["status"] = DeliveryStatus.FAILED.value
    else:
        values["next_attempt_at"] = retry
    await db.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.id == claimed.id, WebhookDelivery.status == PENDING)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    hook = Webhook.__table__.c
    await db.execute(
        update(Webhook)
        .where(hook.id == claimed.webhook_id)
        .values(failing_since=func.coalesce(hook.failing_since, now))
        .execution_options(synchronize_session=False)
    )
    limit = timedelta(hours=settings.webhook_disable_after_hours)
    failing = await db.scalar(
        select(hook.id).where(
            and_(hook.id == claimed.webhook_id, hook.failing_since <= now - limit)
        )
    )
    if failing is not None:
        await deactivate_for_failures(db, [failing], settings.webhook_disable_after_hours)


@transactional
async def renew(db: AsyncSession, delivery_ids: list[int], lease: timedelta) -> bool:
    """Extend the lease of a batch's unsent deliveries, while it still holds (a batch of slow
    answers can outlast one lease): whether every one of them was still held, and so is now
    for another `lease`. False: a lease ran out first, and another worker may have them."""
    now = utcnow()
    result = await db.execute(
        update(WebhookDelivery)
        .where(
            WebhookDelivery.id.in_(delivery_ids),
            WebhookDelivery.status == PENDING,
            WebhookDelivery.lease_until > now,
        )
        .values(lease_until=now + lease)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == len(delivery_ids)  # type: ignore[attr-defined]


@transactional
async def release(db: AsyncSession, delivery_ids: list[int]) -> None:
    """Give back leases unsent (a worker stopping): due again at once, for any worker."""
    if delivery_ids:
        await db.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id.in_(delivery_ids), WebhookDelivery.status == PENDING)
            .values(lease_until=None)
            .execution_options(synchronize_session=False)
        )
