"""Business logic. Services take an `AsyncSession`, own its transaction, and raise only the
exceptions in `app.services.exceptions`; they know nothing of HTTP."""

from app.services.lead_service import LeadService

__all__ = ["LeadService"]
