"""Webhook delivery (issue 15), end to end: changes made through the API, the worker run for
real against a database of the test's own (every transaction commits), and a real HTTP
receiver on 127.0.0.1 (tests/support.py `Receiver`).

The worker is driven a round at a time (`drain`) rather than left polling, so each test says
exactly when deliveries go out; time is moved by rewriting `next_attempt_at`, never by
sleeping.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from standardwebhooks import Webhook as Verifier

from app.config import Settings, use_settings
from app.database import create_session_factory, upgrade_database
from app.main import create_app
from app.models import Webhook, WebhookDelivery
from app.models.types import utcnow
from app.services.webhook_sending import RETRY_AFTER
from app.workers.webhooks import WebhookWorker
from tests.helpers import client_of, committed_user, make_settings
from tests.support import Receiver, committed_database, own_engine, receiver

API = "/api/v1"
LEAD = {"first_name": "Ada", "last_name": "Lovelace", "email": "ada@example.com"}


@dataclass
class Hooks:
    engine: AsyncEngine
    client: httpx.AsyncClient
    worker: WebhookWorker
    receiver: Receiver
    settings: Settings
    admin: dict[str, str]
    agent: dict[str, str]
    agent_id: int

    async def subscribe(self, **fields: Any) -> dict[str, Any]:
        body = {"url": self.receiver.url, "event_types": ["*"], **fields}
        response = await self.client.post(f"{API}/webhooks", json=body, headers=self.admin)
        assert response.status_code == 201, response.text
        return response.json()

    async def create_lead(self, headers: dict[str, str] | None = None, **fields: Any) -> dict:
        body = {**LEAD, **fields}
        response = await self.client.post(f"{API}/leads", json=body, headers=headers or self.admin)
        assert response.status_code == 201, response.text
        return response.json()

    async def patch(self, lead_id: int, **fields: Any) -> dict[str, Any]:
        response = await self.client.patch(
            f"{API}/leads/{lead_id}", json=fields, headers=self.admin
        )
        assert response.status_code == 200, response.text
        return response.json()

    async def drain(self, rounds: int = 50) -> None:
        """Run the worker until it finds nothing to do."""
        for _ in range(rounds):
            if not await self.worker.run_once():
                return
        raise AssertionError("the worker never ran out of work")

    async def make_due(self) -> None:
        """Let every retry's time come."""
        async with self.engine.begin() as conn:
            await conn.execute(
                update(WebhookDelivery)
                .where(WebhookDelivery.status == "pending")
                .values(next_attempt_at=utcnow() - timedelta(seconds=1))
            )

    async def deliveries(self) -> list[WebhookDelivery]:
        async with AsyncSession(self.engine) as session:
            rows = await session.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id))
            return list(rows)

    async def webhook(self, webhook_id: int) -> dict[str, Any]:
        response = await self.client.get(f"{API}/webhooks/{webhook_id}", headers=self.admin)
        return response.json()


@pytest.fixture
def settings() -> Any:
    with use_settings(make_settings(webhook_allow_private_networks=True)) as installed:
        yield installed


@pytest.fixture
async def hooks(tmp_path: Path, settings: Settings) -> AsyncIterator[Hooks]:
    async with committed_database(tmp_path, "crm_hooks") as url:
        engine = own_engine(url, pool_size=8)
        try:
            await upgrade_database(engine)
            admin, _ = await committed_user(
                engine, settings, superuser=True, email="admin@crm.example"
            )
            agent, agent_id = await committed_user(
                engine, settings, superuser=False, email="agent@crm.example"
            )
            worker = WebhookWorker(
                create_session_factory(engine),
                create_session_factory(engine, read_only=True),
                settings,
            )
            async with (
                receiver() as running,
                worker,
                client_of(create_app(engine=engine)) as client,
            ):
                yield Hooks(engine, client, worker, running, settings, admin, agent, agent_id)
        finally:
            await engine.dispose()


# ---------------------------------------------------------------------------------- signing


async def test_a_delivery_verifies_with_the_standardwebhooks_package(hooks: Hooks) -> None:
    hook = await hooks.subscribe()
    await hooks.create_lead()

    await hooks.drain()

    [got] = hooks.receiver.received
    payload = Verifier(hook["secret"]).verify(got.body, got.headers)
    assert payload["type"] == "lead.created"


async def test_the_signature_is_an_hmac_of_id_timestamp_and_body(hooks: Hooks) -> None:
    """Standard Webhooks 1.0, checked by hand too: v1,base64(HMAC-SHA256(id.timestamp.body))."""
    hook = await hooks.subscribe()
    await hooks.create_lead()
    await hooks.drain()

    [got] = hooks.receiver.received
    key = base64.b64decode(hook["secret"].removeprefix("whsec_"))
    signed = f"{got.headers['webhook-id']}.{got.headers['webhook-timestamp']}.".encode() + got.body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    assert got.headers["webhook-signature"] == f"v1,{expected}"


async def test_after_a_rotation_both_secrets_sign_and_each_verifies(hooks: Hooks) -> None:
    old = await hooks.subscribe()
    rotated = await hooks.client.post(
        f"{API}/webhooks/{old['id']}/rotate-secret", headers=hooks.admin
    )
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()
    await hooks.create_lead()

    await hooks.drain()

    [got] = hooks.receiver.received
    assert len(got.headers["webhook-signature"].split(" ")) == 2
    for secret in (old["secret"], new["secret"]):
        Verifier(secret).verify(got.body, got.headers)
    assert new["secret"] != old["secret"]
    assert new["previous_secret_expires_at"] is not None


async def test_the_previous_secret_stops_signing_after_its_day(hooks: Hooks) -> None:
    hook = await hooks.subscribe()
    await hooks.client.post(f"{API}/webhooks/{hook['id']}/rotate-secret", headers=hooks.admin)
    async with hooks.engine.begin() as conn:
        await conn.execute(
            update(Webhook).values(previous_secret_expires_at=utcnow() - timedelta(seconds=1))
        )
    await hooks.create_lead()

    await hooks.drain()

    [got] = hooks.receiver.received
    assert len(got.headers["webhook-signature"].split(" ")) == 1


# ------------------------------------------------------------------------------- the body


async def test_the_body_carries_the_event_the_lead_after_it_and_its_changes(
    hooks: Hooks,
) -> None:
    await hooks.subscribe(event_types=["lead.updated"])
    lead = await hooks.create_lead()
    changed = await hooks.patch(lead["id"], company="Analytical Engines")

    await hooks.drain()

    [body] = hooks.receiver.bodies()
    assert body["type"] == "lead.updated"
    assert body["data"]["lead"] == {**changed, "days_since_created": 0}
    assert body["data"]["changes"]["company"] == {"old": None, "new": "Analytical Engines"}
    assert body["data"]["actor_id"] == changed["created_by"]
    assert body["id"] == hooks.receiver.received[0].headers["webhook-id"]
    assert body["timestamp"].endswith("Z")


async def test_after_a_hard_delete_the_lead_is_null(hooks: Hooks) -> None:
    await hooks.subscribe(event_types=["lead.deleted"])
    lead = await hooks.create_lead()
    deleted = await hooks.client.delete(
        f"{API}/leads/{lead['id']}", params={"hard_delete": "true"}, headers=hooks.admin
    )
    assert deleted.status_code == 204, deleted.text

    await hooks.drain()

    [body] = hooks.receiver.bodies()
    assert body["data"]["lead"] is None
    assert body["data"]["lead_id"] == lead["id"]


async def test_every_retry_sends_the_same_id_and_body(hooks: Hooks) -> None:
    await hooks.subscribe()
    await hooks.create_lead()
    hooks.receiver.status = 500
    await hooks.drain()
    hooks.receiver.status = 200
    await hooks.make_due()

    await hooks.drain()

    first, second = hooks.receiver.received
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    assert first.body == second.body


# ------------------------------------------------------------------------ what is delivered


async def test_a_rolled_back_change_delivers_nothing(hooks: Hooks) -> None:
    """A bulk change writes its events, then finds an id it may not change: the whole call,
    events included, is rolled back, and nothing reaches the receiver."""
    await hooks.subscribe()
    lead = await hooks.create_lead()
    await hooks.drain()
    hooks.receiver.received.clear()

    refused = await hooks.client.post(
        f"{API}/leads/bulk/status",
        json={"lead_ids": [lead["id"], 999_999], "status": "CONTACTED"},
        headers=hooks.admin,
    )
    assert refused.status_code == 404, refused.text
    await hooks.drain()

    assert hooks.receiver.received == []


async def test_only_the_subscribed_event_types_are_delivered(hooks: Hooks) -> None:
    await hooks.subscribe(event_types=["lead.status_changed"])
    lead = await hooks.create_lead()
    await hooks.patch(lead["id"], company="Acme")
    await hooks.client.post(
        f"{API}/leads/bulk/status",
        json={"lead_ids": [lead["id"]], "status": "CONTACTED"},
        headers=hooks.admin,
    )

    await hooks.drain()

    assert [body["type"] for body in hooks.receiver.bodies()] == ["lead.status_changed"]


async def test_a_filter_delivers_only_events_of_matching_leads(hooks: Hooks) -> None:
    await hooks.subscribe(filter={"status": ["WON"]})
    won = await hooks.create_lead(email="won@example.com", status="WON")
    await hooks.create_lead(email="new@example.com")

    await hooks.drain()

    assert [body["data"]["lead_id"] for body in hooks.receiver.bodies()] == [won["id"]]


async def test_an_inactive_subscription_gets_nothing(hooks: Hooks) -> None:
    hook = await hooks.subscribe()
    off = await hooks.client.patch(
        f"{API}/webhooks/{hook['id']}", json={"is_active": False}, headers=hooks.admin
    )
    assert off.status_code == 200, off.text
    await hooks.create_lead()

    await hooks.drain()

    assert hooks.receiver.received == []


async def test_each_subscription_gets_its_own_delivery(hooks: Hooks) -> None:
    first = await hooks.subscribe()
    second = await hooks.subscribe()
    await hooks.create_lead()

    await hooks.drain()

    assert len(hooks.receiver.received) == 2
    got = {(d.webhook_id, d.status) for d in await hooks.deliveries()}
    assert got == {(first["id"], "delivered"), (second["id"], "delivered")}


async def test_a_test_event_goes_to_that_subscription_alone(hooks: Hooks) -> None:
    target = await hooks.subscribe()
    await hooks.subscribe()
    queued = await hooks.client.post(f"{API}/webhooks/{target['id']}/test", headers=hooks.admin)
    assert queued.status_code == 202, queued.text

    await hooks.drain()

    [body] = hooks.receiver.bodies()
    assert body["type"] == "webhook.test"
    assert body["data"] == {"webhook_id": target["id"]}
    Verifier(target["secret"]).verify(
        hooks.receiver.received[0].body, hooks.receiver.received[0].headers
    )


# ------------------------------------------------------------------ failures and their retries


async def test_the_receiver_down_then_back_gets_every_event_once_in_order(
    hooks: Hooks,
) -> None:
    await hooks.subscribe()
    await hooks.receiver.stop()
    lead = await hooks.create_lead()
    for n in range(4):
        await hooks.patch(lead["id"], company=f"Company {n}")
    await hooks.drain()
    assert hooks.receiver.received == []

    await hooks.receiver.start()
    await hooks.make_due()
    await hooks.drain()

    ids = hooks.receiver.ids()
    assert len(ids) == 5
    assert ids == sorted(ids, key=int)
    assert [b["type"] for b in hooks.receiver.bodies()] == ["lead.created"] + ["lead.updated"] * 4


async def test_a_failed_attempt_is_recorded_and_retried_after_about_five_seconds(
    hooks: Hooks,
) -> None:
    await hooks.subscribe()
    hooks.receiver.status = 503
    hooks.receiver.answer = b"busy, come back later"
    await hooks.create_lead()
    before = utcnow()

    await hooks.drain()

    [delivery] = await hooks.deliveries()
    assert (delivery.status, delivery.attempts) == ("pending", 1)
    assert (delivery.last_status_code, delivery.last_error) == (503, "busy, come back later")
    wait = delivery.next_attempt_at - before
    assert timedelta(seconds=3.9) <= wait <= timedelta(seconds=6.1)


async def test_later_events_wait_behind_a_retry_so_order_holds(hooks: Hooks) -> None:
    await hooks.subscribe()
    hooks.receiver.status = 500
    lead = await hooks.create_lead()
    await hooks.drain()
    hooks.receiver.status = 204
    await hooks.patch(lead["id"], company="Later")

    await hooks.drain()  # the first is not due yet: nothing may overtake it

    assert [item.headers["webhook-id"] for item in hooks.receiver.received] == [
        hooks.receiver.ids()[0]
    ]
    assert len(hooks.receiver.received) == 1


async def test_a_delivery_is_failed_for_good_after_its_last_retry(hooks: Hooks) -> None:
    await hooks.subscribe()
    hooks.receiver.status = 500
    await hooks.create_lead()
    for _ in range(len(RETRY_AFTER) + 1):
        await hooks.drain()
        await hooks.make_due()

    [delivery] = await hooks.deliveries()
    assert (delivery.status, delivery.attempts) == ("failed", len(RETRY_AFTER) + 1)
    assert len(hooks.receiver.received) == len(RETRY_AFTER) + 1


async def test_a_redirect_is_a_failure_and_is_not_followed(hooks: Hooks) -> None:
    await hooks.subscribe()
    hooks.receiver.status = 307
    hooks.receiver.extra_headers = {"Location": hooks.receiver.url + "/elsewhere"}
    await hooks.create_lead()

    await hooks.drain()

    assert len(hooks.receiver.received) == 1
    [delivery] = await hooks.deliveries()
    assert (delivery.status, delivery.last_status_code) == ("pending", 307)


async def test_an_answer_too_slow_is_a_failure(hooks: Hooks, settings: Settings) -> None:
    import asyncio

    await hooks.subscribe()
    hooks.receiver.hold = asyncio.Event()  # never set: the receiver does not answer
    await hooks.create_lead()
    hooks.worker.settings = settings.model_copy(update={"webhook_timeout_seconds": 0.3})

    await hooks.drain()

    [delivery] = await hooks.deliveries()
    assert delivery.status == "pending"
    assert delivery.last_error == "no answer within 0.3 s"


async def test_a_subscription_failing_for_72_hours_is_deactivated(hooks: Hooks) -> None:
    hook = await hooks.subscribe()
    hooks.receiver.status = 500
    await hooks.create_lead()
    await hooks.drain()
    async with hooks.engine.begin() as conn:
        await conn.execute(update(Webhook).values(failing_since=utcnow() - timedelta(hours=73)))
    await hooks.make_due()

    await hooks.drain()

    shown = await hooks.webhook(hook["id"])
    assert shown["is_active"] is False
    assert shown["disabled_reason"] == "every delivery failed for 72 hours"


async def test_a_success_ends_the_failing_period(hooks: Hooks) -> None:
    hook = await hooks.subscribe()
    hooks.receiver.status = 500
    await hooks.create_lead()
    await hooks.drain()
    assert (await hooks.webhook(hook["id"]))["failing_since"] is not None
    hooks.receiver.status = 200
    await hooks.make_due()

    await hooks.drain()

    assert (await hooks.webhook(hook["id"]))["failing_since"] is None


async def test_turning_a_deactivated_subscription_back_on_clears_why(hooks: Hooks) -> None:
    hook = await hooks.subscribe()
    async with hooks.engine.begin() as conn:
        await conn.execute(update(Webhook).values(is_active=False, disabled_reason="failing"))

    on = await hooks.client.patch(
        f"{API}/webhooks/{hook['id']}", json={"is_active": True}, headers=hooks.admin
    )

    assert (on.json()["is_active"], on.json()["disabled_reason"]) == (True, None)


# --------------------------------------------------------------------- the deliveries' record


async def test_the_deliveries_list_shows_each_attempts_outcome(hooks: Hooks) -> None:
    hook = await hooks.subscribe()
    hooks.receiver.status = 500
    hooks.receiver.answer = b"x" * 5000
    await hooks.create_lead()
    await hooks.drain()

    listed = await hooks.client.get(f"{API}/webhooks/{hook['id']}/deliveries", headers=hooks.admin)

    assert listed.status_code == 200, listed.text
    [item] = listed.json()["items"]
    assert (item["status"], item["attempts"], item["last_status_code"]) == ("pending", 1, 500)
    assert item["last_error"] == "x" * 1000
    assert item["event_type"] == "lead.created"


async def test_the_deliveries_list_pages_newest_first_and_filters_by_status(
    hooks: Hooks,
) -> None:
    hook = await hooks.subscribe()
    lead = await hooks.create_lead()
    for n in range(4):
        await hooks.patch(lead["id"], company=f"C{n}")
    await hooks.drain()
    url = f"{API}/webhooks/{hook['id']}/deliveries"

    first = (await hooks.client.get(url, params={"limit": 3}, headers=hooks.admin)).json()
    rest = await hooks.client.get(
        url, params={"limit": 3, "cursor": first["next_cursor"]}, headers=hooks.admin
    )
    failed = await hooks.client.get(url, params={"status": "failed"}, headers=hooks.admin)

    ids = [item["id"] for item in first["items"] + rest.json()["items"]]
    assert ids == sorted(ids, reverse=True) and len(ids) == 5
    assert rest.json()["next_cursor"] is None
    assert failed.json()["items"] == []


async def test_a_cursor_of_another_status_is_refused(hooks: Hooks) -> None:
    hook = await hooks.subscribe()
    lead = await hooks.create_lead()
    await hooks.patch(lead["id"], company="C")
    await hooks.drain()
    url = f"{API}/webhooks/{hook['id']}/deliveries"
    page = (await hooks.client.get(url, params={"limit": 1}, headers=hooks.admin)).json()

    refused = await hooks.client.get(
        url, params={"cursor": page["next_cursor"], "status": "failed"}, headers=hooks.admin
    )

    assert refused.status_code == 422
    assert refused.json()["errors"][0]["loc"][-1] == "cursor"


async def test_a_retry_sends_a_delivery_again_at_once(hooks: Hooks) -> None:
    hook = await hooks.subscribe()
    await hooks.create_lead()
    await hooks.drain()
    [delivery] = await hooks.deliveries()

    retried = await hooks.client.post(
        f"{API}/webhooks/{hook['id']}/deliveries/{delivery.id}/retry", headers=hooks.admin
    )
    assert retried.status_code == 202, retried.text
    await hooks.drain()

    assert len(hooks.receiver.received) == 2
    assert len(set(hooks.receiver.ids())) == 1


async def test_a_delivery_of_another_subscription_is_not_found(hooks: Hooks) -> None:
    first = await hooks.subscribe()
    second = await hooks.subscribe()
    await hooks.create_lead()
    await hooks.drain()
    theirs = next(d for d in await hooks.deliveries() if d.webhook_id == second["id"])

    answer = await hooks.client.post(
        f"{API}/webhooks/{first['id']}/deliveries/{theirs.id}/retry", headers=hooks.admin
    )

    assert answer.status_code == 404
    assert answer.json()["code"] == "delivery_not_found"


# ----------------------------------------------------------------- addresses at delivery time


async def test_a_private_address_is_not_sent_to_once_the_setting_is_off(
    hooks: Hooks, settings: Settings
) -> None:
    """Made while private networks were allowed (the receiver is on 127.0.0.1), then the
    setting goes off: the delivery is refused before any connection is made."""
    await hooks.subscribe()
    await hooks.create_lead()
    hooks.worker.settings = settings.model_copy(update={"webhook_allow_private_networks": False})

    await hooks.drain()

    assert hooks.receiver.received == []
    [delivery] = await hooks.deliveries()
    assert delivery.status == "pending"
    assert "127.0.0.1" in (delivery.last_error or "")
    assert "WEBHOOK_ALLOW_PRIVATE_NETWORKS" in (delivery.last_error or "")


async def test_an_undispatched_event_waits_in_the_table(hooks: Hooks) -> None:
    """Until a worker runs, the committed event is the queue: nothing is lost by a worker
    that is down."""
    await hooks.subscribe()
    await hooks.create_lead()

    async with hooks.engine.connect() as conn:
        waiting = await conn.scalar(
            text("SELECT count(*) FROM lead_events WHERE dispatched_at IS NULL")
        )
    assert waiting == 1
    await hooks.drain()
    assert len(hooks.receiver.received) == 1
