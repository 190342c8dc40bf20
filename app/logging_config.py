"""The process's logging: one JSON object per line on stderr, for the app's loggers, uvicorn's
and the libraries' alike, so a log shipper parses every line the same way. `LOG_FORMAT=text`
writes the same records as plain lines for a developer's terminal instead.

`python -m app` applies `logging_config()` before it prepares the database and hands the same
dict to uvicorn, which applies it again in every worker process. uvicorn's own access log is off:
`app.access` (app/api/observability.py) writes one line per request instead, with the request id
and the user.
"""

from __future__ import annotations

import json
import logging
import logging.config
from datetime import UTC, datetime
from typing import Any

import orjson

# Attributes every LogRecord has; anything else on a record came from `extra=` and is logged as a
# field of its own. `color_message` is uvicorn's coloured copy of the message.
_STANDARD_ATTRIBUTES = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "color_message",
    "taskName",
}


class JsonFormatter(logging.Formatter):
    """`{"time", "level", "logger", "message", <extra fields>, "exc_info"}` on one line; a
    traceback is one string field, so a multi-line traceback cannot be split into lines that
    look like records of their own."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRIBUTES:
                entry[key] = value
        if record.exc_info:
            record.exc_text = record.exc_text or self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc_info"] = record.exc_text
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        try:
            return orjson.dumps(entry, default=repr).decode()
        except TypeError:  # e.g. an int past 64 bits, which orjson refuses
            return json.dumps(entry, default=repr, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """One line per record, for reading in a terminal, with the same fields as the JSON format:

        2026-11-26 10:29:03.124Z INFO    app.access: GET /api/v1/leads 200 | request_id=...

    Control characters in the message or a field (line breaks included) are written escaped
    (`\\n`), so no text a client sent can start a line that looks like a record of its own or
    steer the terminal; a traceback follows its record on indented lines."""

    def format(self, record: logging.LogRecord) -> str:
        moment = datetime.fromtimestamp(record.created, UTC)
        stamp = moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
        line = f"{stamp} {record.levelname:<7} {record.name}: {_one_line(record.getMessage())}"
        fields = [
            f"{key}={_field_value(value)}"
            for key, value in record.__dict__.items()
            if key not in _STANDARD_ATTRIBUTES
        ]
        if fields:
            line += " | " + " ".join(fields)
        if record.exc_info:
            record.exc_text = record.exc_text or self.formatException(record.exc_info)
        if record.exc_text:
            line += "\n" + _indented(record.exc_text)
        if record.stack_info:
            line += "\n" + _indented(self.formatStack(record.stack_info))
        return line


def _one_line(text: str) -> str:
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _field_value(value: object) -> str:
    """Plain when that reads unambiguously, else JSON-quoted (spaces, quotes, `=`, empty)."""
    if value is None or isinstance(value, bool | int | float):
        return json.dumps(value)
    text = value if isinstance(value, str) else repr(value)
    if text and text.isprintable() and not any(c.isspace() or c in "\"'=|" for c in text):
        return text
    return json.dumps(text, ensure_ascii=False)


def _indented(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())


FORMATTERS: dict[str, type[logging.Formatter]] = {"json": JsonFormatter, "text": TextFormatter}


def logging_config(level: str, log_format: str = "json") -> dict[str, Any]:
    """A `logging.config.dictConfig` dict: everything to stderr at `level`, as JSON lines
    (`log_format="json"`) or as text lines (`"text"`)."""
    level = level.upper()
    formatter = FORMATTERS[str(log_format).lower()]
    return {
        "version": 1,
        # Loggers made at import time (app.access, ...) must keep working.
        "disable_existing_loggers": False,
        "formatters": {"default": {"()": formatter}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "default",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"level": level, "handlers": ["stderr"]},
        "loggers": {
            # uvicorn's loggers pass their records up to the root handler, as JSON.
            "uvicorn": {"level": level, "handlers": [], "propagate": True},
            "uvicorn.error": {"level": level, "handlers": [], "propagate": True},
            # Replaced by app.access.
            "uvicorn.access": {"level": "WARNING", "handlers": [], "propagate": False},
            # Their DEBUG lines repeat each statement's parameters (note text, password hashes):
            # never logged, whatever LOG_LEVEL says.
            "sqlalchemy": {"level": "WARNING"},
            "aiosqlite": {"level": "WARNING"},
            # Its INFO lines (context impl, DDL mode, plugins, one per revision) are noise at
            # every start; `python -m app` says in one line what the migrations did.
            "alembic": {"level": level if level == "DEBUG" else "WARNING"},
        },
    }


def configure_logging(level: str, log_format: str = "json") -> None:
    logging.config.dictConfig(logging_config(level, log_format))
