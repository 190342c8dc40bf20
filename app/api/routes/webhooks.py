"""/webhooks: subscriptions to lead events and their deliveries (superusers only; issue 15)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response, status

from app.api.deps import CurrentUser, SessionDep
from app.api.errors import created_at, error_responses
from app.models.webhook import Webhook
from app.schemas.common import SettingLimit
from app.schemas.webhook import (
    DeliveryPage,
    DeliveryQuery,
    DeliveryRead,
    WebhookCreate,
    WebhookCreated,
    WebhookPage,
    WebhookRead,
    WebhookUpdate,
)
from app.services.security import MAX_SESSION_ID
from app.services.webhooks import WebhookService

router = APIRouter(prefix="/webhooks", tags=["webhooks"])

WebhookId = Annotated[int, Path(ge=1, le=MAX_SESSION_ID, description="The subscription's id.")]
DeliveryId = Annotated[int, Path(ge=1, le=MAX_SESSION_ID, description="The delivery's id.")]
ONE = error_responses(401, 403, 404, 422)
WRITE = error_responses(400, 401, 403, 404, 413, 422)


def _created(row: Webhook) -> WebhookCreated:
    return WebhookCreated.model_validate(
        {**WebhookRead.model_validate(row).model_dump(), "secret": row.secret}
    )


@router.post(
    "",
    summary="Subscribe to lead events",
    response_model=WebhookCreated,
    status_code=status.HTTP_201_CREATED,
    responses={**created_at("webhook"), **error_responses(400, 401, 403, 413, 422)},
)
async def create_webhook(
    body: WebhookCreate, db: SessionDep, user: CurrentUser, request: Request, response: Response
) -> WebhookCreated:
    """Every event of the types asked for (and, with `filter`, whose lead matches it after the
    change) is POSTed to `url`, signed per Standard Webhooks with the answer's `secret`, which
    is shown this once. 422 for a URL the server may not send to (naming `url`: see its
    description), which the schema cannot tell."""
    row = await WebhookService.create(db, body.model_dump(), acting_user_id=user.id)
    response.headers["Location"] = str(request.url_for("get_webhook", webhook_id=row.id).path)
    return _created(row)


@router.get(
    "",
    summary="List webhooks",
    response_model=WebhookPage,
    status_code=status.HTTP_200_OK,
    responses=error_responses(401, 403, 422),
)
async def list_webhooks(
    db: SessionDep,
    user: CurrentUser,
    skip: Annotated[int, Query(ge=0, le=MAX_SESSION_ID, description="Webhooks to skip.")] = 0,
    limit: Annotated[
        int, Query(ge=1, description="Webhooks per page."), SettingLimit("page_max_limit")
    ] = 100,
) -> WebhookPage:
    """The subscriptions, by id, never their secrets."""
    rows, total = await WebhookService.list_webhooks(
        db, acting_user_id=user.id, skip=skip, limit=limit
    )
    items = [WebhookRead.model_validate(row) for row in rows]
    return WebhookPage(items=items, total=total, skip=skip, limit=limit)


@router.get(
    "/{webhook_id}",
    summary="Read a webhook",
    response_model=WebhookRead,
    status_code=status.HTTP_200_OK,
    responses=ONE,
)
async def get_webhook(webhook_id: WebhookId, db: SessionDep, user: CurrentUser) -> WebhookRead:
    """One subscription, with whether it is active and, if the worker turned it off, why."""
    row = await WebhookService.get(db, webhook_id, acting_user_id=user.id)
    return WebhookRead.model_validate(row)


@router.patch(
    "/{webhook_id}",
    summary="Change a webhook",
    response_model=WebhookRead,
    status_code=status.HTTP_200_OK,
    responses=WRITE,
)
async def update_webhook(
    webhook_id: WebhookId, body: WebhookUpdate, db: SessionDep, user: CurrentUser
) -> WebhookRead:
    """Change what is sent; `is_active: true` turns a deactivated one back on. A new `url` is
    checked as at creation (422)."""
    data = body.model_dump(exclude_unset=True)
    row = await WebhookService.update(db, webhook_id, data, acting_user_id=user.id)
    return WebhookRead.model_validate(row)


@router.delete(
    "/{webhook_id}",
    summary="Delete a webhook",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=ONE,
)
async def delete_webhook(webhook_id: WebhookId, db: SessionDep, user: CurrentUser) -> Response:
    """The subscription and its deliveries go; nothing more is sent to it."""
    await WebhookService.delete(db, webhook_id, acting_user_id=user.id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/{webhook_id}/rotate-secret",
    summary="Rotate a webhook's secret",
    response_model=WebhookCreated,
    status_code=status.HTTP_200_OK,
    responses=ONE,
)
async def rotate_webhook_secret(
    webhook_id: WebhookId, db: SessionDep, user: CurrentUser
) -> WebhookCreated:
    """A new `secret`, shown this once. For 24 hours (`previous_secret_expires_at`) every
    delivery carries two signatures, one per secret, so the receiver can switch at leisure."""
    row = await WebhookService.rotate_secret(db, webhook_id, acting_user_id=user.id)
    return _created(row)


@router.post(
    "/{webhook_id}/test",
    summary="Send a test event",
    response_model=DeliveryRead,
    status_code=status.HTTP_202_ACCEPTED,
    responses=ONE,
)
async def test_webhook(webhook_id: WebhookId, db: SessionDep, user: CurrentUser) -> DeliveryRead:
    """Queues a `webhook.test` message to this subscription alone; follow it in its
    deliveries."""
    delivery = await WebhookService.queue_test(db, webhook_id, acting_user_id=user.id)
    return DeliveryRead.model_validate(delivery)


@router.get(
    "/{webhook_id}/deliveries",
    summary="List a webhook's deliveries",
    response_model=DeliveryPage,
    status_code=status.HTTP_200_OK,
    responses=ONE,
)
async def list_deliveries(
    webhook_id: WebhookId,
    query: Annotated[DeliveryQuery, Query()],
    db: SessionDep,
    user: CurrentUser,
) -> DeliveryPage:
    """Newest first: each event's state at this subscription, its attempts and the last
    answer. Refused with 422 although the schema allows it: a cursor this API did not hand
    out, or one made for another `status`."""
    rows, next_cursor = await WebhookService.list_deliveries(
        db, webhook_id, query, acting_user_id=user.id
    )
    items = [DeliveryRead.model_validate(row) for row in rows]
    return DeliveryPage(items=items, next_cursor=next_cursor)


@router.post(
    "/{webhook_id}/deliveries/{delivery_id}/retry",
    summary="Send a delivery again",
    response_model=DeliveryRead,
    status_code=status.HTTP_202_ACCEPTED,
    responses=ONE,
)
async def retry_delivery(
    webhook_id: WebhookId, delivery_id: DeliveryId, db: SessionDep, user: CurrentUser
) -> DeliveryRead:
    """Queued again, due at once, whatever its state (a receiver that lost a delivered event
    may ask for it again)."""
    row = await WebhookService.retry_delivery(db, webhook_id, delivery_id, acting_user_id=user.id)
    return DeliveryRead.model_validate(row)
