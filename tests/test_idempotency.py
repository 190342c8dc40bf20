"""Safe retries (app/services/idempotency.py, app/api/idempotency.py): a write sent again with
the same `Idempotency-Key` and body gets the first answer again, byte for byte, with
`Idempotent-Replayed: true`, and changes nothing; another body gets 422; a first request that
failed leaves nothing, so its retry runs; keys belong to their user and expire. The concurrent
cases are in tests/test_concurrency.py."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.models import IdempotencyKey, Lead, LeadEvent, User
from app.models.types import utcnow
from app.services import idempotency
from tests.helpers import LeadFactory, change_user, claims_bearer, sql_statements, uid

LEADS = "/api/v1/leads"
# These tests send one lead again on purpose: it is not refused as a duplicate of itself.
CREATE = f"{LEADS}?on_duplicate=allow"
NEW = {"first_name": "Ada", "last_name": "Lovelace", "email": "ada@example.com"}


async def count(db: AsyncSession, model: Any) -> int:
    return int(await db.scalar(select(func.count()).select_from(model)) or 0)


def keyed(headers: dict[str, str], key: str = "key-1") -> dict[str, str]:
    return {**headers, "Idempotency-Key": key}


# Each write that takes a key, as (path, body) for a lead id and a second id.
def writes(lead_id: int, other_id: int, agent_id: int) -> dict[str, tuple[str, dict[str, Any]]]:
    return {
        "create": (CREATE, NEW),
        "note": (f"{LEADS}/{lead_id}/notes", {"text": "Called"}),
        "call": (f"{LEADS}/{lead_id}/calls", {"note": "Voicemail"}),
        "bulk_status": (f"{LEADS}/bulk/status", {"lead_ids": [lead_id, other_id], "status": "WON"}),
        "bulk_assign": (
            f"{LEADS}/bulk/assign",
            {"lead_ids": [lead_id, other_id], "agent_user_id": agent_id},
        ),
    }


WRITES = ["create", "note", "call", "bulk_status", "bulk_assign"]


@pytest.mark.parametrize("write", WRITES)
async def test_a_repeat_gets_the_first_answer_byte_for_byte_and_changes_nothing(
    client: httpx.AsyncClient,
    db: AsyncSession,
    h: dict[str, str],
    make_lead: LeadFactory,
    agent: User,
    write: str,
) -> None:
    lead_id, other_id = uid(await make_lead()), uid(await make_lead())
    path, body = writes(lead_id, other_id, uid(agent))[write]
    first = await client.post(path, json=body, headers=keyed(h))
    assert first.status_code in (200, 201), first.text
    leads, events = await count(db, Lead), await count(db, LeadEvent)

    again = await client.post(path, json=body, headers=keyed(h))

    assert again.status_code == first.status_code
    assert again.content == first.content
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    for name in ("Content-Type", "Location", "ETag"):
        assert again.headers.get(name) == first.headers.get(name), name
    assert (await count(db, Lead), await count(db, LeadEvent)) == (leads, events)


async def test_without_a_key_each_request_runs(
    client: httpx.AsyncClient, db: AsyncSession, h: dict[str, str]
) -> None:
    for _ in range(2):
        assert (await client.post(CREATE, json=NEW, headers=h)).status_code == 201
    assert await count(db, Lead) == 2
    assert await count(db, IdempotencyKey) == 0


async def test_the_same_key_with_another_body_gets_422_and_changes_nothing(
    client: httpx.AsyncClient, db: AsyncSession, h: dict[str, str]
) -> None:
    assert (await client.post(CREATE, json=NEW, headers=keyed(h))).status_code == 201
    other = {**NEW, "first_name": "Grace"}
    response = await client.post(CREATE, json=other, headers=keyed(h))
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "idempotency_key_reused"
    assert await count(db, Lead) == 1


async def test_the_same_key_on_another_path_gets_422(
    client: httpx.AsyncClient, h: dict[str, str], make_lead: LeadFactory
) -> None:
    lead_id = uid(await make_lead())
    body = {"text": "Hello"}
    assert (await client.post(f"{LEADS}/{lead_id}/notes", json=body, headers=keyed(h))).is_success
    response = await client.post(f"{LEADS}/{lead_id}/calls", json=body, headers=keyed(h))
    assert response.status_code == 422, response.text


async def test_keys_belong_to_their_user(
    client: httpx.AsyncClient, db: AsyncSession, settings: Settings, agent: User, other_agent: User
) -> None:
    for user in (agent, other_agent):
        response = await client.post(
            LEADS, json=NEW, headers=keyed(claims_bearer(settings, uid(user)))
        )
        assert response.status_code == 201, response.text
        assert "Idempotent-Replayed" not in response.headers
    assert await count(db, Lead) == 2


async def test_a_refusal_is_kept_and_its_retry_hears_it_again(
    client: httpx.AsyncClient,
    db: AsyncSession,
    h: dict[str, str],
    make_lead: LeadFactory,
    superuser: User,
) -> None:
    """The first note is refused (the lead is archived: 409): that is the key's answer, even
    once the lead is restored; a new key runs."""
    from app.services import LeadService

    lead_id = uid(await make_lead())
    await LeadService.delete_lead(db, lead_id, user_id=superuser.id)
    path, body = f"{LEADS}/{lead_id}/notes", {"text": "Hello"}
    refused = await client.post(path, json=body, headers=keyed(h))
    assert refused.status_code == 409, refused.text
    await LeadService.restore_lead(db, lead_id, user_id=uid(superuser))

    again = await client.post(path, json=body, headers=keyed(h))
    assert (again.status_code, again.content) == (409, refused.content)
    assert again.headers["Idempotent-Replayed"] == "true"
    fresh = await client.post(path, json=body, headers=keyed(h, "key-2"))
    assert fresh.status_code == 200, fresh.text


async def test_a_caller_refused_inside_the_write_leaves_no_answer(
    client: httpx.AsyncClient, db: AsyncSession, settings: Settings, agent: User
) -> None:
    """The agent's token is fine but the account was deactivated since: the create's own
    account check refuses it (401). That is no answer of the key's."""
    headers = keyed(claims_bearer(settings, uid(agent)))
    await change_user(db, uid(agent), is_active=False)
    response = await client.post(CREATE, json=NEW, headers=headers)
    assert response.status_code == 401, response.text
    assert await count(db, IdempotencyKey) == 0


async def test_a_reused_key_keeps_its_first_answer(
    client: httpx.AsyncClient, db: AsyncSession, h: dict[str, str]
) -> None:
    first = await client.post(CREATE, json=NEW, headers=keyed(h))
    reused = await client.post(CREATE, json={**NEW, "first_name": "B"}, headers=keyed(h))
    assert reused.status_code == 422, reused.text
    again = await client.post(CREATE, json=NEW, headers=keyed(h))
    assert (again.status_code, again.content) == (201, first.content)


async def test_an_expired_key_runs_again(
    client: httpx.AsyncClient, db: AsyncSession, h: dict[str, str]
) -> None:
    assert (await client.post(CREATE, json=NEW, headers=keyed(h))).status_code == 201
    await db.execute(update(IdempotencyKey).values(expires_at=utcnow() - timedelta(seconds=1)))
    await db.commit()
    again = await client.post(CREATE, json=NEW, headers=keyed(h))
    assert again.status_code == 201, again.text
    assert "Idempotent-Replayed" not in again.headers
    assert await count(db, Lead) == 2
    assert await count(db, IdempotencyKey) == 1


async def test_a_key_is_kept_for_the_configured_time(
    client: httpx.AsyncClient, db: AsyncSession, h: dict[str, str], settings: Settings
) -> None:
    assert (await client.post(CREATE, json=NEW, headers=keyed(h))).status_code == 201
    row = await db.scalar(select(IdempotencyKey))
    assert row is not None
    kept = (row.expires_at - row.created_at).total_seconds()
    assert kept == settings.idempotency_ttl_seconds == 86_400


@pytest.mark.parametrize("key", [b"", b"x" * 256, "naïve".encode("latin-1"), b"tab\there"])
async def test_a_malformed_key_gets_400_naming_the_header(
    client: httpx.AsyncClient, db: AsyncSession, h: dict[str, str], key: bytes
) -> None:
    headers: dict[str, Any] = {**h, "Idempotency-Key": key}
    response = await client.post(CREATE, json=NEW, headers=headers)
    assert response.status_code == 400, response.text
    assert response.json()["errors"][0]["loc"] == ["header", "Idempotency-Key"]
    assert await count(db, Lead) == 0


async def test_a_key_of_255_printable_characters_is_accepted(
    client: httpx.AsyncClient, h: dict[str, str]
) -> None:
    key = ("~ !" * 100)[:255]
    assert (await client.post(CREATE, json=NEW, headers=keyed(h, key))).status_code == 201


async def test_expired_keys_are_purged_a_bounded_batch_at_a_time(
    client: httpx.AsyncClient, db: AsyncSession, h: dict[str, str], superuser: User
) -> None:
    expired = utcnow() - timedelta(hours=1)
    db.add_all(
        IdempotencyKey(
            user_id=uid(superuser),
            key=f"old-{n}",
            fingerprint="f",
            status_code=201,
            headers={},
            body=b"{}",
            created_at=expired,
            expires_at=expired,
        )
        for n in range(idempotency.PURGE_BATCH + 30)
    )
    await db.commit()
    async with sql_statements(db) as statements:
        assert (await client.post(CREATE, json=NEW, headers=keyed(h))).status_code == 201
    # 30 expired left, and the new one.
    assert await count(db, IdempotencyKey) == 31
    purges = [s for s in statements if s.lstrip().startswith("DELETE FROM idempotency_keys")]
    assert len(purges) == 2  # this key's own expired row, then one batch
