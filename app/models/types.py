"""Column types that behave the same on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, String, bindparam
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.types import TypeDecorator, TypeEngine

TAG_MAX_LENGTH = 50


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware timestamp that always comes back in UTC.

    PostgreSQL's `timestamptz` already does this; SQLite stores no offset and hands back naive
    values, which would make `days_since_created` and the API's ISO output wrong. Naive values
    coming in are taken to be UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

    def result_processor(self, dialect: Dialect, coltype: Any) -> Any:
        if dialect.name == "postgresql" and dialect.driver == "asyncpg":
            return None  # asyncpg already decodes timestamptz as an aware datetime in UTC
        return super().result_processor(dialect, coltype)


class TagList(TypeDecorator[list[str]]):
    """A lead's tags: `varchar(50)[]` on PostgreSQL (GIN-indexable, `&&` for "any of"), a JSON
    array on SQLite (`json_each` for "any of"). See app/models/README.md for why."""

    impl = JSON
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(postgresql.ARRAY(String(TAG_MAX_LENGTH)))
        return dialect.type_descriptor(JSON())

    def process_bind_param(self, value: list[str] | None, dialect: Dialect) -> list[str]:
        return list(value or [])

    def process_result_value(self, value: list[str] | None, dialect: Dialect) -> list[str]:
        return list(value or [])

    def result_processor(self, dialect: Dialect, coltype: Any) -> Any:
        if dialect.name == "postgresql" and dialect.driver == "asyncpg":
            # asyncpg decodes varchar[] to a list itself; ARRAY's own processor would copy
            # every list element by element (a measurable share of a page of 50 leads).
            return _list_or_empty
        return super().result_processor(dialect, coltype)


def _list_or_empty(value: list[str] | None) -> list[str]:
    return [] if value is None else value


class tags_overlap(FunctionElement[bool]):
    """`tags_overlap(Lead.tags, ["vip", "hot"])`: true when the lead has any of the given tags."""

    type = Boolean()
    inherit_cache = True
    name = "tags_overlap"
    # A condition already: no "= 1" after it on SQLite, which would make SQLite compute the
    # whole AND below as a value, `json_each` included, instead of stopping at the prefilter.
    _is_implicitly_boolean = True

    def __init__(self, column: ColumnElement[Any], tags: list[str]) -> None:
        # TagList binds a list as varchar[] on PostgreSQL and as a JSON text on SQLite; the
        # texts after it are SQLite's prefilter (`_tags_overlap_default`).
        texts = [bindparam("tag_text", text, unique=True) for text in _json_texts(tags)]
        super().__init__(
            column, bindparam("tags_any", list(tags), type_=TagList(), unique=True), *texts
        )


def _json_texts(tags: list[str]) -> list[str]:
    """Each tag as a JSON string literal, as it appears inside a stored JSON array: escaped
    to ASCII as Python's `json` writes it (SQLAlchemy's JSON type on SQLite) and unescaped as
    SQLite's own JSON functions write it. A lead holding the tag holds one of these texts."""
    return list(
        dict.fromkeys(
            text for tag in tags for text in (json.dumps(tag), json.dumps(tag, ensure_ascii=False))
        )
    )


@compiles(tags_overlap, "postgresql")
def _tags_overlap_pg(element: tags_overlap, compiler: Any, **kw: Any) -> str:
    column, tags, *_ = list(element.clauses)
    return (
        f"({compiler.process(column, **kw)} && "
        f"CAST({compiler.process(tags, **kw)} AS VARCHAR({TAG_MAX_LENGTH})[]))"
    )


@compiles(tags_overlap)
def _tags_overlap_default(element: tags_overlap, compiler: Any, **kw: Any) -> str:
    """`json_each` decides; a plain substring test first skips, for a few microseconds, the
    leads whose tags text cannot hold any of the tags (most of them), where setting up
    `json_each` costs far more (SQLite's `tags=vip` page at 100,000 leads, issue 12)."""
    column, tags, *texts = list(element.clauses)
    tags_text = compiler.process(column, **kw)
    prefilter = " OR ".join(f"instr({tags_text}, {compiler.process(t, **kw)})" for t in texts)
    return (
        f"(({prefilter}) AND EXISTS (SELECT 1 FROM json_each({tags_text}) "
        f"WHERE json_each.value IN (SELECT value FROM json_each({compiler.process(tags, **kw)}))))"
    )
