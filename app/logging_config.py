"""The process's logging: one JSON object per line on stderr, for the app's loggers, uvicorn's
and the libraries' alike, so a log shipper parses every line the same way.

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


def logging_config(level: str) -> dict[str, Any]:
    """A `logging.config.dictConfig` dict: everything to stderr as JSON at `level`."""
    level = level.upper()
    return {
        "version": 1,
        # Loggers made at import time (app.access, ...) must keep working.
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "json",
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
        },
    }


def configure_logging(level: str) -> None:
    logging.config.dictConfig(logging_config(level))
