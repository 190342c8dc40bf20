"""The first superuser's generated password: written to a file only its owner can read, never
logged (the served side of it is in tests/test_cli.py)."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.bootstrap import admin_password_path, ensure_first_superuser
from app.config import Settings, use_settings
from app.models import User
from app.services.security import verify_password
from tests.helpers import TEST_SECRET, count_rows
from tests.log_scan import never_log


def bootstrap_settings(**values: object) -> Settings:
    return Settings(
        **{
            "_env_file": None,
            "app_env": "testing",
            "secret_key": SecretStr(TEST_SECRET),
            "admin_email": "first@example.com",
            **values,
        }
    )


async def test_a_generated_admin_password_goes_to_a_file_only_its_owner_can_read(
    db: AsyncSession, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    password_file = tmp_path / "admin_password"

    with use_settings(bootstrap_settings(admin_password_file=str(password_file))):
        result = await ensure_first_superuser(db)

    assert result == ("first@example.com", password_file)
    assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
    password = password_file.read_text().strip()
    never_log(password)
    admin = await db.scalar(select(User).where(User.is_superuser))
    assert admin is not None and verify_password(password, admin.hashed_password)
    assert all(password not in record.getMessage() for record in caplog.records)
    assert os.listdir(tmp_path) == ["admin_password"]  # no temporary left


async def test_with_a_superuser_there_the_password_file_is_not_touched(
    db: AsyncSession, tmp_path: Path, superuser: User
) -> None:
    """The usual restart: it must work with the folder read-only or gone."""
    nowhere = tmp_path / "no-such-folder" / "admin_password"

    with use_settings(bootstrap_settings(admin_password_file=str(nowhere))):
        result = await ensure_first_superuser(db)

    assert result is None
    assert os.listdir(tmp_path) == []


async def test_an_unwritable_password_folder_stops_the_start_before_the_account_is_made(
    db: AsyncSession, tmp_path: Path
) -> None:
    """Else a superuser would exist whose password nobody can know."""
    nowhere = tmp_path / "no-such-folder" / "admin_password"

    with (
        use_settings(bootstrap_settings(admin_password_file=str(nowhere))),
        pytest.raises(RuntimeError, match="ADMIN_PASSWORD"),
    ):
        await ensure_first_superuser(db)

    assert await count_rows(db, "users") == 0


def test_the_password_file_is_beside_a_sqlite_database_by_default(tmp_path: Path) -> None:
    database = tmp_path / "crm.db"
    settings = bootstrap_settings(database_url=f"sqlite+aiosqlite:///{database}")

    assert admin_password_path(settings) == tmp_path / "crm.db.admin_password"


def production_settings(**values: object) -> Settings:
    return bootstrap_settings(app_env="production", **values)


def test_production_with_postgresql_refuses_a_password_file_in_the_working_folder() -> None:
    settings = production_settings(database_url="postgresql+asyncpg://crm@db.internal/crm")

    with pytest.raises(RuntimeError, match="ADMIN_PASSWORD_FILE") as refused:
        admin_password_path(settings)
    assert "ADMIN_PASSWORD " in str(refused.value)  # the other way out, named too
    assert str(Path.cwd()) in str(refused.value)


def test_production_puts_the_password_where_admin_password_file_says(tmp_path: Path) -> None:
    chosen = tmp_path / "admin_password"
    settings = production_settings(
        database_url="postgresql+asyncpg://crm@db.internal/crm", admin_password_file=str(chosen)
    )

    assert admin_password_path(settings) == chosen


def test_production_with_a_sqlite_file_keeps_the_password_beside_it(tmp_path: Path) -> None:
    database = tmp_path / "crm.db"
    settings = production_settings(database_url=f"sqlite+aiosqlite:///{database}")

    assert admin_password_path(settings) == tmp_path / "crm.db.admin_password"


async def test_production_without_a_place_for_the_password_makes_no_superuser(
    db: AsyncSession,
) -> None:
    settings = production_settings(database_url="postgresql+asyncpg://crm@db.internal/crm")

    with use_settings(settings), pytest.raises(RuntimeError, match="ADMIN_PASSWORD_FILE"):
        await ensure_first_superuser(db)

    assert await count_rows(db, "users") == 0


async def test_production_with_admin_password_needs_no_file(db: AsyncSession) -> None:
    settings = production_settings(
        database_url="postgresql+asyncpg://crm@db.internal/crm",
        admin_password=SecretStr("a long production passphrase"),
    )

    with use_settings(settings):
        assert await ensure_first_superuser(db) is None

    assert await count_rows(db, "users") == 1
