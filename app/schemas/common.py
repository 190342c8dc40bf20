"""Bodies shared by every part of the API."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class ErrorItem(BaseModel):
    loc: list[str | int] = Field(description="Where the problem is, e.g. ['body', 'email'].")
    msg: str


class ErrorResponse(BaseModel):
    """The one shape of every error the API returns."""

    detail: str = Field(description="A sentence for a person.")
    code: str = Field(description="A stable snake_case code for programs.")
    errors: list[ErrorItem] | None = Field(
        default=None, description="Each invalid field (validation errors only)."
    )


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    status: Literal["ok"] = "ok"
    database: Literal["ok"] = "ok"
