"""The `Lead` model: a prospective customer, its pipeline state and its history in `notes`."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    and_,
    event,
    func,
    text,
)
from sqlalchemy.ext.hybrid import hybrid_property
from sqlalchemy.orm import Mapped, Mapper, mapped_column, relationship, validates
from sqlalchemy.sql.elements import ColumnElement

from app.models import validation as v
from app.models.base import Base
from app.models.types import TagList, UTCDateTime, utcnow

if TYPE_CHECKING:
    from app.models.user import User

HOT_LEAD_MIN_SCORE = 80
ARCHIVED_TAG = "archived"
COMPANY_MAX_LENGTH = 200
JOB_TITLE_MAX_LENGTH = 200


class LeadSource(StrEnum):
    WEBSITE = "WEBSITE"
    FACEBOOK = "FACEBOOK"
    INSTAGRAM = "INSTAGRAM"
    WHATSAPP = "WHATSAPP"
    REFERRAL = "REFERRAL"
    OTHER = "OTHER"


class LeadStatus(StrEnum):
    NEW = "NEW"
    CONTACTED = "CONTACTED"
    QUALIFIED = "QUALIFIED"
    PROPOSAL = "PROPOSAL"
    NEGOTIATION = "NEGOTIATION"
    WON = "WON"
    LOST = "LOST"
    CALLBACK = "CALLBACK"


CLOSED_STATUSES = (LeadStatus.WON, LeadStatus.LOST)


def is_hot(lead_score: int, status: LeadStatus, archived_at: datetime | None) -> bool:
    """A lead worth calling now: scored high, still open, not archived. (The rule of
    `Lead.is_hot_lead`, also applied to plain rows read without the ORM.)"""
    return (
        lead_score >= HOT_LEAD_MIN_SCORE and status not in CLOSED_STATUSES and archived_at is None
    )


def _enum_column(enum_cls: type[StrEnum], name: str) -> Enum:
    # VARCHAR + CHECK rather than a native PostgreSQL ENUM: the same on both databases, and a new
    # value is a plain migration instead of ALTER TYPE.
    return Enum(
        enum_cls,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=20,
        values_callable=lambda e: [m.value for m in e],
        validate_strings=True,
    )


def _since_creation(context: Any) -> datetime:
    """`status_changed_at` of a lead inserted without one: it has had its status since it was
    created (a row inserted with an old `created_at`, by a seed or a test, says so too)."""
    created = context.get_current_parameters().get("created_at") if context else None
    return created or utcnow()


class Lead(Base):
    __tablename__ = "leads"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    first_name: Mapped[str] = mapped_column(String(v.NAME_MAX_LENGTH))
    last_name: Mapped[str] = mapped_column(String(v.NAME_MAX_LENGTH))
    email: Mapped[str | None] = mapped_column(String(v.EMAIL_MAX_LENGTH))
    phone: Mapped[str | None] = mapped_column(String(20))
    company: Mapped[str | None] = mapped_column(String(COMPANY_MAX_LENGTH))
    job_title: Mapped[str | None] = mapped_column(String(JOB_TITLE_MAX_LENGTH))

    source: Mapped[LeadSource] = mapped_column(
        _enum_column(LeadSource, "lead_source"), default=LeadSource.OTHER
    )
    status: Mapped[LeadStatus] = mapped_column(
        _enum_column(LeadStatus, "lead_status"), default=LeadStatus.NEW
    )
    assigned_to: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))

    lead_score: Mapped[int] = mapped_column(Integer, default=0)
    score_is_manual: Mapped[bool] = mapped_column(Boolean, default=False)
    probability: Mapped[float | None] = mapped_column(Float)
    estimated_value: Mapped[Decimal | None] = mapped_column(Numeric(15, 2))

    tags: Mapped[list[str]] = mapped_column(TagList(), default=list)
    notes: Mapped[str | None] = mapped_column(Text)
    call_attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_contact_date: Mapped[datetime | None] = mapped_column(UTCDateTime())
    next_follow_up_date: Mapped[datetime | None] = mapped_column(UTCDateTime())

    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # When the current status began: set by every write that changes the status (the
    # creation time until one does). Time in status and the days to WON are read from it.
    status_changed_at: Mapped[datetime] = mapped_column(
        UTCDateTime(), default=_since_creation, server_default=func.current_timestamp()
    )
    archived_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    status_before_archive: Mapped[LeadStatus | None] = mapped_column(
        _enum_column(LeadStatus, "lead_status_before_archive")
    )
    # The lead this one was merged into (POST /leads/{id}/merge): archived since, until an
    # unmerge brings it back. Null for every other lead. No foreign key: SQLite cannot drop a
    # column a constraint names without rebuilding the table (and losing its triggers), so the
    # migration could not be undone; a hard delete of the survivor clears it instead.
    merged_into_id: Mapped[int | None] = mapped_column(Integer)
    # Whether archiving added the `archived` tag (null while the lead is live): restoring takes
    # the tag away only then, so a lead tagged `archived` by hand keeps its tags. Not shown.
    archive_added_tag: Mapped[bool | None] = mapped_column(Boolean)
    # 1 when created, one more on every change (bulk calls and notes too): the lead's events
    # carry it, and (issue 13) its ETag.
    version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")

    assignee: Mapped[User | None] = relationship(
        back_populates="leads", foreign_keys=[assigned_to], lazy="raise"
    )

    __table_args__ = (
        CheckConstraint("lead_score >= 0 AND lead_score <= 100", name="lead_score_range"),
        CheckConstraint(
            "probability IS NULL OR (probability >= 0 AND probability <= 1)",
            name="probability_range",
        ),
        CheckConstraint(
            "estimated_value IS NULL OR estimated_value >= 0", name="estimated_value_non_negative"
        ),
        CheckConstraint("call_attempts >= 0", name="call_attempts_non_negative"),
        CheckConstraint("email IS NOT NULL OR phone IS NOT NULL", name="email_or_phone"),
        # Composite indexes, each serving a list query: a status tab sorted by newest, an agent's
        # leads newest first, a source report over time, and "best leads in this status".
        Index(None, "status", "created_at"),
        Index(None, "assigned_to", "created_at"),
        Index(None, "source", "created_at"),
        Index(None, "lead_score", "status"),
        # Single-column indexes: duplicate checks by email/phone, date sorting and ranges.
        Index(None, "email"),
        Index(None, "phone"),
        Index(None, "created_at"),
        Index(None, "last_contact_date"),
        # The leads merged into one: a handful, however many leads there are.
        Index(
            None,
            "merged_into_id",
            postgresql_where=text("merged_into_id IS NOT NULL"),
            sqlite_where=text("merged_into_id IS NOT NULL"),
        ),
        # SQLite would otherwise reuse the id of a hard-deleted newest row.
        {"sqlite_autoincrement": True},
    )

    # --- validation: every path that sets a field goes through these -------------------------

    @validates("first_name", "last_name")
    def _validate_name(self, key: str, value: object) -> str:
        return v.required_text(key, value)

    @validates("email")
    def _validate_email(self, key: str, value: object) -> str | None:
        return v.email_address(key, value)

    @validates("phone")
    def _validate_phone(self, key: str, value: object) -> str | None:
        return v.phone_number(key, value)

    @validates("company")
    def _validate_company(self, key: str, value: object) -> str | None:
        return v.optional_text(key, value, COMPANY_MAX_LENGTH)

    @validates("job_title")
    def _validate_job_title(self, key: str, value: object) -> str | None:
        return v.optional_text(key, value, JOB_TITLE_MAX_LENGTH)

    @validates("source")
    def _validate_source(self, key: str, value: object) -> LeadSource:
        return v.enum_member(LeadSource, key, value)

    @validates("status", "status_before_archive")
    def _validate_status(self, key: str, value: object) -> LeadStatus | None:
        if value is None and key == "status_before_archive":
            return None
        return v.enum_member(LeadStatus, key, value)

    @validates("assigned_to", "created_by")
    def _validate_user_ref(self, key: str, value: object) -> int | None:
        return None if value is None else v.integer_in_range(key, value, 1, v.MAX_INT32)

    @validates("lead_score")
    def _validate_score(self, key: str, value: object) -> int:
        return v.integer_in_range(key, value, 0, 100)

    @validates("call_attempts")
    def _validate_call_attempts(self, key: str, value: object) -> int:
        return v.integer_in_range(key, value, 0, v.MAX_INT32)

    @validates("probability")
    def _validate_probability(self, key: str, value: object) -> float | None:
        return v.probability(key, value)

    @validates("estimated_value")
    def _validate_estimated_value(self, key: str, value: object) -> Decimal | None:
        return v.money(key, value)

    @validates(
        "last_contact_date", "next_follow_up_date", "archived_at", "created_at", "updated_at"
    )
    def _validate_datetime(self, key: str, value: object) -> datetime | None:
        return v.aware_datetime(key, value)

    @validates("tags")
    def _validate_tags(self, key: str, value: object) -> list[str]:
        return v.tag_list(key, value)

    @validates("score_is_manual")
    def _validate_flag(self, key: str, value: object) -> bool:
        return v.flag(key, value)

    @validates("notes")
    def _validate_notes(self, key: str, value: object) -> str | None:
        if value is not None and not isinstance(value, str):
            raise v.FieldValidationError(key, "must be text")
        return value

    # --- derived values ------------------------------------------------------------------------

    @property
    def full_name(self) -> str:
        return f"{self.first_name} {self.last_name}"

    @property
    def is_archived(self) -> bool:
        return self.archived_at is not None

    @property
    def days_since_created(self) -> int:
        return (utcnow() - self.created_at).days

    @property
    def days_since_last_contact(self) -> int | None:
        if self.last_contact_date is None:
            return None
        return (utcnow() - self.last_contact_date).days

    @hybrid_property
    def is_hot_lead(self) -> bool:
        return is_hot(self.lead_score, self.status, self.archived_at)

    @is_hot_lead.inplace.expression
    @classmethod
    def _is_hot_lead_expression(cls) -> ColumnElement[bool]:
        return and_(
            cls.lead_score >= HOT_LEAD_MIN_SCORE,
            cls.status.not_in(CLOSED_STATUSES),
            cls.archived_at.is_(None),
        )

    # --- helpers -------------------------------------------------------------------------------

    def add_note(
        self, text: str, *, author_id: int | None = None, at: datetime | None = None
    ) -> str:
        """Append one timestamped line to the notes; history is never rewritten."""
        line = format_note_line(text, author_id=author_id, at=at)
        self.notes = f"{self.notes}\n{line}" if self.notes else line
        return line

    def add_tag(self, tag: str) -> bool:
        """Add a tag (normalised); False when the lead already had it."""
        tag = v.normalize_tag("tags", tag)
        if tag in self.tags:
            return False
        self.tags = [*self.tags, tag]
        return True

    def remove_tag(self, tag: str) -> bool:
        tag = v.normalize_tag("tags", tag)
        if tag not in self.tags:
            return False
        self.tags = [t for t in self.tags if t != tag]
        return True

    def increment_call_attempts(self, at: datetime | None = None) -> int:
        self.call_attempts = (self.call_attempts or 0) + 1
        self.last_contact_date = at or utcnow()
        return self.call_attempts

    def __repr__(self) -> str:
        return f"<Lead id={self.id} {self.full_name!r} status={self.status}>"


def format_note_line(text: str, *, author_id: int | None = None, at: datetime | None = None) -> str:
    """`[2026-11-25 17:52 UTC] user 5: text` — the one format every note line uses."""
    stamp = note_timestamp(at or utcnow())
    author = f" user {author_id}" if author_id is not None else " system"
    return f"{stamp}{author}: {text}"


def note_timestamp(at: datetime) -> str:
    return at.astimezone(UTC).strftime("[%Y-%m-%d %H:%M UTC]")


_INIT_DEFAULTS: dict[str, Any] = {
    "source": LeadSource.OTHER,
    "status": LeadStatus.NEW,
    "lead_score": 0,
    "score_is_manual": False,
    "call_attempts": 0,
}


@event.listens_for(Lead, "init")
def _set_defaults(lead: Lead, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Give a new, unflushed lead its defaults so its properties and helpers work at once."""
    for key, value in _INIT_DEFAULTS.items():
        kwargs.setdefault(key, value)
    kwargs.setdefault("tags", [])
    now = utcnow()
    kwargs.setdefault("created_at", now)
    kwargs.setdefault("updated_at", now)


@event.listens_for(Lead, "before_insert")
@event.listens_for(Lead, "before_update")
def _check_contact(mapper: Mapper[Lead], connection: Any, lead: Lead) -> None:
    """A lead nobody can reach is useless: it needs an email or a phone. Checked at flush, since
    the two fields may be set in any order."""
    if lead.email is None and lead.phone is None:
        raise v.FieldValidationError("email", v.NO_CONTACT)
