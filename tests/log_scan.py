"""No secret may reach a log: tests/conftest.py puts a `SecretScanner` on the root logger for the
whole run, and the run fails at its end if any record held a password the tests use, a signing
key, or anything shaped like a JWT.

The secrets are every `*PASSWORD` / `*SECRET` text constant of the test modules (collected when
the run starts) plus what a test registers with `never_log`, e.g. a password generated while it
runs. Each record is checked as the JSON line the app would write (message, extra fields,
traceback) and as its raw message, at the end of the run.
"""

from __future__ import annotations

import logging
import re
import sys

from app.logging_config import JsonFormatter

JWT = re.compile(r"eyJ[A-Za-z0-9_-]{2,}\.eyJ[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*")
SECRET_NAME = re.compile(r"(^|_)(PASSWORD|SECRET)$")

_forbidden: set[str] = set()


def never_log(*secrets: str) -> None:
    """Add secrets to those no log record of this run may contain."""
    _forbidden.update(secret for secret in secrets if secret)


def collect_test_secrets() -> None:
    """The `*PASSWORD` and `*SECRET` text constants of every test module imported so far (from
    10 characters: a shorter one could turn up in a log by chance, as part of an id)."""
    for name, module in list(sys.modules.items()):
        if name == "tests" or name.startswith("tests."):
            never_log(
                *(
                    value
                    for key, value in vars(module).items()
                    if SECRET_NAME.search(key) and isinstance(value, str) and len(value) >= 10
                )
            )


def secrets_in(text: str) -> list[str]:
    """What in `text` is a secret, each named with only its first characters."""
    found = [f"a JWT ({match.group()[:10]}...)" for match in JWT.finditer(text)]
    found += [f"a secret ({secret[:4]}...)" for secret in sorted(_forbidden) if secret in text]
    return list(dict.fromkeys(found))


class SecretScanner(logging.Handler):
    """Keeps the text of every record it is handed; `leaks()` checks them against the secrets
    known by then, so a password a test generates and registers afterwards counts too."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.json = JsonFormatter()
        self.texts: list[tuple[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.json.format(record) + "\n" + record.getMessage()
        except Exception as exc:  # a record that cannot even be formatted is a finding too
            text = repr(exc)
        self.texts.append(
            (f"{record.name} {record.levelname} ({record.pathname}:{record.lineno})", text)
        )

    def leaks(self) -> list[str]:
        return [
            f"{where}: {', '.join(found)}"
            for where, text in self.texts
            if (found := secrets_in(text))
        ]
