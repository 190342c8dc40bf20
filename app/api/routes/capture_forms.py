"""/capture-forms: the web forms that post leads without a login (superusers only; issue 17).
The public endpoint they post to is app/api/routes/capture.py."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response, status

from app.api.deps import CurrentUser, SessionDep
from app.api.errors import created_at, error_responses
from app.models import CaptureForm
from app.schemas.capture import (
    CaptureFormCreate,
    CaptureFormCreated,
    CaptureFormPage,
    CaptureFormRead,
    CaptureFormUpdate,
)
from app.schemas.common import MAX_ID, SettingLimit
from app.services.capture_forms import CaptureFormService, NewKey

router = APIRouter(prefix="/capture-forms", tags=["capture forms"])

FormId = Annotated[int, Path(ge=1, le=MAX_ID, description="The form's id.")]
ONE = error_responses(401, 403, 404, 422)
WRITE = error_responses(400, 401, 403, 404, 413, 422)


def _created(made: NewKey) -> CaptureFormCreated:
    read = CaptureFormRead.model_validate(made.form)
    return CaptureFormCreated(**read.model_dump(), public_key=made.public_key)


def _read(form: CaptureForm) -> CaptureFormRead:
    return CaptureFormRead.model_validate(form)


@router.post(
    "",
    summary="Make a capture form",
    response_model=CaptureFormCreated,
    status_code=status.HTTP_201_CREATED,
    responses={**created_at("capture form"), **error_responses(400, 401, 403, 404, 413, 422)},
)
async def create_capture_form(
    body: CaptureFormCreate,
    db: SessionDep,
    user: CurrentUser,
    request: Request,
    response: Response,
) -> CaptureFormCreated:
    """Its `public_key` is in the answer, this once: the page posts to
    `/api/v1/capture/{public_key}`. 404 for an `assignment_rule_id` no rule has. Refused with
    422 although the schema alone allows it: a tag longer than 50 characters once lowercased."""
    made = await CaptureFormService.create(db, body.model_dump(), acting_user_id=user.id)
    url = request.url_for("get_capture_form", form_id=made.form.id)
    response.headers["Location"] = str(url.path)
    return _created(made)


@router.get(
    "",
    summary="List capture forms",
    response_model=CaptureFormPage,
    status_code=status.HTTP_200_OK,
    responses=error_responses(401, 403, 422),
)
async def list_capture_forms(
    db: SessionDep,
    user: CurrentUser,
    skip: Annotated[int, Query(ge=0, le=MAX_ID, description="Forms to skip.")] = 0,
    limit: Annotated[
        int, Query(ge=1, description="Forms per page."), SettingLimit("page_max_limit")
    ] = 100,
) -> CaptureFormPage:
    """The forms, by id, never their keys."""
    forms, total = await CaptureFormService.list_forms(
        db, acting_user_id=user.id, skip=skip, limit=limit
    )
    return CaptureFormPage(items=[_read(f) for f in forms], total=total, skip=skip, limit=limit)


@router.get(
    "/{form_id}",
    summary="Read a capture form",
    response_model=CaptureFormRead,
    status_code=status.HTTP_200_OK,
    responses=ONE,
)
async def get_capture_form(form_id: FormId, db: SessionDep, user: CurrentUser) -> CaptureFormRead:
    return _read(await CaptureFormService.get(db, form_id, acting_user_id=user.id))


@router.patch(
    "/{form_id}",
    summary="Change a capture form",
    response_model=CaptureFormRead,
    status_code=status.HTTP_200_OK,
    responses=WRITE,
)
async def update_capture_form(
    form_id: FormId, body: CaptureFormUpdate, db: SessionDep, user: CurrentUser
) -> CaptureFormRead:
    """`assignment_rule_id: null`: its new leads stay unassigned. Refused with 422 although
    the schema alone allows it: a tag longer than 50 characters once lowercased."""
    data = body.model_dump(exclude_unset=True)
    return _read(await CaptureFormService.update(db, form_id, data, acting_user_id=user.id))


@router.delete(
    "/{form_id}",
    summary="Delete a capture form",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=ONE,
)
async def delete_capture_form(form_id: FormId, db: SessionDep, user: CurrentUser) -> Response:
    """Its key stops working at once; the leads it brought in stay."""
    await CaptureFormService.delete(db, form_id, acting_user_id=user.id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/{form_id}/rotate-key",
    summary="Rotate a capture form's key",
    response_model=CaptureFormCreated,
    status_code=status.HTTP_200_OK,
    responses=ONE,
)
async def rotate_capture_form_key(
    form_id: FormId, db: SessionDep, user: CurrentUser
) -> CaptureFormCreated:
    """A new `public_key`, shown this once; the old one stops working at once (put the new one
    in the page first)."""
    return _created(await CaptureFormService.rotate_key(db, form_id, acting_user_id=user.id))
