"""Keeping a refusal as the answer of its Idempotency-Key (app/services/idempotency.py).

A write the service refused (a 4xx) was rolled back with everything it did, so its answer is
kept by a transaction of its own, after the fact: a retry with the same key then hears the
same refusal instead of running again, as it would hear a success. Not kept: a refusal of the
caller (401) or of the key itself (409 while in progress, 422 reused), and every 5xx.
"""

from __future__ import annotations

from app.services import idempotency
from app.services.base import in_transaction
from app.services.exceptions import (
    AuthenticationException,
    CRMException,
    DatabaseException,
    IdempotencyInProgressException,
    IdempotencyKeyReusedException,
)
from app.services.reader import Reader, Writer

NOT_KEPT = (
    AuthenticationException,
    IdempotencyInProgressException,
    IdempotencyKeyReusedException,
    DatabaseException,
)


def is_kept(exc: CRMException, status_code: int) -> bool:
    return 400 <= status_code < 500 and not isinstance(exc, NOT_KEPT)


class IdempotencyRefusals:
    @staticmethod
    async def keep(
        writer: Writer, call: idempotency.IdempotentCall, response: idempotency.Rendered
    ) -> None:
        """One transaction of the writer's: the refusal stored, unless the key has an answer
        by now."""

        async def work(tx: Reader) -> None:
            await idempotency.keep(tx, writer.dialect_name, call, response, unless_kept=True)

        await in_transaction(writer, work)
