"""ORM models. Importing this package registers every table on `Base.metadata`."""

from app.models.api_key import ApiKey, ApiKeyScope
from app.models.assignment_rule import AssignmentRule, AssignmentStrategy
from app.models.auth_session import AuthSession, RefreshToken
from app.models.base import Base
from app.models.capture_form import CaptureForm, CaptureRateCount
from app.models.idempotency_key import IdempotencyKey
from app.models.lead import (
    ARCHIVED_TAG,
    CLOSED_STATUSES,
    HOT_LEAD_MIN_SCORE,
    Lead,
    LeadSource,
    LeadStatus,
    format_note_line,
)
from app.models.lead_event import LeadEvent, LeadEventType
from app.models.lead_import import (
    ImportMode,
    ImportStatus,
    LeadImport,
    LeadImportError,
    OnError,
)
from app.models.lead_search import LEADS_SEARCH, TRIGRAM_LENGTH
from app.models.lead_stats import UNASSIGNED, LeadStats
from app.models.login_failure import LoginFailure
from app.models.user import User
from app.models.validation import FieldValidationError
from app.models.webhook import DeliveryStatus, Webhook, WebhookDelivery

__all__ = [
    "ARCHIVED_TAG",
    "CLOSED_STATUSES",
    "HOT_LEAD_MIN_SCORE",
    "LEADS_SEARCH",
    "TRIGRAM_LENGTH",
    "UNASSIGNED",
    "ApiKey",
    "ApiKeyScope",
    "AssignmentRule",
    "AssignmentStrategy",
    "AuthSession",
    "Base",
    "CaptureForm",
    "CaptureRateCount",
    "DeliveryStatus",
    "FieldValidationError",
    "IdempotencyKey",
    "ImportMode",
    "ImportStatus",
    "Lead",
    "LeadEvent",
    "LeadEventType",
    "LeadImport",
    "LeadImportError",
    "LeadSource",
    "LeadStats",
    "LeadStatus",
    "LoginFailure",
    "OnError",
    "RefreshToken",
    "User",
    "Webhook",
    "WebhookDelivery",
    "format_note_line",
]
