"""Engine and session factory, configured per database.

- SQLite file (development default): foreign keys on, WAL so readers never block the writer, and
  a busy timeout so concurrent writers queue instead of failing with "database is locked".
- In-memory SQLite (testing): one shared connection (StaticPool), so every session sees the same
  database for as long as the engine lives.
- PostgreSQL (production): a sized pool per process, pre-ping so a restarted database does not
  cost failed requests, and recycling so long-lived connections do not go stale.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import StaticPool

from app.config import Settings, get_settings, normalize_database_url


def is_memory_sqlite(url: str) -> bool:
    parsed = make_url(url)
    return parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:")


def create_engine(url: str | None = None, settings: Settings | None = None) -> AsyncEngine:
    settings = settings or get_settings()
    url = normalize_database_url(url or settings.database_url)
    backend = make_url(url).get_backend_name()

    kwargs: dict[str, Any] = {}
    if backend == "sqlite":
        if is_memory_sqlite(url):
            kwargs["poolclass"] = StaticPool
        kwargs["connect_args"] = {
            "timeout": settings.sqlite_busy_timeout_ms / 1000,
            "check_same_thread": False,
        }
    elif backend == "postgresql":
        kwargs.update(
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_max_overflow,
            pool_pre_ping=True,
            pool_recycle=settings.db_pool_recycle_seconds,
            pool_timeout=settings.db_pool_timeout_seconds,
        )

    engine = create_async_engine(url, **kwargs)
    if backend == "sqlite":
        _configure_sqlite(engine, settings, memory=is_memory_sqlite(url))
    return engine


def _configure_sqlite(engine: AsyncEngine, settings: Settings, *, memory: bool) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(settings.sqlite_busy_timeout_ms)}")
        if not memory:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()


def create_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    # expire_on_commit=False: services commit, then hand the loaded objects back to callers
    # (routers, scripts) that read them after the transaction is over.
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)
