"""Lead responses written straight to JSON bytes.

A page of 50 leads through `LeadRead.model_validate` and FastAPI's response validation costs more
CPU than the database spends finding them. The shapes here are `LeadRead` and `LeadPage` exactly
(tests/test_api_render.py compares them field by field), produced from whatever the service hands
back (ORM objects or plain rows) with one dict per lead and one `orjson.dumps`. Routes keep
declaring `response_model` for the OpenAPI document; returning a `Response` skips the second pass.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from fastapi import Response
from pydantic import BaseModel

from app.models.types import utcnow
from app.schemas.lead import lead_fields
from app.services.lead_events import JSON_OPTIONS, json_default
from app.services.preconditions import Precondition, entity_tag


class JSONBytes(Response):
    media_type = "application/json"


def _dumps(content: Any) -> bytes:
    # The same rendering as the values in a lead's events (app/services/lead_events.py).
    return orjson.dumps(content, default=json_default, option=JSON_OPTIONS)


def lead_response(
    lead: Any, *, status_code: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    """The lead as JSON, with its ETag."""
    fields = lead_fields(lead, utcnow())
    tagged = {"ETag": entity_tag(fields["id"], fields["version"]), **(headers or {})}
    return JSONBytes(_dumps(fields), status_code=status_code, headers=tagged)


def lead_or_not_modified(lead: Any, cached: Precondition | None) -> Response:
    """The lead, or 304 with its ETag and no body when the client's copy (`cached`, from
    If-None-Match) is current."""
    if cached is not None and cached.allows(lead.id, lead.version):  # a Lead or a LeadRow
        return Response(status_code=304, headers={"ETag": entity_tag(lead.id, lead.version)})
    return lead_response(lead)


def bulk_response(lead_ids: Sequence[int]) -> Response:
    """What a bulk call answers (`BulkResult`)."""
    return JSONBytes(_dumps({"updated_count": len(lead_ids), "lead_ids": list(lead_ids)}))


def bulk_or_preview_response(result: Sequence[int] | int) -> Response:
    """What a bulk call answers: `BulkResult` for the leads changed, or `BulkPreview` for a
    dry run's count."""
    if isinstance(result, int):
        return JSONBytes(_dumps({"matched": result}))
    return bulk_response(result)


def page_response(
    leads: Sequence[Any],
    *,
    total: int,
    total_is_exact: bool,
    skip: int,
    limit: int,
    next_cursor: str | None,
) -> Response:
    now = utcnow()
    return JSONBytes(
        _dumps(
            {
                "items": [lead_fields(lead, now) for lead in leads],
                "total": total,
                "total_is_exact": total_is_exact,
                "skip": skip,
                "limit": limit,
                "next_cursor": next_cursor,
            }
        )
    )


def model_response(
    model: BaseModel, *, status_code: int, headers: Mapping[str, str] | None = None
) -> Response:
    """A schema's JSON with a status other than the route's own (a 202 beside a 200)."""
    return JSONBytes(model.model_dump_json().encode(), status_code=status_code, headers=headers)
