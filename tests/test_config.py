"""Settings: how operators' values are read, and that every one of them is documented."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from pydantic import SecretStr

from app.bootstrap import resolve_secret_key, secret_key_path
from app.config import AppEnv, Settings, normalize_database_url

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgres://u:p@h:5432/crm", "postgresql+asyncpg://u:p@h:5432/crm"),
        ("postgresql://u@h/crm", "postgresql+asyncpg://u@h/crm"),
        ("postgresql+asyncpg://u@h/crm", "postgresql+asyncpg://u@h/crm"),
        ("sqlite:///./crm.db", "sqlite+aiosqlite:///./crm.db"),
        ("sqlite+aiosqlite:///./crm.db", "sqlite+aiosqlite:///./crm.db"),
    ],
)
def test_database_url_aliases_mean_the_async_drivers(given: str, expected: str) -> None:
    assert normalize_database_url(given) == expected
    assert Settings(_env_file=None, database_url=given).database_url == expected


def test_comma_separated_lists_are_split_trimmed_and_deduplicated(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HIGH_VALUE_TAGS", " VIP, whale ,vip,,")
    monkeypatch.setenv("CORS_ORIGINS", "http://localhost:5173, https://crm.example.com")
    settings = Settings(_env_file=None)
    assert settings.high_value_tags == ("vip", "whale")
    assert settings.cors_origins == ("http://localhost:5173", "https://crm.example.com")


def test_every_setting_is_listed_in_env_example() -> None:
    example = (ROOT / ".env.example").read_text()
    missing = [name.upper() for name in Settings.model_fields if name.upper() not in example]
    assert missing == []


def test_production_refuses_to_start_without_a_secret_key() -> None:
    settings = Settings(_env_file=None, app_env=AppEnv.PRODUCTION)
    with pytest.raises(RuntimeError, match="SECRET_KEY"):
        resolve_secret_key(settings)


def test_a_short_secret_key_is_refused() -> None:
    with pytest.raises(RuntimeError, match="at least 32"):
        resolve_secret_key(Settings(_env_file=None, secret_key=SecretStr("short")))


def test_without_a_secret_key_one_is_kept_beside_the_database_with_mode_0600(
    tmp_path: Path,
) -> None:
    settings = Settings(_env_file=None, database_url=f"sqlite+aiosqlite:///{tmp_path}/crm.db")
    first = resolve_secret_key(settings)
    path = secret_key_path(settings)
    assert path == tmp_path / "crm.db.secret"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert first.secret_key is not None
    again = resolve_secret_key(settings)
    assert again.secret_key is not None
    assert again.secret_key.get_secret_value() == first.secret_key.get_secret_value()
    assert len(first.secret_key.get_secret_value()) >= 32
