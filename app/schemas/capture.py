"""Capture form bodies (issue 17): a form as made, changed and shown (its public key shown
only when made or rotated), and what a web page posts to one.

A submission is what a plain HTML form sends: text fields only, each optional in the schema
(an empty input arrives as ""), with the lead's own rules applied when the lead is built.
Fields a form may carry besides (a submit button's name, a consent box, tracking fields) are
ignored rather than refused: a page cannot be fixed as fast as a lead is lost.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import MISSING, AfterValidator, BaseModel, ConfigDict, Field

from app.models import LeadSource
from app.models.capture_form import FORM_MAX_ORIGINS, FORM_NAME_MAX_LENGTH, ORIGIN_MAX_LENGTH
from app.models.validation import NO_NUL_PATTERN, NOT_BLANK_PATTERN
from app.schemas.common import BodyId, RequestBody, SettingLimit
from app.schemas.lead import (
    EMAIL_DESCRIPTION,
    PHONE_DESCRIPTION,
    Company,
    Email,
    JobTitle,
    Name,
    Phone,
    Tags,
)

HONEYPOT_FIELD = "website"
HONEYPOT_MAX_LENGTH = 2048
FormName = Annotated[
    str, Field(min_length=1, max_length=FORM_NAME_MAX_LENGTH, pattern=NOT_BLANK_PATTERN)
]
# A browser's Origin header: scheme, host and optional port; no path, no trailing slash.
ORIGIN_PATTERN = r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?$"


def _lowercase_distinct(origins: list[str]) -> list[str]:
    """Browsers send an origin's host lowercased: so is it kept, to be compared exactly."""
    return list(dict.fromkeys(origin.lower() for origin in origins))


Origins = Annotated[
    list[Annotated[str, Field(max_length=ORIGIN_MAX_LENGTH, pattern=ORIGIN_PATTERN)]],
    Field(max_length=FORM_MAX_ORIGINS),
    AfterValidator(_lowercase_distinct),
]
ORIGINS_RULE = (
    "Pages of these origins (`https://www.example.com`: scheme, host, optional port) may post "
    "with fetch/XMLHttpRequest; CORS answers name exactly these (hosts compared lowercased). A "
    "plain HTML form needs none: its post is a navigation, not a CORS request."
)
TAGS_RULE = "Tags every lead from this form gets (trimmed, lowercased)."
RULE_RULE = "The assignment rule its new leads are assigned by; none: they stay unassigned."


class CaptureFormCreate(RequestBody):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "Contact us",
                    "allowed_origins": ["https://www.example.com"],
                    "source": "WEBSITE",
                    "tags": ["inbound"],
                    "assignment_rule_id": 1,
                }
            ]
        },
    )

    name: FormName = Field(description="Named in the note of a re-submission.")
    allowed_origins: Origins = Field(default_factory=list, description=ORIGINS_RULE)
    source: LeadSource = Field(LeadSource.WEBSITE, description="The source of its leads.")
    tags: Tags = Field(default_factory=list, description=TAGS_RULE)
    assignment_rule_id: BodyId | None = Field(None, description=RULE_RULE)


class CaptureFormUpdate(RequestBody):
    model_config = ConfigDict(json_schema_extra={"examples": [{"assignment_rule_id": None}]})

    name: FormName | MISSING = Field(MISSING, description="Its name.")
    allowed_origins: Origins | MISSING = Field(MISSING, description=ORIGINS_RULE)
    source: LeadSource | MISSING = Field(MISSING, description="The source of its leads.")
    tags: Tags | MISSING = Field(MISSING, description=TAGS_RULE)
    assignment_rule_id: BodyId | MISSING | None = Field(MISSING, description=RULE_RULE)


class CaptureFormRead(BaseModel):
    """A form, without its public key."""

    model_config = ConfigDict(from_attributes=True)

    id: int = Field(description="The form's id.")
    name: str = Field(description="Its name.")
    key_hint: str = Field(description="The first characters of its public key.")
    allowed_origins: list[str] = Field(description=ORIGINS_RULE)
    source: LeadSource = Field(description="The source of its leads.")
    tags: list[str] = Field(description=TAGS_RULE)
    assignment_rule_id: int | None = Field(description=RULE_RULE)
    created_at: datetime = Field(description="When it was made.")
    updated_at: datetime = Field(description="When it last changed.")


class CaptureFormCreated(CaptureFormRead):
    """The form with its public key, shown this once."""

    public_key: str = Field(
        description="Goes in the page: POST submissions to /api/v1/capture/{public_key}. Only "
        "a digest of it is stored; rotate it if it is abused."
    )


class CaptureFormPage(BaseModel):
    items: list[CaptureFormRead] = Field(description="The forms of this page, by id.")
    total: int = Field(description="How many there are.")
    skip: int = Field(description="The `skip` asked for.")
    limit: int = Field(description="The `limit` asked for.")


class CaptureSubmission(BaseModel):
    """What a page posts: JSON, or a form's `application/x-www-form-urlencoded`. The lead needs
    an email or a phone (a blank one counts as none: a 422 naming `email` otherwise, which the
    schema cannot say). Other fields are ignored. Leave `website` empty: it is a honeypot,
    hidden from people, that bots fill in."""

    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={
            "examples": [
                {
                    "first_name": "Jane",
                    "last_name": "Smith",
                    "email": "jane@acme.com",
                    "company": "Acme",
                    "message": "Please call me about pricing.",
                }
            ]
        },
    )

    first_name: Name = Field(description="Trimmed; not blank.")
    last_name: Name = Field(description="Trimmed; not blank.")
    email: Email | MISSING = Field(MISSING, description=EMAIL_DESCRIPTION)
    phone: Phone | MISSING = Field(MISSING, description=PHONE_DESCRIPTION)
    company: Company | MISSING = Field(MISSING, description="Blank: none.")
    job_title: JobTitle | MISSING = Field(MISSING, description="Blank: none.")
    message: Annotated[str, Field(pattern=NO_NUL_PATTERN), SettingLimit("note_max_length")] | (
        MISSING
    ) = Field(MISSING, description="Kept as a note on the lead; blank: none.")
    website: Annotated[str, Field(max_length=HONEYPOT_MAX_LENGTH, pattern=NO_NUL_PATTERN)] | (
        MISSING
    ) = Field(MISSING, description="The honeypot: leave it out or empty.")

    def lead_fields(self) -> dict[str, str]:
        """The lead's own fields as sent (the message and the honeypot are not)."""
        return self.model_dump(exclude={"message", HONEYPOT_FIELD}, exclude_unset=True)


class CaptureReceived(BaseModel):
    status: str = Field("received", description="Always `received`: nothing more is said.")
