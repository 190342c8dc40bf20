"""What a fresh installation needs before it can serve: a signing key and a first superuser."""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
import time
from pathlib import Path

from pydantic import SecretStr
from sqlalchemy import select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import AppEnv, Settings, get_settings, install_settings
from app.database import is_memory_sqlite
from app.models import User
from app.services.exceptions import DuplicateException
from app.services.user_service import UserService

DEFAULT_SECRET_FILE = ".crm_secret_key"
DEFAULT_ADMIN_PASSWORD_FILE = ".crm_admin_password"


def secret_key_path(settings: Settings) -> Path:
    """Beside the SQLite database file, or in the working folder for other databases (never in
    production, which needs SECRET_KEY itself)."""
    if settings.secret_key_file:
        return Path(settings.secret_key_file)
    return _beside_database(settings, ".secret", DEFAULT_SECRET_FILE)


def admin_password_path(settings: Settings) -> Path:
    """Where a generated first-superuser password is kept: ADMIN_PASSWORD_FILE, else like the
    key file, beside the SQLite database file, or in the working folder for other databases.

    In production a database that is not a file (PostgreSQL) has no "beside": the working
    folder is wherever the process manager happened to start the app, and a password left
    there is found by whoever looks next. So production refuses, and asks for
    ADMIN_PASSWORD or ADMIN_PASSWORD_FILE instead."""
    if settings.admin_password_file:
        return Path(settings.admin_password_file)
    path = _beside_database(settings, ".admin_password", DEFAULT_ADMIN_PASSWORD_FILE)
    if settings.app_env is AppEnv.PRODUCTION and path == Path(DEFAULT_ADMIN_PASSWORD_FILE):
        raise RuntimeError(
            "APP_ENV=production and the database has no superuser yet: set ADMIN_PASSWORD "
            "(the first superuser's password) or ADMIN_PASSWORD_FILE (where to write a "
            f"generated one); it is not written into the working directory ({Path.cwd()})."
        )
    return path


def _beside_database(settings: Settings, suffix: str, otherwise: str) -> Path:
    url = settings.database_url
    if settings.is_sqlite and not is_memory_sqlite(url):
        database = make_url(url).database or "crm.db"
        return Path(database).with_name(Path(database).name + suffix)
    return Path(otherwise)


def resolve_secret_key() -> Settings:
    """Make sure the settings in force carry a signing key, and return them: SECRET_KEY, else
    the key file (made on first use, mode 0600, so tokens survive restarts and every worker
    process signs alike). A key read or generated here is installed into the settings in force
    (`app.config.install_settings`), so whatever signs or checks a token, a route, a service or
    a script, reads the same key. Production refuses to run without an explicit SECRET_KEY."""
    settings = get_settings()
    if settings.secret_key is not None:
        if len(settings.secret_key.get_secret_value()) < 32:
            raise RuntimeError("SECRET_KEY must be at least 32 characters long.")
        return settings
    if settings.app_env is AppEnv.PRODUCTION:
        raise RuntimeError("APP_ENV=production needs SECRET_KEY (at least 32 characters).")
    if settings.app_env is AppEnv.TESTING:
        key = secrets.token_urlsafe(48)
    else:
        key = _read_or_create(secret_key_path(settings))
    settings = settings.model_copy(update={"secret_key": SecretStr(key)})
    install_settings(settings)
    return settings


def _read_or_create(path: Path) -> str:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_existing(path)
    key = secrets.token_urlsafe(48)
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n")
    return key


def _read_existing(path: Path) -> str:
    # Another process may have created the file a moment ago and still be writing it.
    for _ in range(50):
        key = path.read_text().strip()
        if len(key) >= 32:
            return key
        time.sleep(0.02)
    raise RuntimeError(f"The key file {path} is damaged; delete it to make a new one.")


async def ensure_first_superuser(db: AsyncSession) -> tuple[str, Path] | None:
    """Create the first superuser (ADMIN_EMAIL) when there is none. Without ADMIN_PASSWORD its
    password is generated and written to `admin_password_path` (mode 0600), never printed or
    logged: a log is read by more people, and kept longer, than the account should be open
    to. Returns (email, that file) when a password was generated, so the caller can say where
    it is; None otherwise."""
    settings = get_settings()
    if settings.admin_password:
        password = settings.admin_password.get_secret_value()
        with contextlib.suppress(DuplicateException):  # a process beside this one made it first
            await UserService.ensure_superuser(db, settings.admin_email, password)
        return None
    if await db.scalar(select(User.id).where(User.is_superuser).limit(1)) is not None:
        return None  # the usual restart: no file is touched, the folder may be read-only
    path = admin_password_path(settings)
    # The file is opened before the account exists: a folder the password cannot be written to
    # fails the start-up, instead of leaving a superuser whose password nobody knows.
    try:
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    except OSError as exc:
        raise RuntimeError(
            f"cannot write the generated admin password to {path} ({exc.strerror}); "
            "set ADMIN_PASSWORD, or ADMIN_PASSWORD_FILE to a writable place."
        ) from None
    try:
        with os.fdopen(fd, "w") as handle:
            password = secrets.token_urlsafe(12)
            try:
                created = await UserService.ensure_superuser(db, settings.admin_email, password)
            except DuplicateException:  # a process starting beside this one made it first
                return None
            if created is None:
                return None
            handle.write(password + "\n")
        os.replace(temporary, path)  # mkstemp made it 0600; the rename keeps that
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
    return created.email, path
