"""Settings: how operators' values are read, and that every one of them is documented."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import jwt
import pytest
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.api.deps import SettingsDep
from app.bootstrap import resolve_secret_key, secret_key_path
from app.config import AppEnv, Settings, get_settings, normalize_database_url, use_settings
from app.models import User
from tests.helpers import PASSWORD, app_in_session, client_of, make_settings, token_for

ROOT = Path(__file__).resolve().parent.parent
TOKEN_URL = "/api/v1/auth/token"


def credentials(user: User, password: str) -> dict[str, str]:
    return {"username": user.email, "password": password}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


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
    with (
        use_settings(Settings(_env_file=None, app_env=AppEnv.PRODUCTION)),
        pytest.raises(RuntimeError, match="SECRET_KEY"),
    ):
        resolve_secret_key()


def test_a_short_secret_key_is_refused() -> None:
    with (
        use_settings(Settings(_env_file=None, secret_key=SecretStr("short"))),
        pytest.raises(RuntimeError, match="at least 32"),
    ):
        resolve_secret_key()


def test_without_a_secret_key_one_is_kept_beside_the_database_with_mode_0600(
    tmp_path: Path,
) -> None:
    settings = Settings(_env_file=None, database_url=f"sqlite+aiosqlite:///{tmp_path}/crm.db")
    with use_settings(settings):
        first = resolve_secret_key()
    path = secret_key_path(settings)
    assert path == tmp_path / "crm.db.secret"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert first.secret_key is not None
    with use_settings(settings):
        again = resolve_secret_key()
    assert again.secret_key is not None
    assert again.secret_key.get_secret_value() == first.secret_key.get_secret_value()
    assert len(first.secret_key.get_secret_value()) >= 32


# ------------------------------------------------------------------- one source of settings


async def test_the_apps_settings_dependency_hands_out_the_object_the_services_read(
    settings: Settings, engine: AsyncEngine, db: AsyncSession
) -> None:
    """Routes get their settings through `SettingsDep`; services call `get_settings()`. Were
    the app to keep a copy of its own again (as `app.state.settings` once was), a test's or a
    generated key's settings would reach one and not the other."""
    app = app_in_session(engine, db)
    seen: list[Settings] = []

    async def probe(given: SettingsDep) -> dict[str, str]:
        seen.append(given)
        return {}

    app.add_api_route("/probe/settings", probe, methods=["GET"])
    async with client_of(app) as client:
        assert (await client.get("/probe/settings")).status_code == 200

    assert len(seen) == 1
    assert seen[0] is settings
    assert seen[0] is get_settings()


async def test_a_setting_put_in_force_reaches_the_route_and_the_service_alike(
    engine: AsyncEngine, db: AsyncSession, agent: User, other_agent: User
) -> None:
    """One object: the token lifetime (read by the route) and the login limit (read by the
    service) both come from it."""
    with use_settings(make_settings(access_token_expire_minutes=7, login_max_failures=1)):
        async with client_of(app_in_session(engine, db)) as client:
            ok = await client.post(TOKEN_URL, data=credentials(other_agent, PASSWORD))
            first = await client.post(TOKEN_URL, data=credentials(agent, "wrong password"))
            second = await client.post(TOKEN_URL, data=credentials(agent, PASSWORD))

    assert ok.status_code == 200, ok.text
    assert ok.json()["expires_in"] == 7 * 60
    assert first.status_code == 401, first.text
    assert second.status_code == 429, second.text


async def test_a_generated_signing_key_is_the_one_requests_and_services_use(
    engine: AsyncEngine, db: AsyncSession, agent: User
) -> None:
    """Without SECRET_KEY the app makes a key; it must end up in the settings everything reads,
    so a token signed by a route, a service or a script is accepted by every other."""
    with use_settings(Settings(_env_file=None, app_env=AppEnv.TESTING)):
        app = app_in_session(engine, db)
        generated = get_settings().secret_key
        assert generated is not None
        from_a_script = token_for(get_settings(), agent.id)
        async with client_of(app) as client:
            login = await client.post(TOKEN_URL, data=credentials(agent, PASSWORD))
            me = await client.get("/api/v1/users/me", headers=bearer(from_a_script))

    assert login.status_code == 200, login.text
    claims = jwt.decode(
        login.json()["access_token"], generated.get_secret_value(), algorithms=["HS256"]
    )
    assert claims["sub"] == str(agent.id)
    assert me.status_code == 200, me.text


def test_settings_put_in_force_for_a_block_are_taken_out_after_it() -> None:
    before = get_settings()
    mine = make_settings(page_max_limit=555)

    with use_settings(mine) as inside:
        assert inside is mine
        assert get_settings() is mine

    assert get_settings() is before
