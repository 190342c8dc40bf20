"""How alike two leads' names are: PostgreSQL's pg_trgm measure, on both databases.

A lead's name key is its first name, last name and company, lowercased and without accents
("Zoë Müller ACME" -> "zoe muller acme"). Two keys are compared as pg_trgm compares text:
each word (a run of letters and digits) padded with two spaces before and one after, cut into
its three-character pieces, and the share of the pieces the two have in common (shared / all).

On PostgreSQL both are SQL functions: `crm_name_key`, an immutable wrapper of `unaccent` (an
index needs an immutable expression: migration 2026-12-07_lead_name_likeness), and pg_trgm's
`similarity`. SQLite has neither, so each of its connections gets the two as Python functions
of the same names (app/database.py), and one SQLAlchemy expression serves both.

`alike` is the test the trigram index answers: pg_trgm's `%` on PostgreSQL, true from the
setting `pg_trgm.similarity_threshold` (0.3 by default; every connection of the app's sets it
to ALIKE_THRESHOLD, app/database.py), and `similarity(a, b) >= ALIKE_THRESHOLD` on SQLite. 0.5,
because at 0.3 a shared first name alone makes "Michael Johnson" alike "Michael Williams".
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

from sqlalchemy import Boolean, ColumnElement, FunctionElement, column, func, table
from sqlalchemy.ext.compiler import compiles

ALIKE_THRESHOLD = 0.5
THRESHOLD_SETTING = "pg_trgm.similarity_threshold"
_WORD = re.compile(r"[^\W_]+")  # letters and digits, as pg_trgm keeps them
# Letters that unaccent maps but Unicode does not decompose into a base letter and a mark.
_NOT_DECOMPOSED = str.maketrans(
    {"ß": "ss", "æ": "ae", "œ": "oe", "ø": "o", "ł": "l", "đ": "d", "ð": "d", "þ": "th", "ı": "i"}
)


def fold(text: str) -> str:
    """Lowercased, accents removed: what `unaccent` and `lower` make of it."""
    decomposed = unicodedata.normalize("NFKD", text.lower().translate(_NOT_DECOMPOSED))
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def name_key(first_name: Any, last_name: Any, company: Any) -> str:
    """The Python twin of the SQL function `crm_name_key`."""
    return fold(" ".join(str(part or "") for part in (first_name, last_name, company)))


def trigrams(text: str) -> set[str]:
    pieces: set[str] = set()
    for word in _WORD.findall(text.lower()):
        padded = f"  {word} "
        pieces.update(padded[i : i + 3] for i in range(len(padded) - 2))
    return pieces


def similarity(a: Any, b: Any) -> float | None:
    """pg_trgm's `similarity(a, b)`: 0 when either has no word, NULL for a NULL."""
    if a is None or b is None:
        return None
    left, right = trigrams(a), trigrams(b)
    if not left or not right:
        return 0.0
    shared = len(left & right)
    return shared / (len(left) + len(right) - shared)


# PostgreSQL: every name key a lead has had, once (migration 2026-12-07_lead_name_likeness,
# whose triggers keep it); the trigram search runs over it. Not a model: SQLite has none.
LEAD_NAME_KEYS = table("lead_name_keys", column("key"))

SQLITE_FUNCTIONS = (("crm_name_key", 3, name_key), ("similarity", 2, similarity))


def name_key_of(table: Any) -> ColumnElement[str]:
    """The name key of a leads table's row: the expression the trigram index is built on."""
    return func.crm_name_key(table.c.first_name, table.c.last_name, table.c.company)


class alike(FunctionElement[bool]):
    """`alike(a, b)`: the two texts are at least `ALIKE_THRESHOLD` similar."""

    type = Boolean()
    inherit_cache = True
    name = "alike"


@compiles(alike, "postgresql")
def _alike_postgresql(element: alike, compiler: Any, **kw: Any) -> str:
    a, b = element.clauses
    return compiler.process(a.op("%", is_comparison=True)(b), **kw)


@compiles(alike)
def _alike_elsewhere(element: alike, compiler: Any, **kw: Any) -> str:
    a, b = element.clauses
    return compiler.process(func.similarity(a, b) >= ALIKE_THRESHOLD, **kw)
