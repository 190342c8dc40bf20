"""Declarative base with a naming convention, so Alembic can name (and later drop) every index
and constraint the same way on SQLite and PostgreSQL."""

from sqlalchemy import MetaData
from sqlalchemy.orm import DeclarativeBase

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


# PostgreSQL-only indexes (trigram search, GIN over the tag array, the covering statistics
# index, the partial indexes of the WON leads' durations) exist in the migrations but not on
# the models: SQLite has no such index types, and autogenerate cannot compare them.
# PostgreSQL's distinct name keys (app/models/name_likeness.py): made and kept by the
# migration's trigger, not by the models.
MIGRATION_ONLY_TABLES = frozenset({"lead_name_keys"})
MIGRATION_ONLY_INDEXES = frozenset(
    {
        "ix_leads_search_trgm",
        "ix_leads_tags_gin",
        "ix_leads_statistics",
        "ix_leads_won_duration",
        "ix_leads_won_duration_by_assignee",
        "ix_leads_email_lower",
        "ix_leads_name_key",
        "ix_leads_owner_name_key",
    }
)


# Triggers only the migrations make. On a SQLite database migrated from before the column,
# `leads_status_changed_at_default` stands in for the default `status_changed_at` could not be
# given there (ALTER TABLE takes only constant defaults); a database built from the models has
# the default itself. On PostgreSQL the `leads_name_keys_*` pair keeps `lead_name_keys`, itself
# migration-only.
MIGRATION_ONLY_TRIGGERS = frozenset(
    {"leads_status_changed_at_default", "leads_name_keys_insert", "leads_name_keys_update"}
)


# SQLite's search index (app/models/lead_search.py) is an FTS5 virtual table, which SQLite lists
# as tables together with the shadow tables it keeps its index in; none of them is a model.
SEARCH_INDEX_TABLE = "leads_search"
FTS5_SHADOW_SUFFIXES = ("_data", "_idx", "_config", "_docsize", "_content")


def is_search_index_table(name: str | None) -> bool:
    return name == SEARCH_INDEX_TABLE or any(
        name == SEARCH_INDEX_TABLE + suffix for suffix in FTS5_SHADOW_SUFFIXES
    )


def include_in_autogenerate(
    obj: object, name: str | None, type_: str, reflected: bool, compare_to: object
) -> bool:
    """Alembic's `include_object` hook: leave the migration-only indexes and SQLite's search
    index tables out of comparisons."""
    if type_ == "table":
        return not is_search_index_table(name) and name not in MIGRATION_ONLY_TABLES
    return not (type_ == "index" and name in MIGRATION_ONLY_INDEXES)
