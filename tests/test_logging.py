"""The log formats (one JSON object per line; readable text lines for development), what the
served start-up logs, and the scanner that keeps secrets out of logs."""

from __future__ import annotations

import json
import logging
import re
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import LogFormat, Settings, get_settings, use_settings
from app.logging_config import JsonFormatter, TextFormatter, logging_config
from app.services.security import create_access_token
from tests.helpers import PASSWORD, TEST_SECRET, make_settings
from tests.log_scan import secrets_in
from tests.support import log_lines, server_launcher


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
        token, _ = create_access_token(1, get_settings(), session_id=1)

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


# ------------------------------------------------------------------------------ text format


def test_json_stays_the_default_format() -> None:
    assert Settings(_env_file=None).log_format is LogFormat.JSON
    formatter = logging_config("INFO")["formatters"]["default"]["()"]
    assert formatter is JsonFormatter


def test_log_format_text_selects_the_text_formatter() -> None:
    settings = Settings(_env_file=None, log_format="text")
    formatter = logging_config("INFO", settings.log_format)["formatters"]["default"]["()"]
    assert formatter is TextFormatter


def test_an_unknown_log_format_is_refused() -> None:
    with pytest.raises(ValidationError, match="log_format"):
        Settings(_env_file=None, log_format="xml")


def test_a_text_record_is_one_readable_line_with_its_extra_fields() -> None:
    line = TextFormatter().format(record("lead %s moved", 7, request_id="r-1", user_id=None))

    assert "\n" not in line
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}Z WARNING +app\.test: lead 7 moved"
        r" \| request_id=r-1 user_id=null",
        line,
    ), line


def test_a_text_field_with_spaces_or_quotes_is_quoted() -> None:
    line = TextFormatter().format(record("x", note='say "hi" there', empty=""))

    assert 'note="say \\"hi\\" there"' in line
    assert 'empty=""' in line


def test_line_breaks_a_client_sent_cannot_start_a_text_line_of_their_own() -> None:
    forged = "/x\n2026-01-01 00:00:00.000Z ERROR   app: forged | user_id=1"
    line = TextFormatter().format(record("GET %s 404", forged, path=forged, bell="\x1b[2J"))

    assert "\n" not in line and "\x1b" not in line
    assert "\\n2026-01-01" in line


def test_a_text_traceback_follows_its_record_on_indented_lines() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        entry = logging.getLogger("app.test").makeRecord(
            "app.test", logging.ERROR, __file__, 1, "failed", (), sys.exc_info()
        )

    first, *rest = TextFormatter().format(entry).split("\n")
    assert first.endswith("app.test: failed")
    assert rest and all(line.startswith("    ") for line in rest)
    assert rest[-1].strip() == "ValueError: boom"


# -------------------------------------------------------------------------- served start-up


def test_start_up_logs_no_alembic_lines_and_says_what_it_migrated(tmp_path: Path) -> None:
    with server_launcher(wait_until_ready=True) as start:
        server = start(tmp_path)
    lines = log_lines(server.output())

    assert [line for line in lines if line["logger"].startswith("alembic")] == []
    (migrated,) = [line for line in lines if line["message"].startswith("migrated the database")]
    assert migrated["level"] == "INFO"
    assert migrated["revisions"] and all(isinstance(r, str) for r in migrated["revisions"])


def test_log_format_text_serves_readable_lines(tmp_path: Path) -> None:
    with server_launcher(wait_until_ready=True) as start:
        server = start(tmp_path, LOG_FORMAT="text")
        with server.client() as client:
            client.get("/health")
    output = server.output()

    assert log_lines(output) == []  # no JSON at all
    assert re.search(r"^\S+ \S+Z INFO +uvicorn\.error: Started server process", output, re.M)
    assert re.search(r"INFO +app\.access: GET /health 200 \| request_id=\w+ ", output), output
