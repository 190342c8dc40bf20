"""Alembic environment for the CRM database.

The URL is not in alembic.ini, so that a migration can never run against a different database
from the one the app uses. Where the database comes from, first match wins:

1. `config.attributes["connection"]`: a sync `Connection` from code that already runs an event
   loop (the app at start-up, async tests), where this module may not call `asyncio.run`:

       def upgrade(sync_conn: Connection) -> None:
           cfg = Config("alembic.ini")
           cfg.attributes["connection"] = sync_conn
           command.upgrade(cfg, "head")

       async with engine.begin() as conn:
           await conn.run_sync(upgrade)

   It is used as is and left open; if it is already in a transaction, committing is the caller's
   job. On SQLite its foreign keys should be off (see `_migration_engine`).
2. `alembic -x url=...` on the command line, for a one-off run against another database.
3. `sqlalchemy.url` set on the Config by code (tests do this).
4. The app's settings: DATABASE_URL or `.env`, exactly what the app itself would connect to.

URLs 2-4 go through `normalize_database_url`, so `postgres://...` pasted from a hosting panel
works here just as it does in the app.
"""

from __future__ import annotations

import asyncio
from logging.config import fileConfig
from typing import Any, Literal

from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlalchemy import pool
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_engine_from_config

from app.config import get_settings, normalize_database_url
from app.models import Base
from app.models.base import include_in_autogenerate
from app.models.types import TAG_MAX_LENGTH, TagList, UTCDateTime

config = context.config
target_metadata = Base.metadata

# Code that runs migrations (tests, app start-up) owns its logging; only the CLI gets the ini's.
if (
    config.config_file_name is not None
    and "connection" not in config.attributes
    and config.attributes.get("configure_logger", True)
):
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def database_url() -> str:
    url = (
        context.get_x_argument(as_dictionary=True).get("url")
        or config.get_main_option("sqlalchemy.url")
        or get_settings().database_url
    )
    return normalize_database_url(url)


def render_item(type_: str, obj: Any, autogen_context: AutogenContext) -> str | Literal[False]:
    """Render the app's column types as the plain SQLAlchemy types they stand for.

    A revision file must build the same schema forever, so it may not import app code that will
    keep changing. Python-side conversion (UTC on read, list coercion) does not affect the schema.
    """
    if type_ != "type":
        return False
    if isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    if isinstance(obj, TagList):
        autogen_context.imports.add("from sqlalchemy.dialects import postgresql")
        return (
            f"sa.JSON().with_variant(postgresql.ARRAY(sa.String(length={TAG_MAX_LENGTH})), "
            '"postgresql")'
        )
    return False


def _configure(dialect_name: str, **kwargs: Any) -> None:
    context.configure(
        target_metadata=target_metadata,
        compare_type=True,
        render_item=render_item,
        include_object=include_in_autogenerate,
        # SQLite's ALTER TABLE cannot change or drop most things; batch mode rebuilds the table
        # instead. PostgreSQL alters in place, so it gets plain operations.
        render_as_batch=dialect_name == "sqlite",
        **kwargs,
    )


def run_migrations_offline() -> None:
    """`alembic upgrade --sql`: writes the SQL for a DBA to review and run, needing no driver."""
    url = database_url()
    _configure(
        make_url(url).get_backend_name(),
        url=url,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def do_run_migrations(connection: Connection) -> None:
    _configure(connection.dialect.name, connection=connection)
    with context.begin_transaction():
        context.run_migrations()


def _migration_engine(url: str) -> AsyncEngine:
    """An engine for this one run, not `app.database.create_engine`.

    NullPool: a migration needs one connection, once. And no foreign-key pragma on SQLite: when
    batch mode rebuilds a table it drops the old copy, and with foreign keys on that drop deletes
    every row first, firing `ON DELETE SET NULL` on the leads that point at it.
    """
    section = config.get_section(config.config_ini_section, {})
    section["sqlalchemy.url"] = url
    return async_engine_from_config(section, prefix="sqlalchemy.", poolclass=pool.NullPool)


async def run_async_migrations() -> None:
    engine = _migration_engine(database_url())
    try:
        async with engine.connect() as connection:
            await connection.run_sync(do_run_migrations)
    finally:
        await engine.dispose()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        do_run_migrations(connection)
    else:
        asyncio.run(run_async_migrations())


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
