"""Business logic. Services take an `AsyncSession`, own its transaction, and raise only the
exceptions in `app.services.exceptions`; they know nothing of HTTP."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from app.services.lead_service import LeadService

__all__ = ["LeadService"]


def __getattr__(name: str) -> Any:
    """`from app.services import LeadService`, imported on first use: the schemas import
    `app.services.exceptions`, and LeadService imports the schemas."""
    if name == "LeadService":
        from app.services.lead_service import LeadService

        return LeadService
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
