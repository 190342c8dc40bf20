"""Application settings, read once from the environment and `.env`.

Everything configurable lives in this one class so that an operator can find every knob in one
place (and in `.env.example`). `get_settings()` is the one place every layer reads them from:
routers, dependencies, services, schemas, the command line. Code that needs other settings
(tests, a generated signing key) installs a Settings object as the one in force with
`use_settings()`, so nothing can see a different copy than the rest of the process.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from typing import Annotated

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_FREE_EMAIL_DOMAINS = (
    "gmail.com",
    "googlemail.com",
    "yahoo.com",
    "hotmail.com",
    "outlook.com",
    "live.com",
    "msn.com",
    "aol.com",
    "icloud.com",
    "me.com",
    "protonmail.com",
    "proton.me",
    "gmx.com",
    "gmx.net",
    "mail.com",
    "yandex.ru",
    "zoho.com",
)
DEFAULT_HIGH_VALUE_TAGS = ("vip", "enterprise", "decision-maker", "high-value")

CommaList = Annotated[tuple[str, ...], NoDecode]


class AppEnv(StrEnum):
    DEVELOPMENT = "development"
    PRODUCTION = "production"
    TESTING = "testing"


def normalize_database_url(url: str) -> str:
    """Map the URL spellings operators paste to the async drivers the app runs on.

    Hosting platforms hand out `postgres://` and `postgresql://`; both mean asyncpg here, and a
    plain `sqlite://` means aiosqlite.
    """
    url = url.strip()
    for prefix in (
        "postgres://",
        "postgresql://",
        "postgresql+psycopg2://",
        "postgresql+psycopg://",
    ):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    if url.startswith("sqlite://"):
        return "sqlite+aiosqlite://" + url[len("sqlite://") :]
    return url


def _half_the_cores() -> int:
    return max(1, (os.cpu_count() or 2) // 2)


class LogFormat(StrEnum):
    JSON = "json"
    TEXT = "text"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False)

    app_env: AppEnv = AppEnv.DEVELOPMENT
    database_url: str = "sqlite+aiosqlite:///./crm.db"

    # PostgreSQL pools, per app process (each worker has its own): SQLAlchemy's, for writes and
    # everything else, and the read pool (raw asyncpg) for the hot reads (app/services/README.md).
    # Overflow 0: steady load opens no new connections (README: sizing the pools).
    db_pool_size: int = Field(default=10, ge=1, le=200)
    db_max_overflow: int = Field(default=0, ge=0, le=200)
    # 0: no read pool; the hot reads borrow raw connections from SQLAlchemy's pool instead.
    db_read_pool_size: int = Field(default=10, ge=0, le=200)
    db_pool_recycle_seconds: int = Field(default=1800, ge=30)
    db_pool_timeout_seconds: float = Field(default=10.0, gt=0)
    # PostgreSQL cancels any statement (lock waits included) running longer than this; the
    # request then gets 503 instead of holding a connection indefinitely. 0 turns it off. The
    # app also stops waiting on its own this long plus DB_CLIENT_TIMEOUT_MARGIN_MS after it
    # sent a statement (or began connecting), for a database that stops answering altogether.
    db_statement_timeout_ms: int = Field(default=15000, ge=0)
    db_client_timeout_margin_ms: int = Field(default=2000, ge=0)
    db_connect_timeout_seconds: float = Field(default=5.0, gt=0)
    # SQLite waits this long for the write lock before giving up.
    sqlite_busy_timeout_ms: int = Field(default=15000, ge=0)

    # Signs access tokens. Unset outside production: a random key is kept in SECRET_KEY_FILE
    # (default: beside the SQLite database, or ./.crm_secret_key) so tokens survive restarts.
    secret_key: SecretStr | None = None
    secret_key_file: str | None = None
    # Keys that signed tokens before SECRET_KEY did (comma-separated): tokens they signed are
    # still accepted, none is signed with them. A rotation: README, "Rotating the signing key".
    previous_secret_keys: Annotated[tuple[SecretStr, ...], NoDecode] = ()
    # Access tokens are short-lived; a session lives on through its refresh tokens, each valid
    # this many days from the last refresh (sliding), and rotated at every refresh.
    access_token_expire_minutes: int = Field(default=15, ge=1, le=60 * 24 * 30)
    refresh_token_expire_days: int = Field(default=14, ge=1, le=365)
    # A replaced refresh token presented again within this many seconds (two tabs refreshing
    # at once, a retry) gets the same new pair; later, it revokes its whole session.
    refresh_reuse_grace_seconds: int = Field(default=10, ge=0, le=300)
    # Login throttling, per (email, client address): this many failures within the window lock
    # that pair out (429, even with the right password) for the lockout period.
    login_max_failures: int = Field(default=10, ge=1, le=1000)
    login_failure_window_seconds: int = Field(default=15 * 60, ge=1, le=7 * 24 * 3600)
    login_lockout_seconds: int = Field(default=15 * 60, ge=1, le=7 * 24 * 3600)
    # ...and per client address, whatever the emails: this many failures (refused refresh
    # tokens included) within the window lock the address out until the oldest leaves it.
    login_max_failures_per_address: int = Field(default=50, ge=1, le=100_000)
    # Password checks run in worker threads, at most this many at once per app process (default:
    # half the CPU cores, so the event loop keeps one), so a flood of logins cannot stall the
    # other requests; a login that finds none free within LOGIN_QUEUE_SECONDS gets 503.
    login_hash_concurrency: int = Field(default_factory=_half_the_cores, ge=1, le=64)
    login_queue_seconds: float = Field(default=2.0, gt=0, le=60)
    # Proxies whose X-Forwarded-For/-Proto are believed (comma-separated addresses or networks,
    # '*' for any). None by default: a client cannot choose its own address for the throttle.
    forwarded_allow_ips: str = ""

    # The first superuser, created at start-up when the database has none.
    admin_email: str = "admin@example.com"
    admin_password: SecretStr | None = None
    # A generated first-superuser password goes to this file (mode 0600), never to the log;
    # default: beside the SQLite database, or ./.crm_admin_password for other databases.
    admin_password_file: str | None = None

    # Browser origins allowed to call the API (comma-separated), e.g. the frontend's dev server.
    cors_origins: CommaList = ()
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)

    log_level: str = "INFO"
    # json (default): one JSON object per line, for log shippers; text: readable lines for a
    # developer's terminal.
    log_format: LogFormat = LogFormat.JSON
    # The HTTP server defends itself against clients that hold connections open (app/server.py):
    # request headers must be complete, and a body must keep arriving, within these times;
    # an idle keep-alive connection is closed after KEEP_ALIVE_SECONDS; a worker holds at most
    # MAX_CONNECTIONS_PER_WORKER connections and refuses new ones beyond that at once.
    request_header_timeout_seconds: float = Field(default=10.0, gt=0)
    request_body_timeout_seconds: float = Field(default=10.0, gt=0)
    keep_alive_seconds: float = Field(default=5.0, gt=0)
    max_connections_per_worker: int = Field(default=1000, ge=1)
    # A fault of one kind (database unreachable, timeout...) is logged once per this interval,
    # with how often it happened, instead of once per request.
    fault_log_interval_seconds: float = Field(default=10.0, gt=0)

    # On SIGTERM the server stops accepting connections, lets the requests in flight finish for
    # up to this long (then cancels them), and closes the database pool.
    shutdown_grace_seconds: int = Field(default=30, ge=0, le=3600)

    # Writes to one lead (PATCH, DELETE, restore, notes, calls) must carry If-Match (the ETag
    # the client read the lead with), or get 428: no client can overwrite a change it never saw.
    require_if_match: bool = False
    # How long the answer of a write sent with an Idempotency-Key is kept for its retries.
    idempotency_ttl_seconds: int = Field(default=86_400, ge=1, le=30 * 86_400)

    # Limits on what one call may send or ask for. Past one, the call is refused (422 naming the
    # field) and nothing is stored; the OpenAPI document shows the values in force
    # (app/schemas/common.py: SettingLimit). A tag's length is not here: it is the width of the
    # PostgreSQL column (TAG_MAX_LENGTH, 50), changed only by a migration.
    bulk_max_ids: int = Field(default=10_000, ge=1, le=100_000)
    # CSV imports (issue 16): the most data rows a file may have, its size (a body limit of its
    # own, 413 past it), and the most rows imported while the request waits.
    import_max_rows: int = Field(default=100_000, ge=1, le=1_000_000)
    import_max_bytes: int = Field(default=50 * 1024 * 1024, ge=1024)
    import_sync_max_rows: int = Field(default=1000, ge=1, le=100_000)
    # Larger files are imported by a worker (app/workers/imports.py): one in each `python -m app`
    # process unless RUN_IMPORT_WORKER is false, and one in each `python -m app worker`. A worker
    # holds an import for IMPORT_LEASE_SECONDS past its last step; a worker that died is taken
    # over once that has run out.
    run_import_worker: bool = True
    import_lease_seconds: float = Field(default=60.0, gt=0, le=3600)
    import_poll_seconds: float = Field(default=1.0, gt=0, le=60)
    # At least 100: that is the page a list gives when no `limit` is asked for.
    page_max_limit: int = Field(default=1000, ge=100, le=10_000)
    # One note's text: `notes` of a lead create/update, a note, a call's or a bulk change's note.
    note_max_length: int = Field(default=10_000, ge=1, le=1_000_000)
    tags_max_per_lead: int = Field(default=50, ge=1, le=1000)
    # A list's `total` is counted up to this many (then it reads "10,000+"); an exact count of a
    # huge match costs a scan of all of it. `exact_total=true` asks for the exact figure.
    total_count_cap: int = Field(default=10_000, ge=1)

    # Capture forms (issue 17): at most this many submissions per client address, per form,
    # per minute; the count is kept in the database, so it holds across app processes.
    capture_rate_per_minute: int = Field(default=10, ge=1, le=100_000)

    # Webhooks (app/services/webhooks.py, app/workers/webhooks.py). `python -m app` runs a
    # delivery worker in each app process unless RUN_WEBHOOK_WORKER is false (then run
    # `python -m app worker`). Plain http:// URLs are refused in production unless
    # WEBHOOK_ALLOW_HTTP; addresses of this machine and private networks always, unless
    # WEBHOOK_ALLOW_PRIVATE_NETWORKS (a receiver beside the app, the tests').
    run_webhook_worker: bool = True
    webhook_allow_http: bool | None = None  # None: allowed except in production
    webhook_allow_private_networks: bool = False
    webhook_timeout_seconds: float = Field(default=10.0, gt=0, le=60)
    webhook_disable_after_hours: float = Field(default=72.0, gt=0)
    # How often an idle worker looks for new events and due retries.
    webhook_poll_seconds: float = Field(default=0.5, gt=0, le=60)
    # Deliveries sent at once per worker (each to a different subscription).
    webhook_concurrency: int = Field(default=16, ge=1, le=256)

    # Lead scoring (see app/services/scoring.py).
    free_email_domains: CommaList = DEFAULT_FREE_EMAIL_DOMAINS
    high_value_tags: CommaList = DEFAULT_HIGH_VALUE_TAGS

    @field_validator("database_url")
    @classmethod
    def _normalize_url(cls, value: str) -> str:
        return normalize_database_url(value)

    @field_validator("free_email_domains", "high_value_tags", mode="before")
    @classmethod
    def _split_lowercase_list(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.lower()
        elif isinstance(value, list | tuple | set | frozenset):
            value = [str(item).lower() for item in value]
        return _split(value)

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_list(cls, value: object) -> object:
        return _split(value)

    @field_validator("previous_secret_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        def revealed(item: object) -> object:
            return item.get_secret_value() if isinstance(item, SecretStr) else item

        if isinstance(value, list | tuple):
            value = [revealed(item) for item in value]
        return _split(revealed(value))

    @model_validator(mode="after")
    def _testing_defaults_to_memory(self) -> Settings:
        """APP_ENV=testing without a DATABASE_URL means a private in-memory database."""
        if self.app_env is AppEnv.TESTING and "database_url" not in self.model_fields_set:
            self.database_url = "sqlite+aiosqlite://"
        return self

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def webhooks_may_use_http(self) -> bool:
        if self.webhook_allow_http is not None:
            return self.webhook_allow_http
        return self.app_env is not AppEnv.PRODUCTION


def _split(value: object) -> object:
    """Comma-separated text (or a list) to a tuple of distinct, trimmed, non-empty items."""
    if isinstance(value, str):
        value = value.split(",")
    if isinstance(value, list | tuple | set | frozenset):
        return tuple(dict.fromkeys(str(item).strip() for item in value if str(item).strip()))
    return value


_in_force: Settings | None = None


def get_settings() -> Settings:
    """The settings in force: those installed by `use_settings`/`install_settings`, else the
    environment and `.env`, read on first use."""
    global _in_force
    if _in_force is None:
        _in_force = Settings()
    return _in_force


def install_settings(settings: Settings | None) -> Settings | None:
    """Make `settings` the ones every layer reads from now on (None: read the environment
    again on next use); returns those that were in force (None if not read yet).

    Process-wide on purpose, not per task or thread: the requests, the services they call and
    the code that built the app must all see one object."""
    global _in_force
    previous, _in_force = _in_force, settings
    return previous


@contextmanager
def use_settings(settings: Settings | None) -> Iterator[Settings]:
    """`settings` in force for the block (e.g. a test), then whatever was before."""
    previous = install_settings(settings)
    try:
        yield get_settings()
    finally:
        install_settings(previous)
