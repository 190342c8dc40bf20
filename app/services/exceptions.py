"""The service layer's errors: one base, one class per thing a caller must tell apart.

Each class carries a stable `code` for clients; the HTTP layer maps each class to one status in
one place. Services raise these and nothing HTTP-specific.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from app.models.validation import FieldValidationError
from app.services import messages


class CRMException(Exception):
    """Base of every error the services raise on purpose."""

    code = "crm_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class LeadNotFoundException(CRMException):
    code = "lead_not_found"

    def __init__(self, lead_ids: int | Iterable[int]) -> None:
        ids = [lead_ids] if isinstance(lead_ids, int) else sorted(lead_ids)
        self.lead_ids = ids
        if len(ids) == 1:
            super().__init__(f"Lead {ids[0]} was not found.")
        else:
            super().__init__(f"Leads not found: {id_list(ids)}.")


class UserNotFoundException(CRMException):
    code = "user_not_found"

    def __init__(self, user_id: int | str, role: str = "User") -> None:
        self.user_id = user_id
        super().__init__(f"{role} {user_id} was not found.")


class SessionNotFoundException(CRMException):
    """No such live session of that user: never there, someone else's, or already ended."""

    code = "session_not_found"

    def __init__(self, session_id: int) -> None:
        self.session_id = session_id
        super().__init__(f"Session {session_id} was not found (or has already ended).")


class ApiKeyNotFoundException(CRMException):
    """No such key the caller may revoke: never there, someone else's, or already revoked."""

    code = "api_key_not_found"

    def __init__(self, key_id: int) -> None:
        self.key_id = key_id
        super().__init__(f"API key {key_id} was not found (or has already been revoked).")


class WebhookNotFoundException(CRMException):
    code = "webhook_not_found"

    def __init__(self, webhook_id: int) -> None:
        self.webhook_id = webhook_id
        super().__init__(f"Webhook {webhook_id} was not found.")


class DeliveryNotFoundException(CRMException):
    code = "delivery_not_found"

    def __init__(self, delivery_id: int) -> None:
        self.delivery_id = delivery_id
        super().__init__(f"Delivery {delivery_id} of this webhook was not found.")


class ImportNotFoundException(CRMException):
    """No such import the caller may see: never there, or someone else's."""

    code = "import_not_found"

    def __init__(self, import_id: int) -> None:
        self.import_id = import_id
        super().__init__(f"Import {import_id} was not found.")


class AssignmentRuleNotFoundException(CRMException):
    code = "assignment_rule_not_found"

    def __init__(self, rule_id: int) -> None:
        self.rule_id = rule_id
        super().__init__(f"Assignment rule {rule_id} was not found.")


class CaptureFormNotFoundException(CRMException):
    """No such form: never there, deleted, or its key was rotated (the old key is dead)."""

    code = "capture_form_not_found"

    def __init__(self, form_id: int | None = None) -> None:
        self.form_id = form_id
        if form_id is None:
            super().__init__("No capture form has this key (it may have been rotated).")
        else:
            super().__init__(f"Capture form {form_id} was not found.")


class PermissionDeniedException(CRMException):
    code = "permission_denied"

    def __init__(self, message: str, lead_ids: Sequence[int] = ()) -> None:
        super().__init__(message)
        self.lead_ids = list(lead_ids)


class ValidationException(CRMException):
    """Bad input. `errors` lists each problem as {"loc": [...], "msg": a sentence}; the message
    is one sentence over all of them (app/services/messages.py words both)."""

    code = "validation_error"

    def __init__(self, problems: Sequence[tuple[Sequence[str | int], str]]) -> None:
        self.errors: list[dict[str, Any]] = [
            {"loc": list(loc), "msg": message} for loc, message in problems
        ]
        names = [part for loc, _ in problems for part in loc if isinstance(part, str)]
        self.field = names[-1] if names else None
        super().__init__(messages.summary([message for _, message in problems]))

    @classmethod
    def at(cls, field: str | None, predicate: str) -> ValidationException:
        """One problem with one field (`predicate`: "must be ..."), or with the whole call when
        `field` is None (then `predicate` is a sentence)."""
        loc = [field] if field else []
        return cls([(loc, messages.sentence(loc, predicate))])

    @classmethod
    def at_path(cls, loc: Sequence[str | int], predicate: str) -> ValidationException:
        """One problem at a nested field (`["filter", "include_archived"]`)."""
        return cls([(list(loc), messages.sentence(loc, predicate))])

    @classmethod
    def of_fields(cls, errors: Iterable[FieldValidationError]) -> ValidationException:
        return cls([([e.field], messages.sentence([e.field], e.message)) for e in errors])

    @classmethod
    def of_pydantic(cls, errors: Iterable[Mapping[str, Any]]) -> ValidationException:
        """From a pydantic ValidationError's `errors()`."""
        return cls(messages.pydantic_problems(errors))


class DuplicateException(CRMException):
    """The thing being created already exists (e.g. a user's email is taken)."""

    code = "duplicate"


class DuplicateLeadException(DuplicateException):
    """A new lead has the email or phone of live leads the caller may see."""

    def __init__(self, duplicates: list[dict[str, Any]]) -> None:
        self.duplicates = duplicates
        ids = ", ".join(str(d["id"]) for d in duplicates)
        fields = sorted({name for d in duplicates for name in d["matched_on"]})
        super().__init__(
            f"A lead with this {' and '.join(fields)} exists already (lead {ids}); send "
            "?on_duplicate=allow to create it anyway."
        )


class ConflictException(CRMException):
    """The request is well-formed but clashes with the current state (e.g. an archived lead, or
    a concurrent change that could not be retried)."""

    code = "conflict"


class MatchCountChangedException(ConflictException):
    """A bulk change by filter was sent with an `expected_count` (the preview's count) that the
    filter no longer matches: leads were added to or left its match since. `matched` is the
    count now; nothing was changed."""

    code = "match_count_changed"

    def __init__(self, expected: int, matched: int) -> None:
        self.expected = expected
        self.matched = matched
        super().__init__(
            f"The filter matches {matched} leads now, not the {expected} of expected_count; "
            "nothing was changed. Preview it again (dry_run) and send the new count."
        )


class PreconditionFailedException(CRMException):
    """The lead changed since the caller read it: its If-Match names another version."""

    code = "precondition_failed"

    def __init__(self, lead_id: int, version: int, tag: str) -> None:
        self.current_version = version
        self.tag = tag
        super().__init__(
            f"Lead {lead_id} has changed since that version was read: it is at version "
            f"{version} now (ETag {tag}); read it again and retry."
        )


class PreconditionRequiredException(CRMException):
    """This server requires If-Match on writes to a lead (`REQUIRE_IF_MATCH`)."""

    code = "precondition_required"

    def __init__(self) -> None:
        super().__init__(
            "This server requires an If-Match header on changes to a lead: send the ETag "
            'the lead was read with (or "*").'
        )


class IdempotencyKeyReusedException(CRMException):
    """The Idempotency-Key was first used with another request (method, path or body)."""

    code = "idempotency_key_reused"

    def __init__(self) -> None:
        super().__init__(
            "This Idempotency-Key was already used with a different request (another method, "
            "path or body); use a new key for a new request."
        )


class IdempotencyInProgressException(CRMException):
    """A request with this Idempotency-Key is still running."""

    code = "idempotency_in_progress"

    def __init__(self) -> None:
        super().__init__(
            "A request with this Idempotency-Key is still being processed; retry it in a moment "
            "to get its answer."
        )


class InvalidHeaderException(CRMException):
    """A request header the API reads is malformed; `header` names it."""

    code = "invalid_header"

    def __init__(self, header: str, problem: str) -> None:
        self.header = header
        self.errors = [{"loc": ["header", header], "msg": f"The {header} header {problem}."}]
        super().__init__(f"The {header} header {problem}.")


class InactiveUserException(CRMException):
    code = "inactive_user"

    def __init__(self, user_id: int, role: str = "User") -> None:
        self.user_id = user_id
        super().__init__(f"{role} {user_id} is inactive.")


class AuthenticationException(CRMException):
    """No valid credentials: a failed login, or a missing, expired or forged token. The message
    never says which, so it cannot be used to find out whether an account exists."""

    code = "not_authenticated"


class TooManyAttemptsException(CRMException):
    """Too many failed logins for this account from this client address; `retry_after` is how
    many seconds the lockout has left. Said whether or not the account exists."""

    code = "too_many_attempts"

    def __init__(self, retry_after: int) -> None:
        self.retry_after = retry_after
        super().__init__(f"Too many failed login attempts; try again in {retry_after} seconds.")


class TooManySubmissionsException(CRMException):
    """A client address sent a form more than CAPTURE_RATE_PER_MINUTE times this minute;
    `retry_after` is how many seconds are left of the minute."""

    code = "too_many_submissions"

    def __init__(self, retry_after: int) -> None:
        self.retry_after = retry_after
        super().__init__(f"Too many submissions of this form; try again in {retry_after} seconds.")


class LoginBusyException(CRMException):
    """Every password check of this process is taken, and stayed taken for
    LOGIN_QUEUE_SECONDS: a flood of logins. Worth retrying after `retry_after` seconds."""

    code = "login_busy"
    retry_after = 1

    def __init__(self) -> None:
        super().__init__("Too many logins are being checked right now; try again in a second.")


class DatabaseException(CRMException):
    """The database failed in a way the caller cannot fix by changing the request."""

    code = "database_error"


class DatabaseUnavailableException(DatabaseException):
    """The database could not be reached, or did not answer in time, before anything was
    changed: what a hot read (which also checks the caller's account) says, as the account
    check always said. Worth retrying."""

    code = "database_unavailable"


def id_list(ids: Sequence[int], limit: int = 20) -> str:
    shown = ", ".join(str(i) for i in ids[:limit])
    return shown if len(ids) <= limit else f"{shown} and {len(ids) - limit} more"


class ImportTakenOverException(ConflictException):
    """A worker's claim on an import ran out and another worker took it over: the first one's
    transaction must not be kept."""

    code = "import_taken_over"

    def __init__(self, import_id: int) -> None:
        super().__init__(f"Import {import_id} was taken over by another worker.")
