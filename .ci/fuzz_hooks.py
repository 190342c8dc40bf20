"""Schemathesis hooks for .ci/fuzz.py (loaded through SCHEMATHESIS_HOOKS).

A superuser's `PATCH /users/{user_id}` may set any account's password or deactivate it, and
either voids that account's tokens. Aimed at an account whose token the run is using, the rest
of the run would only see 401s. Such a change is sent to a stand-in account instead (created for
this), so it is still tested, on an account nobody's token depends on.
"""

from __future__ import annotations

import os
from typing import Any

import schemathesis

PROTECTED = {
    value.strip()
    for value in os.environ.get("FUZZ_PROTECTED_USER_IDS", "").split(",")
    if value.strip()
}
STAND_IN = os.environ.get("FUZZ_STAND_IN_USER_ID", "")


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    if case.method.upper() != "PATCH" or not case.path.endswith("/users/{user_id}"):
        return
    if str(case.path_parameters.get("user_id")) in PROTECTED and STAND_IN:
        case.path_parameters["user_id"] = STAND_IN
