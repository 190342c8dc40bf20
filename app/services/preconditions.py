"""Optimistic concurrency (issue 13): a lead's entity tag, and what a write's If-Match asks.

A lead's tag is `"<id>-<version>"`: the version counts every change to the lead, so the tag
changes whenever anything the API shows of the lead does (a strong validator). A write that
carries a `Precondition` runs only if the lead still has one of its tags; the check is made on
the row the write has locked, so of many writers holding one tag exactly one gets through.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.services.exceptions import PreconditionFailedException


def entity_tag(lead_id: int, version: int) -> str:
    """The lead's ETag, quotes included."""
    return f'"{lead_id}-{version}"'


@dataclass(frozen=True, slots=True)
class Precondition:
    """An If-Match: any existing lead (`*`), or a lead that has one of `tags` (quoted, as
    `entity_tag` writes them)."""

    tags: frozenset[str] = frozenset()
    any: bool = False

    def allows(self, lead_id: int, version: int) -> bool:
        return self.any or entity_tag(lead_id, version) in self.tags


ANY_LEAD = Precondition(any=True)


def ensure_precondition(precondition: Precondition | None, lead_id: int, version: int) -> None:
    """Refuse the write (412) unless the locked lead satisfies `precondition`."""
    if precondition is not None and not precondition.allows(lead_id, version):
        raise PreconditionFailedException(lead_id, version, entity_tag(lead_id, version))
