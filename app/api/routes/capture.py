"""/capture/{public_key}: where a capture form's page posts, with no login (issue 17).

The body is JSON or `application/x-www-form-urlencoded` (what a plain HTML form sends), one
schema for both. CORS is the form's own (app/api/cors.py): the preflight below, and the
POST's answer, name the request's Origin only when the form allows it.
"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Path, Request, Response, status
from starlette.exceptions import HTTPException

from app.api.cors import ALLOWED_ORIGIN
from app.api.deps import ClientAddress, SessionDep
from app.api.errors import error_responses
from app.schemas.capture import CaptureReceived, CaptureSubmission
from app.services.capture_forms import CaptureFormService, CaptureTarget
from app.services.exceptions import ValidationException
from app.services.lead_capture import LeadCapture

router = APIRouter(prefix="/capture", tags=["capture"])

JSON = "application/json"
URLENCODED = "application/x-www-form-urlencoded"
MAX_FIELDS = 100
PREFLIGHT_MAX_AGE = "600"
PublicKey = Annotated[
    str,
    Path(
        min_length=1,
        max_length=100,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="The form's public key (`public_key` of POST /capture-forms).",
    ),
]
SUBMISSION_REF = {"$ref": f"#/components/schemas/{CaptureSubmission.__name__}"}
SUBMISSION_BODY = {
    "requestBody": {
        "required": True,
        "content": {JSON: {"schema": SUBMISSION_REF}, URLENCODED: {"schema": SUBMISSION_REF}},
    }
}
TOO_MANY = {
    429: {
        **error_responses(429)[429],
        "headers": {
            "Retry-After": {
                "description": "Seconds until this address may post to the form again.",
                "schema": {"type": "integer"},
            }
        },
    }
}


def document_submission(openapi: dict[str, Any]) -> None:
    """Put `CaptureSubmission` in the document's components: the route reads its body itself
    (two media types), so FastAPI does not collect the model on its own. Generated with the
    document, so its limits are the settings in force."""
    schemas = openapi.setdefault("components", {}).setdefault("schemas", {})
    schemas[CaptureSubmission.__name__] = CaptureSubmission.model_json_schema(
        ref_template="#/components/schemas/{model}"
    )


def _allow_origin(request: Request, target: CaptureTarget) -> str | None:
    """The request's Origin if the form allows it (put where app/api/cors.py finds it)."""
    origin = request.headers.get("origin")
    if origin is None or origin not in target.allowed_origins:
        return None
    setattr(request.state, ALLOWED_ORIGIN, origin)
    return origin


async def _submitted_fields(request: Request) -> dict[str, Any]:
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type == JSON:
        try:
            data = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            raise ValidationException([(["body"], "The body is not valid JSON.")]) from None
        if not isinstance(data, dict):
            raise ValidationException([(["body"], "The body must be a JSON object.")])
        return data
    if media_type == URLENCODED:
        try:
            form = await request.form(max_files=0, max_fields=MAX_FIELDS)
        except HTTPException as exc:  # more fields than MAX_FIELDS, or a form unreadable
            raise ValidationException(
                [(["body"], f"The form cannot be read: {exc.detail}")]
            ) from None
        return {name: value for name, value in form.multi_items() if isinstance(value, str)}
    raise HTTPException(
        status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
        f"Send the form as {URLENCODED} (an HTML form's default) or as {JSON}.",
    )


@router.post(
    "/{public_key}",
    summary="Submit a capture form",
    response_model=CaptureReceived,
    status_code=status.HTTP_202_ACCEPTED,
    responses={**error_responses(404, 413, 415, 422), **TOO_MANY},
    openapi_extra=SUBMISSION_BODY,
)
async def submit_capture_form(
    public_key: PublicKey, request: Request, db: SessionDep, client_address: ClientAddress
) -> CaptureReceived:
    """No login: the key names the form. The answer is always the same 202, whether a lead was
    made, the person's lead on file got a note, or the honeypot caught a bot; an invalid
    submission gets 422 naming the field, without the values sent; refused so although the
    schema alone allows them: an email whose syntax is invalid, and a submission with neither
    an email nor a phone (a blank one counts as none). At most
    CAPTURE_RATE_PER_MINUTE submissions per client address and form each minute (429 with
    Retry-After). 404 for a key no form has (a rotated one among them)."""
    target = await CaptureFormService.target(db, public_key)
    _allow_origin(request, target)
    fields = await _submitted_fields(request)
    await LeadCapture.submit(db, target.form_id, fields, client_address=client_address)
    return CaptureReceived()


@router.options("/{public_key}", include_in_schema=False)
async def capture_form_preflight(
    public_key: PublicKey, request: Request, db: SessionDep
) -> Response:
    """The browser's CORS preflight: allowed for the form's own origins, and no CORS header
    for any other, so the browser does not send the post."""
    target = await CaptureFormService.target(db, public_key)
    headers = {}
    if _allow_origin(request, target) is not None:
        headers = {
            "Access-Control-Allow-Methods": "POST",
            "Access-Control-Allow-Headers": "Content-Type",
            "Access-Control-Max-Age": PREFLIGHT_MAX_AGE,
        }
    return Response(status_code=status.HTTP_204_NO_CONTENT, headers=headers)
