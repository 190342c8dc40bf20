"""The log format (one JSON object per line) and the scanner that keeps secrets out of logs."""

from __future__ import annotations

import json
import logging
import sys

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import get_settings, use_settings
from app.logging_config import JsonFormatter
from app.services.security import create_access_token
from tests.conftest import PASSWORD, TEST_SECRET, make_settings
from tests.log_scan import secrets_in


def record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    return logging.getLogger("app.test").makeRecord(
        "app.test", logging.WARNING, __file__, 1, message, args, None, extra=extra
    )


def test_a_record_is_one_json_object_with_its_extra_fields() -> None:
    line = JsonFormatter().format(record("lead %s moved", 7, request_id="r-1", user_id=None))

    parsed = json.loads(line)
    assert parsed["message"] == "lead 7 moved"
    assert parsed["level"] == "WARNING"
    assert parsed["logger"] == "app.test"
    assert parsed["time"].endswith("+00:00")
    assert parsed["request_id"] == "r-1"
    assert parsed["user_id"] is None
    assert "args" not in parsed and "msg" not in parsed  # the record's own attributes stay out


def test_a_traceback_stays_inside_its_one_line() -> None:
    try:
        raise ValueError("no such stage")
    except ValueError:
        failed = logging.getLogger("app.test").makeRecord(
            "app.test", logging.ERROR, __file__, 1, "failed", (), sys.exc_info()
        )

    line = JsonFormatter().format(failed)

    assert "\n" not in line
    traceback = json.loads(line)["exc_info"]
    assert traceback.startswith("Traceback")
    assert "ValueError: no such stage" in traceback


def test_a_value_json_cannot_hold_is_logged_as_its_repr() -> None:
    line = JsonFormatter().format(record("odd", thing=object(), big=2**70))

    parsed = json.loads(line)
    assert parsed["thing"].startswith("<object object")
    assert int(parsed["big"]) == 2**70


def test_the_secret_scanner_finds_a_jwt_and_a_test_password() -> None:
    with use_settings(make_settings()):
        token, _ = create_access_token(1, get_settings())

    assert secrets_in(f"Authorization: Bearer {token}")
    assert secrets_in(f"login failed for password {PASSWORD!r}")
    assert secrets_in(json.dumps({"key": TEST_SECRET}))
    assert secrets_in("GET /api/v1/leads 200") == []


async def test_a_database_error_leaves_the_statements_parameters_out_of_its_text(
    engine: AsyncEngine,
) -> None:
    """The services log a database error's text; a note or an email must not ride along."""
    note = "Called Ms Jones about her divorce settlement"
    with pytest.raises(DBAPIError) as raised:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT * FROM no_such_table WHERE notes = :n"), {"n": note})

    assert "no_such_table" in str(raised.value)
    assert note not in str(raised.value)
