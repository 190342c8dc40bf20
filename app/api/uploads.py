"""A file sent to the API: as the request's whole body, or as the form field `file`."""

from __future__ import annotations

from fastapi import Request
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from app.services.exceptions import ValidationException

FORM = "multipart/form-data"
FIELD = "file"


async def uploaded_file(request: Request) -> bytes:
    """The file's bytes. A form without a `file` part is a 422 naming it. (The body's size
    was checked on the way in: app/api/limits.py.)"""
    if request.headers.get("content-type", "").startswith(FORM):
        try:
            form = await request.form(max_files=1, max_fields=0)
        except HTTPException as exc:  # a form that cannot be read, or holds more than `file`
            raise ValidationException(
                [(["body"], f"The form must hold one part, `file`: {exc.detail}")]
            ) from None
        upload = form.get(FIELD)
        if not isinstance(upload, UploadFile):
            raise ValidationException([(["body", FIELD], "The form needs a `file` part.")])
        return await upload.read()
    return await request.body()
