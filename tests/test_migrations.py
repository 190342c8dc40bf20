"""The Alembic migrations build exactly the schema the models declare, and take it down again.

Every test runs on a fresh SQLite file and, when TEST_DATABASE_URL is set, on a throw-away
PostgreSQL database created for that test alone: the rest of the suite uses the TEST_DATABASE_URL
database at the same time, and migrating it would pull the schema from under those tests.

The tests are sync on purpose: `command.upgrade` runs env.py, which starts its own event loop.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import PrimaryKeyConstraint, inspect, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from app.config import normalize_database_url, use_settings
from app.models import Base
from app.models.base import (
    MIGRATION_ONLY_INDEXES,
    MIGRATION_ONLY_TABLES,
    include_in_autogenerate,
    is_search_index_table,
)

ROOT = Path(__file__).resolve().parents[1]
TEST_DATABASE_URL = normalize_database_url(os.environ.get("TEST_DATABASE_URL", "").strip())
ON_POSTGRES = TEST_DATABASE_URL.startswith("postgresql")

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param(
        "postgresql",
        id="postgresql",
        marks=pytest.mark.skipif(not ON_POSTGRES, reason="needs TEST_DATABASE_URL (PostgreSQL)"),
    ),
]

T = TypeVar("T")
Schema = dict[str, dict[str, Any]]


# --- databases -----------------------------------------------------------------------------------


async def _on_postgres_server(statement: str) -> None:
    """CREATE/DROP DATABASE cannot run in a transaction, hence autocommit on the `postgres` db."""
    server = make_url(TEST_DATABASE_URL).set(database="postgres")
    engine = create_async_engine(server, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            await conn.execute(text(statement))
    finally:
        await engine.dispose()


@pytest.fixture(params=BACKENDS)
def new_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], str]]:
    """Makes empty databases of the test's backend; PostgreSQL ones are dropped afterwards."""
    backend: str = request.param
    made: list[str] = []

    def make() -> str:
        name = f"crm_migrations_{secrets.token_hex(6)}"
        made.append(name)
        if backend == "sqlite":
            return f"sqlite+aiosqlite:///{tmp_path / name}.db"
        asyncio.run(_on_postgres_server(f'CREATE DATABASE "{name}"'))
        url = make_url(TEST_DATABASE_URL).set(database=name)
        return url.render_as_string(hide_password=False)

    yield make

    if backend == "postgresql":
        for name in made:
            asyncio.run(_on_postgres_server(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def database_url(new_database: Callable[[], str]) -> str:
    return new_database()


# --- helpers -------------------------------------------------------------------------------------


def alembic_config(url: str | None = None) -> Config:
    """The project's alembic.ini, usable from any working directory and quiet about logging."""
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "alembic"))
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.attributes["configure_logger"] = False
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def run_on(url: str, fn: Callable[[Connection], T]) -> T:
    async def run() -> T:
        engine = create_async_engine(url, poolclass=NullPool)
        try:
            async with engine.connect() as conn:
                return await conn.run_sync(fn)
        finally:
            await engine.dispose()

    return asyncio.run(run())


def current_revision(conn: Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


def reflect_schema(conn: Connection) -> Schema:
    """Everything the database says about its tables, in a form that compares with `==`
    (SQLite's search index aside: its virtual table and shadow tables are no model's)."""
    inspector = inspect(conn)
    schema: Schema = {}
    for table in sorted(inspector.get_table_names()):
        if is_search_index_table(table):
            continue
        pk = inspector.get_pk_constraint(table)
        schema[table] = {
            "columns": {
                column["name"]: (str(column["type"]), column["nullable"])
                for column in inspector.get_columns(table)
            },
            "primary_key": {pk["name"]: tuple(pk["constrained_columns"])},
            "unique": {
                uq["name"]: tuple(uq["column_names"])
                for uq in inspector.get_unique_constraints(table)
            },
            "foreign_keys": {
                fk["name"]: (
                    tuple(fk["constrained_columns"]),
                    fk["referred_table"],
                    tuple(fk["referred_columns"]),
                    fk["options"].get("ondelete"),
                )
                for fk in inspector.get_foreign_keys(table)
            },
            "checks": {ck["name"]: ck["sqltext"] for ck in inspector.get_check_constraints(table)},
            "indexes": {
                ix["name"]: (tuple(ix["column_names"]), bool(ix["unique"]))
                for ix in inspector.get_indexes(table)
                # PostgreSQL also lists the index behind each unique constraint.
                if "duplicates_constraint" not in ix
            },
        }
    return schema


def named_objects(schema: Schema) -> set[tuple[str, str]]:
    return {
        (table, name)
        for table, parts in schema.items()
        for kind in ("primary_key", "unique", "foreign_keys", "checks", "indexes")
        for name in parts[kind]
        if name is not None
    }


def declared_objects(dialect: str) -> set[tuple[str, str]]:
    """(table, name) of every constraint and index on the models, named by the convention.

    SQLite writes an AUTOINCREMENT primary key inline, where it cannot carry a name, so there
    the primary keys of the AUTOINCREMENT tables are left out."""
    declared = {
        (table.name, str(item.name))
        for table in Base.metadata.tables.values()
        for item in (*table.constraints, *table.indexes)
        if not (
            dialect == "sqlite"
            and isinstance(item, PrimaryKeyConstraint)
            and table.dialect_options["sqlite"]["autoincrement"]
        )
    }
    if dialect == "postgresql":
        declared |= {("leads", name) for name in MIGRATION_ONLY_INDEXES}
    return declared


def expected_tables(dialect: str) -> set[str]:
    """The models' tables, Alembic's own, and on PostgreSQL the migration-only ones."""
    extra = MIGRATION_ONLY_TABLES if dialect == "postgresql" else frozenset()
    return {*Base.metadata.tables, "alembic_version", *extra}


def create_all(conn: Connection) -> None:
    Base.metadata.create_all(conn)
    conn.commit()


def model_differences(conn: Connection) -> list[Any]:
    context = MigrationContext.configure(
        conn, opts={"compare_type": True, "include_object": include_in_autogenerate}
    )
    return compare_metadata(context, Base.metadata)


# --- tests ---------------------------------------------------------------------------------------


def test_upgrade_head_creates_every_table_index_and_constraint_the_models_declare(
    database_url: str,
) -> None:
    command.upgrade(alembic_config(database_url), "head")

    schema = run_on(database_url, reflect_schema)
    dialect = "sqlite" if database_url.startswith("sqlite") else "postgresql"
    assert set(schema) == expected_tables(dialect)
    del schema["alembic_version"]
    for name in MIGRATION_ONLY_TABLES:  # no model declares them
        schema.pop(name, None)
    assert named_objects(schema) == declared_objects(dialect)
    assert run_on(database_url, current_revision) == head_revision()


def test_downgrade_base_leaves_only_the_alembic_version_table(database_url: str) -> None:
    config = alembic_config(database_url)
    command.upgrade(config, "head")

    command.downgrade(config, "base")

    assert set(run_on(database_url, reflect_schema)) == {"alembic_version"}
    assert run_on(database_url, current_revision) is None


def test_autogenerate_finds_no_difference_between_models_and_migrations(
    database_url: str,
) -> None:
    command.upgrade(alembic_config(database_url), "head")

    assert run_on(database_url, model_differences) == []


def test_check_constraints_match_the_models(new_database: Callable[[], str]) -> None:
    """Autogenerate does not compare CHECK constraints, so compare them with what the models
    build themselves, on the same kind of database."""
    migrated_url, reference_url = new_database(), new_database()
    command.upgrade(alembic_config(migrated_url), "head")
    run_on(reference_url, create_all)

    migrated = run_on(migrated_url, reflect_schema)
    reference = run_on(reference_url, reflect_schema)
    for table in Base.metadata.tables:
        assert migrated[table]["checks"] == reference[table]["checks"], table


def test_upgrade_downgrade_upgrade_rebuilds_the_same_schema(database_url: str) -> None:
    config = alembic_config(database_url)
    command.upgrade(config, "head")
    first = run_on(database_url, reflect_schema)

    command.downgrade(config, "base")
    command.upgrade(config, "head")

    assert run_on(database_url, reflect_schema) == first
    assert run_on(database_url, current_revision) == head_revision()


async def test_upgrade_runs_on_a_connection_handed_in_by_async_code(database_url: str) -> None:
    """Code already inside an event loop passes its connection instead of letting env.py start
    a loop of its own (which would fail here)."""

    def upgrade(conn: Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = conn
        command.upgrade(config, "head")

    engine = create_async_engine(database_url, poolclass=NullPool)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(upgrade)
        async with engine.connect() as conn:
            assert await conn.run_sync(current_revision) == head_revision()
            schema = await conn.run_sync(reflect_schema)
        dialect = "sqlite" if database_url.startswith("sqlite") else "postgresql"
        assert set(schema) == expected_tables(dialect)
    finally:
        await engine.dispose()


def test_url_comes_from_database_url_when_none_is_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'from_settings.db'}"  # normalized to aiosqlite by env.py
    monkeypatch.setenv("DATABASE_URL", url)

    with use_settings(None):  # none installed: the environment's, read afresh
        command.upgrade(alembic_config(), "head")

    assert run_on(normalize_database_url(url), current_revision) == head_revision()


def test_x_url_argument_wins_over_the_configured_url(tmp_path: Path) -> None:
    chosen = f"sqlite+aiosqlite:///{tmp_path / 'chosen.db'}"
    configured = f"sqlite+aiosqlite:///{tmp_path / 'configured.db'}"
    config = alembic_config(configured)
    config.cmd_opts = argparse.Namespace(x=[f"url={chosen}"])

    command.upgrade(config, "head")

    assert run_on(chosen, current_revision) == head_revision()
    assert not (tmp_path / "configured.db").exists()


def test_status_changed_at_is_backfilled_from_the_last_status_event_else_the_creation(
    database_url: str,
) -> None:
    """Leads from before the column: one whose status an event changed gets that event's time,
    one never changed gets its creation time; both survive the NOT NULL."""
    config = alembic_config(database_url)
    command.upgrade(config, "9b4e1f6c2a58")

    def seed(conn: Connection) -> None:
        postgres = conn.dialect.name == "postgresql"

        def at(text_: str) -> Any:  # asyncpg takes datetimes; SQLite stores the text
            return datetime.fromisoformat(text_ + "+00:00") if postgres else text_

        created, changed = at("2026-01-01 09:00:00"), at("2026-02-01 10:00:00")
        for lead_id in (1, 2):
            conn.execute(
                text(
                    "INSERT INTO leads (id, first_name, last_name, email, source, status, "
                    "lead_score, score_is_manual, tags, call_attempts, created_at, updated_at, "
                    "version) VALUES (:id, 'A', 'B', 'a@b.example', 'OTHER', 'WON', 0, false, "
                    f"'{'{}' if postgres else '[]'}', 0, :at, :at, 1)"
                ),
                {"id": lead_id, "at": created},
            )
        status = '{"status": {"old": "NEW", "new": "WON"}}'
        for kind, when in (("lead.created", created), ("lead.updated", changed)):
            conn.execute(
                text(
                    "INSERT INTO lead_events (lead_id, type, occurred_at, changes, lead_version) "
                    "VALUES (1, :kind, :at, :changes, 1)"
                ),
                {"kind": kind, "at": when, "changes": status},
            )
        conn.commit()

    run_on(database_url, seed)
    command.upgrade(config, "head")

    def read(conn: Connection) -> list[tuple[int, str]]:
        rows = conn.execute(text("SELECT id, status_changed_at FROM leads ORDER BY id"))
        return [(row[0], str(row[1])[:16]) for row in rows]

    assert run_on(database_url, read) == [(1, "2026-02-01 10:00"), (2, "2026-01-01 09:00")]


def test_a_row_inserted_without_status_changed_at_still_gets_one(database_url: str) -> None:
    """A script's INSERT that knows nothing of the column: SQLite's trigger gives it the row's
    creation time, PostgreSQL's default the insert's."""
    command.upgrade(alembic_config(database_url), "head")

    def insert_and_read(conn: Connection) -> tuple[str, str]:
        postgres = conn.dialect.name == "postgresql"
        created: Any = datetime(2026, 1, 1, 9, 0, tzinfo=UTC) if postgres else "2026-01-01 09:00:00"
        conn.execute(
            text(
                "INSERT INTO leads (first_name, last_name, email, source, status, lead_score, "
                "score_is_manual, tags, call_attempts, created_at, updated_at, version) VALUES "
                "('A', 'B', 'a@b.example', 'OTHER', 'NEW', 0, false, "
                f"'{'{}' if postgres else '[]'}', 0, :at, :at, 1)"
            ),
            {"at": created},
        )
        conn.commit()
        row = conn.execute(text("SELECT created_at, status_changed_at FROM leads")).one()
        return str(row[0])[:16], str(row[1])[:16]

    created, changed = run_on(database_url, insert_and_read)
    if database_url.startswith("sqlite"):
        assert changed == created == "2026-01-01 09:00"
    else:
        assert changed[:4] == str(datetime.now(UTC).year)
