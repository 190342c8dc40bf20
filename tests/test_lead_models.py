"""The model rules: what `Lead` and `User` accept, how they normalise it, and what they derive.

Validation lives in the models (`@validates`), so these tests build models directly; the
service-level view of the same rules (a `ValidationException` naming each field) is in
test_lead_writes.py.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import FieldValidationError, Lead, LeadSource, LeadStatus, User
from tests.helpers import UserFactory, count_rows, stamp

NOTE_LINE = re.compile(r"^\[\d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC\] user \d+: .+$")


def make(**fields: Any) -> Lead:
    """An unsaved lead with valid defaults, overridden by `fields`."""
    data: dict[str, Any] = {"first_name": "Ada", "last_name": "Lovelace", "email": "ada@acme.io"}
    data.update(fields)
    return Lead(**data)


def now() -> datetime:
    return datetime.now(UTC)


def refused(field: str) -> Any:
    """Expect a model validation error naming `field`."""
    return pytest.raises(FieldValidationError, match=rf"^{field}: ")


async def reload(db: AsyncSession, lead_id: int) -> Lead:
    lead = await db.scalar(
        select(Lead).where(Lead.id == lead_id).execution_options(populate_existing=True)
    )
    assert lead is not None
    return lead


# --------------------------------------------------------------------------------- defaults


def test_new_lead_has_its_defaults_before_any_flush() -> None:
    lead = make()
    assert (lead.source, lead.status, lead.lead_score) == (LeadSource.OTHER, LeadStatus.NEW, 0)
    assert (lead.score_is_manual, lead.call_attempts, lead.tags) == (False, 0, [])


def test_validation_error_names_its_field() -> None:
    with pytest.raises(FieldValidationError) as caught:
        make(lead_score=101)
    assert caught.value.field == "lead_score"


# ------------------------------------------------------------------------------------ names


@pytest.mark.parametrize("field", ["first_name", "last_name"])
def test_names_are_trimmed(field: str) -> None:
    lead = make(**{field: "  Ada  "})
    assert getattr(lead, field) == "Ada"


@pytest.mark.parametrize("field", ["first_name", "last_name"])
@pytest.mark.parametrize("value", ["", "   ", "\t\n"])
def test_blank_names_are_refused(field: str, value: str) -> None:
    with refused(field):
        make(**{field: value})


@pytest.mark.parametrize("field", ["first_name", "last_name"])
def test_missing_names_are_refused(field: str) -> None:
    with refused(field):
        make(**{field: None})


@pytest.mark.parametrize("field", ["first_name", "last_name"])
def test_names_longer_than_100_characters_are_refused(field: str) -> None:
    assert getattr(make(**{field: "x" * 100}), field) == "x" * 100
    with refused(field):
        make(**{field: "x" * 101})


def test_a_loaded_lead_refuses_a_blank_name_too() -> None:
    lead = make()
    with refused("first_name"):
        lead.first_name = "  "
    assert lead.first_name == "Ada"


# ------------------------------------------------------------------------------------ email


def test_email_is_trimmed() -> None:
    assert make(email="  ada@acme.io ").email == "ada@acme.io"


def test_email_domain_is_normalised_to_lowercase() -> None:
    assert make(email="Ada@ACME.io").email == "Ada@acme.io"


@pytest.mark.parametrize(
    "value",
    ["not-an-email", "ada@", "@acme.io", "ada@acme", "ada lovelace@acme.io", "ada@@acme.io"],
)
def test_invalid_email_is_refused(value: str) -> None:
    with refused("email"):
        make(email=value)


def test_email_check_does_not_look_up_the_domain() -> None:
    # No deliverability lookup: a syntactically valid address on a domain that cannot exist.
    assert make(email="ada@no-such-domain.invalid-tld-xyz").email == (
        "ada@no-such-domain.invalid-tld-xyz"
    )


def test_blank_email_is_stored_as_none() -> None:
    assert make(email="   ", phone="+441234567").email is None


# ------------------------------------------------------------------------------------ phone


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("+1 (555) 010-1234", "+15550101234"),
        ("555.010.1234", "5550101234"),
        ("+44 20 7946 0958", "+442079460958"),
        ("1234567", "1234567"),
        ("+123456789012345", "+123456789012345"),
        ("  +49-30-1234567  ", "+49301234567"),
    ],
)
def test_phone_is_stored_normalised(given: str, stored: str) -> None:
    assert make(phone=given).phone == stored


@pytest.mark.parametrize(
    "value",
    [
        "123456",  # 6 digits
        "+1234567890123456",  # 16 digits
        "(555) 01",  # 5 digits once separators go
        "555-CALL-NOW",
        "12+34567890",
        "++1234567890",
        "+1 555 010 1234 ext 5",
        "1234567#",
    ],
)
def test_invalid_phone_is_refused(value: str) -> None:
    with refused("phone"):
        make(phone=value)


def test_blank_phone_is_stored_as_none() -> None:
    assert make(phone="  ").phone is None


# ----------------------------------------------------------------------------------- ranges


@pytest.mark.parametrize("value", [0, 1, 99, 100])
def test_lead_score_accepts_0_to_100(value: int) -> None:
    assert make(lead_score=value).lead_score == value


@pytest.mark.parametrize("value", [-1, 101, 1000, 50.5, "50", True, None])
def test_lead_score_outside_0_to_100_or_not_whole_is_refused(value: Any) -> None:
    with refused("lead_score"):
        make(lead_score=value)


@pytest.mark.parametrize("value", [0, 0.0, 0.35, 1, 1.0, Decimal("0.5")])
def test_probability_accepts_0_to_1(value: Any) -> None:
    assert make(probability=value).probability == float(value)


def test_probability_may_be_left_empty() -> None:
    assert make(probability=None).probability is None


@pytest.mark.parametrize("value", [-0.01, 1.01, 2, float("nan"), "0.5"])
def test_probability_outside_0_to_1_is_refused(value: Any) -> None:
    with refused("probability"):
        make(probability=value)


@pytest.mark.parametrize(
    ("given", "stored"),
    [(0, Decimal("0")), (1500, Decimal("1500")), ("2500.50", Decimal("2500.50"))],
)
def test_estimated_value_accepts_non_negative_amounts(given: Any, stored: Decimal) -> None:
    assert make(estimated_value=given).estimated_value == stored


@pytest.mark.parametrize("value", [-1, Decimal("-0.01"), "-5", "lots", float("inf")])
def test_negative_or_non_numeric_estimated_value_is_refused(value: Any) -> None:
    with refused("estimated_value"):
        make(estimated_value=value)


@pytest.mark.parametrize("value", [0, 1, 42])
def test_call_attempts_accepts_zero_or_more(value: int) -> None:
    assert make(call_attempts=value).call_attempts == value


@pytest.mark.parametrize("value", [-1, -100, 1.5])
def test_negative_call_attempts_are_refused(value: Any) -> None:
    with refused("call_attempts"):
        make(call_attempts=value)


def test_unknown_status_is_refused() -> None:
    with refused("status"):
        make(status="MAYBE")


def test_unknown_source_is_refused() -> None:
    with refused("source"):
        make(source="TIKTOK")


# ---------------------------------------------------------------------- email or phone rule


async def test_lead_with_neither_email_nor_phone_cannot_be_stored(db: AsyncSession) -> None:
    db.add(make(email=None, phone=None))
    with refused("email"):
        await db.flush()
    await db.rollback()
    assert await count_rows(db) == 0


async def test_lead_with_only_a_phone_can_be_stored(db: AsyncSession) -> None:
    db.add(make(email=None, phone="+1 555 010 1234"))
    await db.commit()
    assert await count_rows(db) == 1


async def test_stored_lead_cannot_lose_both_email_and_phone(db: AsyncSession) -> None:
    lead = make(email="ada@acme.io", phone=None)
    db.add(lead)
    await db.commit()
    lead_id = lead.id
    lead.email = None
    with refused("email"):
        await db.flush()
    await db.rollback()
    assert (await reload(db, lead_id)).email == "ada@acme.io"


# ------------------------------------------------------------------------------------- tags


def test_tags_are_lowercased_trimmed_and_deduplicated_in_first_seen_order() -> None:
    assert make(tags=[" VIP ", "Hot", "vip", "hot ", "cold"]).tags == ["vip", "hot", "cold"]


def test_tag_of_50_characters_is_accepted() -> None:
    assert make(tags=["  " + "t" * 50 + "  "]).tags == ["t" * 50]


def test_tag_longer_than_50_characters_is_refused() -> None:
    with refused("tags"):
        make(tags=["t" * 51])


@pytest.mark.parametrize("tags", [[""], ["ok", "   "], ["ok", 7], "vip"])
def test_blank_non_text_or_bare_string_tags_are_refused(tags: Any) -> None:
    with refused("tags"):
        make(tags=tags)


def test_add_tag_normalises_and_reports_whether_it_was_new() -> None:
    lead = make(tags=["hot"])
    assert lead.add_tag("  VIP ") is True
    assert lead.add_tag("vip") is False
    assert lead.tags == ["hot", "vip"]


def test_add_tag_refuses_a_tag_longer_than_50_characters() -> None:
    lead = make(tags=["hot"])
    with refused("tags"):
        lead.add_tag("t" * 51)
    assert lead.tags == ["hot"]


def test_remove_tag_matches_case_insensitively_and_reports_whether_it_was_there() -> None:
    lead = make(tags=["hot", "vip"])
    assert lead.remove_tag(" HOT ") is True
    assert lead.remove_tag("hot") is False
    assert lead.tags == ["vip"]


async def test_tags_survive_a_round_trip_through_the_database(db: AsyncSession) -> None:
    lead = make(tags=["VIP", "enterprise", "vip"])
    db.add(lead)
    await db.commit()
    assert (await reload(db, lead.id)).tags == ["vip", "enterprise"]


async def test_tag_added_with_add_tag_is_saved(db: AsyncSession) -> None:
    lead = make(tags=["hot"])
    db.add(lead)
    await db.commit()
    lead.add_tag("Enterprise")
    await db.commit()
    assert (await reload(db, lead.id)).tags == ["hot", "enterprise"]


# ------------------------------------------------------------------------------- properties


def test_days_since_created_counts_whole_days() -> None:
    assert make(created_at=now() - timedelta(days=3, hours=1)).days_since_created == 3


def test_days_since_created_is_zero_on_the_first_day() -> None:
    assert make(created_at=now() - timedelta(hours=23)).days_since_created == 0


def test_days_since_created_is_zero_for_a_lead_not_yet_saved() -> None:
    # Like the other defaults, a new lead's age must be usable before the first flush.
    assert make().days_since_created == 0


async def test_days_since_created_works_on_a_stored_lead(db: AsyncSession) -> None:
    lead = make(created_at=now() - timedelta(days=10, minutes=5))
    db.add(lead)
    await db.commit()
    assert (await reload(db, lead.id)).days_since_created == 10


def test_days_since_last_contact_is_none_when_never_contacted() -> None:
    assert make().days_since_last_contact is None


def test_days_since_last_contact_counts_whole_days() -> None:
    assert make(last_contact_date=now() - timedelta(days=2, hours=3)).days_since_last_contact == 2


async def test_days_since_last_contact_works_on_a_stored_lead(db: AsyncSession) -> None:
    lead = make(last_contact_date=now() - timedelta(days=5, minutes=5))
    db.add(lead)
    await db.commit()
    assert (await reload(db, lead.id)).days_since_last_contact == 5


def test_naive_datetimes_are_taken_as_utc() -> None:
    naive = datetime(2025, 3, 1, 12, 30)
    assert make(last_contact_date=naive).last_contact_date == naive.replace(tzinfo=UTC)


HOT_CASES: list[tuple[str, dict[str, Any], bool]] = [
    ("score 80 new", {"lead_score": 80}, True),
    ("score 100 negotiation", {"lead_score": 100, "status": LeadStatus.NEGOTIATION}, True),
    ("score 85 callback", {"lead_score": 85, "status": LeadStatus.CALLBACK}, True),
    ("score 79", {"lead_score": 79}, False),
    ("won", {"lead_score": 95, "status": LeadStatus.WON}, False),
    ("lost", {"lead_score": 95, "status": LeadStatus.LOST}, False),
    ("archived", {"lead_score": 95, "archived_at": datetime(2025, 1, 1, tzinfo=UTC)}, False),
]


@pytest.mark.parametrize(
    ("fields", "hot"), [(f, h) for _, f, h in HOT_CASES], ids=[n for n, _, _ in HOT_CASES]
)
def test_is_hot_lead_property(fields: dict[str, Any], hot: bool) -> None:
    assert make(**fields).is_hot_lead is hot


async def test_is_hot_lead_sql_expression_selects_the_same_leads(db: AsyncSession) -> None:
    leads = {name: make(**fields) for name, fields, _ in HOT_CASES}
    db.add_all(leads.values())
    await db.commit()
    hot_ids = set(await db.scalars(select(Lead.id).where(Lead.is_hot_lead)))
    expected = {leads[name].id for name, _, hot in HOT_CASES if hot}
    assert hot_ids == expected
    assert len(expected) == 3


# ---------------------------------------------------------------------------------- helpers


def test_add_note_starts_the_history_with_one_stamped_line() -> None:
    at = datetime(2026, 11, 25, 17, 52, 41, tzinfo=UTC)
    lead = make()
    lead.add_note("Called back", author_id=5, at=at)
    assert lead.notes == "[2026-11-25 17:52 UTC] user 5: Called back"


def test_add_note_appends_on_a_new_line_and_keeps_history() -> None:
    lead = make(notes="first line")
    lead.add_note("Second", author_id=7, at=datetime(2026, 1, 2, 3, 4, tzinfo=UTC))
    assert lead.notes == "first line\n[2026-01-02 03:04 UTC] user 7: Second"


def test_add_note_writes_the_timestamp_in_utc() -> None:
    plus_two = datetime(2026, 6, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    lead = make()
    lead.add_note("x", author_id=1, at=plus_two)
    assert lead.notes == "[2026-06-01 10:00 UTC] user 1: x"


def test_add_note_without_a_time_uses_now() -> None:
    lead = make()
    before = now()
    lead.add_note("Hello", author_id=3)
    after = now()
    assert NOTE_LINE.match(lead.notes or "")
    assert lead.notes in {f"{stamp(before)} user 3: Hello", f"{stamp(after)} user 3: Hello"}


def test_increment_call_attempts_counts_and_sets_last_contact_date() -> None:
    lead = make()
    before = now()
    assert lead.increment_call_attempts() == 1
    assert lead.call_attempts == 1
    assert lead.last_contact_date is not None
    assert before <= lead.last_contact_date <= now()
    assert lead.days_since_last_contact == 0


def test_increment_call_attempts_adds_one_each_time_and_uses_the_given_time() -> None:
    lead = make(call_attempts=4)
    at = datetime(2026, 2, 3, 4, 5, tzinfo=UTC)
    assert lead.increment_call_attempts(at=at) == 5
    assert (lead.call_attempts, lead.last_contact_date) == (5, at)


# ------------------------------------------------------------------------------------- User


def test_user_email_is_lowercased() -> None:
    user = User(email=" Alice@Example.COM ", full_name="Alice", hashed_password="x")
    assert user.email == "alice@example.com"


@pytest.mark.parametrize("value", [None, "", "alice", "alice@example"])
def test_user_email_must_be_a_valid_address(value: Any) -> None:
    with refused("email"):
        User(email=value, full_name="Alice", hashed_password="x")


def test_user_full_name_is_required_and_trimmed() -> None:
    assert User(email="a@example.com", full_name=" Al ", hashed_password="x").full_name == "Al"
    with refused("full_name"):
        User(email="a@example.com", full_name="  ", hashed_password="x")


async def test_user_email_is_stored_lowercased(make_user: UserFactory) -> None:
    user = await make_user(email="Mixed.Case@CRM.Example.com")
    assert user.email == "mixed.case@crm.example.com"


async def test_user_email_is_unique_ignoring_case(db: AsyncSession, make_user: UserFactory) -> None:
    await make_user(email="dup@crm.example.com")
    with pytest.raises(IntegrityError):
        await make_user(email="DUP@crm.Example.COM")
    await db.rollback()
    assert await count_rows(db, "users") == 1


# --- hostile values refused at the model, whatever the path -----------------------------------


@pytest.mark.parametrize("field", ["first_name", "company", "job_title"])
def test_text_with_a_nul_character_is_refused_naming_the_field(field: str) -> None:
    lead = Lead(first_name="Ann", last_name="Lee", email="ann@example.com")
    with pytest.raises(FieldValidationError) as caught:
        setattr(lead, field, "bad\x00value")
    assert caught.value.field == field


def test_a_tag_with_a_nul_character_is_refused() -> None:
    lead = Lead(first_name="Ann", last_name="Lee", email="ann@example.com")
    with pytest.raises(FieldValidationError) as caught:
        lead.tags = ["ok", "b\x00d"]
    assert caught.value.field == "tags"


def test_a_datetime_outside_the_utc_range_is_refused() -> None:
    lead = Lead(first_name="Ann", last_name="Lee", email="ann@example.com")
    far = datetime(9999, 12, 31, 23, 0, tzinfo=timezone(timedelta(hours=-5)))
    with pytest.raises(FieldValidationError) as caught:
        lead.next_follow_up_date = far
    assert caught.value.field == "next_follow_up_date"


def test_call_attempts_above_the_32_bit_column_limit_are_refused() -> None:
    lead = Lead(first_name="Ann", last_name="Lee", email="ann@example.com")
    with pytest.raises(FieldValidationError):
        lead.call_attempts = 2**31
