"""The command line, run for real: `python -m app ...` as a subprocess in an empty folder.

Each test starts from a fresh temporary folder with no `.env`, and from an environment without
any of the app's settings (DATABASE_URL, SECRET_KEY, ADMIN_*, APP_ENV, ...) unless the test sets
them, so the zero-configuration defaults are what is exercised. Servers are started on a free
port, polled on /health/ready with a deadline, and always stopped (SIGTERM, then SIGKILL).

The tests are sync on purpose: they only talk to subprocesses and HTTP.
"""

from __future__ import annotations

import secrets
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from alembic.script import ScriptDirectory
from sqlalchemy.engine import make_url

from app.bootstrap import DEFAULT_ADMIN_PASSWORD_FILE, DEFAULT_SECRET_FILE
from app.database import alembic_config
from app.services.security import verify_password
from tests.helpers import TEST_DATABASE_URL, leads_csv, postgres_only
from tests.log_scan import never_log
from tests.support import (
    READY_DEADLINE_SECONDS,
    Server,
    cli_env,
    free_port,
    log_lines,
    password_files,
    postgres_fetch,
    postgres_url,
    run_async,
    server_launcher,
    sqlite_rows,
    stop,
    throwaway_database_sync,
    wait_for_workers,
)

COMMAND_TIMEOUT_SECONDS = 120.0
DEFAULT_ADMIN = "admin@example.com"


# --- running the command line ------------------------------------------------------------------


def run_cli(
    *args: str,
    cwd: Path,
    env: dict[str, str] | None = None,
    stdin: str | None = None,
    timeout: float = COMMAND_TIMEOUT_SECONDS,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app", *args],
        cwd=cwd,
        env=env if env is not None else cli_env(),
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def describe(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"


def assert_no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    output = result.stdout + result.stderr
    assert "Traceback" not in output, describe(result)


@postgres_only
def test_seed_demo_is_not_cut_off_by_the_apps_statement_limits(tmp_path: Path) -> None:
    """The app gives up on a statement after DB_STATEMENT_TIMEOUT_MS plus a margin; a seed's
    COPY and index builds take longer than any such limit, and must still finish."""
    limits = {"DB_STATEMENT_TIMEOUT_MS": "1", "DB_CLIENT_TIMEOUT_MARGIN_MS": "1"}
    with throwaway_database_sync("crm_seed") as name:
        env = cli_env(DATABASE_URL=postgres_url(name), **limits)
        result = run_cli("seed-demo", "--leads", "3000", cwd=tmp_path, env=env)
        assert result.returncode == 0, describe(result)
        rows = run_async(lambda: postgres_fetch(name, "SELECT count(*) AS n FROM leads"))
    assert rows[0]["n"] == 3000


# --- serving -----------------------------------------------------------------------------------


@pytest.fixture
def serve() -> Iterator[Callable[..., Server]]:
    """`serve(folder, *args, **settings)` starts `python -m app` there and waits until it is
    ready; every server started is stopped when the test ends, pass or fail."""
    with server_launcher(wait_until_ready=True) as start:
        yield start


def generated_password(server: Server) -> str:
    """The bootstrap admin's generated password, from the file the server's log names."""
    output = server.output()
    found = password_files(output)
    assert len(found) == 1, f"expected one generated password file in the output:\n{output}"
    password = found[0].read_text().strip()
    never_log(password)
    return password


def log_in(client: httpx.Client, email: str, password: str) -> str:
    response = client.post("/api/v1/auth/token", data={"username": email, "password": password})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "bearer"
    return body["access_token"]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# --- migrate -----------------------------------------------------------------------------------


def test_migrate_creates_the_database_in_the_working_folder(tmp_path: Path) -> None:
    result = run_cli("migrate", cwd=tmp_path)

    assert result.returncode == 0, describe(result)
    database = tmp_path / "crm.db"
    assert database.is_file()
    tables = {row[0] for row in sqlite_rows(database, "SELECT name FROM sqlite_master")}
    assert {"users", "leads", "alembic_version"} <= tables
    assert len(sqlite_rows(database, "SELECT version_num FROM alembic_version")) == 1


def test_migrate_twice_is_a_no_op(tmp_path: Path) -> None:
    first = run_cli("migrate", cwd=tmp_path)
    second = run_cli("migrate", cwd=tmp_path)

    assert first.returncode == 0, describe(first)
    assert second.returncode == 0, describe(second)
    assert_no_traceback(second)


def revisions_in_order() -> list[tuple[str, str]]:
    """(id, description) of every migration, oldest first, from the scripts themselves."""
    script = ScriptDirectory.from_config(alembic_config())
    return [(rev.revision, rev.doc) for rev in reversed(list(script.walk_revisions()))]


def test_migrate_on_an_empty_database_lists_the_revisions_it_applied(tmp_path: Path) -> None:
    result = run_cli("migrate", cwd=tmp_path)

    assert result.returncode == 0, describe(result)
    revisions = revisions_in_order()
    lines = result.stdout.splitlines()
    assert "from an empty database" in lines[0], describe(result)
    assert f"applying {len(revisions)} revision" in lines[0], describe(result)
    listed = [line.split(None, 1)[0] for line in lines[1:-1]]
    assert listed == [revision for revision, _ in revisions], describe(result)
    for (_, description), line in zip(revisions, lines[1:-1], strict=True):
        assert description in line
    head = revisions[-1][0]
    assert lines[-1] == f"It is now at revision {head} (head).", describe(result)
    assert "up to date" not in result.stdout


def test_migrate_on_an_up_to_date_database_says_nothing_was_needed(migrated: Path) -> None:
    result = run_cli("migrate", cwd=migrated)

    assert result.returncode == 0, describe(result)
    head = revisions_in_order()[-1][0]
    assert result.stdout.strip().endswith(
        f"is already at revision {head} (head): nothing to apply."
    ), describe(result)
    assert "Migrated" not in result.stdout


# --- create-user -------------------------------------------------------------------------------


@pytest.fixture
def migrated(tmp_path: Path) -> Path:
    result = run_cli("migrate", cwd=tmp_path)
    assert result.returncode == 0, describe(result)
    return tmp_path


def test_create_user_superuser_reads_the_password_from_stdin(migrated: Path) -> None:
    result = run_cli(
        "create-user", "Boss@Example.com", "--superuser", cwd=migrated, stdin="s3cret-pass\n"
    )

    assert result.returncode == 0, describe(result)
    rows = sqlite_rows(
        migrated / "crm.db", "SELECT email, is_superuser, is_active, hashed_password FROM users"
    )
    assert len(rows) == 1
    email, is_superuser, is_active, hashed = rows[0]
    assert email == "boss@example.com"
    assert is_superuser == 1
    assert is_active == 1
    assert hashed.startswith("$argon2")
    assert verify_password("s3cret-pass", hashed)  # the line from stdin, without its newline


def test_create_user_refuses_an_email_taken_in_another_case(migrated: Path) -> None:
    first = run_cli("create-user", "Boss@Example.com", "--superuser", cwd=migrated, stdin="a" * 12)
    assert first.returncode == 0, describe(first)

    second = run_cli("create-user", "boss@EXAMPLE.com", "--superuser", cwd=migrated, stdin="b" * 12)

    assert second.returncode != 0, describe(second)
    assert "already exists" in second.stderr, describe(second)
    assert "boss@example.com" in second.stderr.lower(), describe(second)
    assert_no_traceback(second)
    assert sqlite_rows(migrated / "crm.db", "SELECT count(*) FROM users") == [(1,)]


def test_create_user_refuses_a_too_short_password(migrated: Path) -> None:
    result = run_cli("create-user", "short@example.com", cwd=migrated, stdin="1234567\n")

    assert result.returncode != 0, describe(result)
    assert "password" in result.stderr.lower() and "8" in result.stderr, describe(result)
    assert_no_traceback(result)
    assert sqlite_rows(migrated / "crm.db", "SELECT count(*) FROM users") == [(0,)]


def test_create_user_in_a_fresh_folder_prepares_the_database(tmp_path: Path) -> None:
    """Like `seed-demo` and serving, `create-user` works before anyone ran `migrate`."""
    result = run_cli(
        "create-user", "first@example.com", "--superuser", cwd=tmp_path, stdin="s3cret-pass\n"
    )

    assert result.returncode == 0, describe(result)
    assert_no_traceback(result)
    rows = sqlite_rows(tmp_path / "crm.db", "SELECT email, is_superuser FROM users")
    assert rows == [("first@example.com", 1)]


# --- seed-demo ---------------------------------------------------------------------------------


def test_seed_demo_inserts_leads_and_demo_agents(tmp_path: Path) -> None:
    result = run_cli("seed-demo", "--leads", "500", cwd=tmp_path)

    assert result.returncode == 0, describe(result)
    database = tmp_path / "crm.db"
    assert sqlite_rows(database, "SELECT count(*) FROM leads") == [(500,)]
    agents = sqlite_rows(database, "SELECT id, hashed_password FROM users WHERE NOT is_superuser")
    assert agents, "no demo agents were created"
    assert all(hashed.startswith("$argon2") for _, hashed in agents)
    agent_ids = {agent_id for agent_id, _ in agents}
    assigned = {
        row[0]
        for row in sqlite_rows(
            database, "SELECT DISTINCT assigned_to FROM leads WHERE assigned_to IS NOT NULL"
        )
    }
    assert assigned and assigned <= agent_ids


def test_import_creates_the_files_leads_and_reports_the_refused_rows(tmp_path: Path) -> None:
    (tmp_path / "leads.csv").write_bytes(leads_csv(1500, bad_rows=frozenset({7})))
    result = run_cli("import", "leads.csv", "--on-error", "skip", cwd=tmp_path)

    assert result.returncode == 0, describe(result)
    assert "1499 created, 0 updated, 0 unchanged, 1 refused" in result.stdout
    assert "row 7, E-mail:" in result.stderr
    assert "1500/1500" in result.stdout  # the progress bar's last state
    assert sqlite_rows(tmp_path / "crm.db", "SELECT count(*) FROM leads") == [(1499,)]


def test_import_upsert_of_the_same_file_changes_nothing(tmp_path: Path) -> None:
    (tmp_path / "leads.csv").write_bytes(leads_csv(300))
    first = run_cli("import", "leads.csv", cwd=tmp_path)
    again = run_cli("import", "leads.csv", "--mode", "upsert", cwd=tmp_path)

    assert first.returncode == 0, describe(first)
    assert "0 created, 0 updated, 300 unchanged" in again.stdout, describe(again)
    assert sqlite_rows(tmp_path / "crm.db", "SELECT count(*) FROM leads") == [(300,)]


def test_import_with_abort_and_a_bad_row_writes_nothing_and_exits_1(tmp_path: Path) -> None:
    (tmp_path / "leads.csv").write_bytes(leads_csv(50, bad_rows=frozenset({3})))
    result = run_cli("import", "leads.csv", cwd=tmp_path)

    assert result.returncode == 1, describe(result)
    assert "aborted" in result.stdout
    assert sqlite_rows(tmp_path / "crm.db", "SELECT count(*) FROM leads") == [(0,)]


def test_import_of_a_missing_file_says_so(tmp_path: Path) -> None:
    result = run_cli("import", "nowhere.csv", cwd=tmp_path)
    assert result.returncode == 2
    assert "nowhere.csv" in result.stderr
    assert_no_traceback(result)


def test_seed_demo_refuses_under_production_without_force(tmp_path: Path) -> None:
    result = run_cli("seed-demo", "--leads", "5", cwd=tmp_path, env=cli_env(APP_ENV="production"))

    assert result.returncode == 2, describe(result)
    assert "APP_ENV=production" in result.stderr and "--force" in result.stderr, describe(result)
    assert_no_traceback(result)
    assert not (tmp_path / "crm.db").exists()  # refused before touching the database


def test_seed_demo_under_production_with_force_seeds(tmp_path: Path) -> None:
    result = run_cli(
        "seed-demo", "--leads", "5", "--force", cwd=tmp_path, env=cli_env(APP_ENV="production")
    )

    assert result.returncode == 0, describe(result)
    assert sqlite_rows(tmp_path / "crm.db", "SELECT count(*) FROM leads") == [(5,)]


LIFE_COLUMNS = "status, created_at, last_contact_date, updated_at, call_attempts"


def assert_lead_lives_look_real(rows: list[tuple[Any, ...]], *, seeded_before: datetime) -> None:
    """created <= last contact <= last change <= the end of the seeding, spread out; a lead
    still NEW was never contacted (no date, no calls)."""
    assert len(rows) >= 100
    contacted = 0
    changed_after_creation = 0
    for status, created, contact, updated, calls in rows:
        if status == "NEW":
            assert contact is None and calls == 0, (status, contact, calls)
            assert created <= updated <= seeded_before
        else:
            contacted += 1
            assert contact is not None and calls >= 1
            assert created <= contact <= updated <= seeded_before, (created, contact, updated)
        changed_after_creation += updated > created
    contacts = [row[2] for row in rows if row[2] is not None]
    assert contacted > len(rows) // 2
    assert len(set(contacts)) == len(contacts)  # no common "seed time" contact
    assert changed_after_creation > len(rows) * 0.9
    days_after_creation = {(row[2] - row[1]).days for row in rows if row[2] is not None}
    assert len(days_after_creation) > 30  # spread over the leads' lives, not a fixed offset


def sqlite_datetime(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value).replace(tzinfo=UTC)


def test_seed_demo_dates_follow_each_leads_life(tmp_path: Path) -> None:
    result = run_cli("seed-demo", "--leads", "500", cwd=tmp_path)
    finished = datetime.now(UTC)

    assert result.returncode == 0, describe(result)
    rows = [
        (status, sqlite_datetime(created), sqlite_datetime(contact), sqlite_datetime(updated), n)
        for status, created, contact, updated, n in sqlite_rows(
            tmp_path / "crm.db", f"SELECT {LIFE_COLUMNS} FROM leads"
        )
    ]
    assert_lead_lives_look_real(rows, seeded_before=finished)


@postgres_only
def test_seed_demo_dates_follow_each_leads_life_through_copy_on_postgresql(
    tmp_path: Path,
) -> None:
    """PostgreSQL takes the COPY path, which draws the same dates a column at a time."""
    with throwaway_database_sync("crm_seed") as name:
        url = postgres_url(name)
        result = run_cli("seed-demo", "--leads", "500", cwd=tmp_path, env=cli_env(DATABASE_URL=url))
        finished = datetime.now(UTC)
        assert result.returncode == 0, describe(result)
        rows = run_async(lambda: postgres_fetch(name, f"SELECT {LIFE_COLUMNS} FROM leads"))

    assert_lead_lives_look_real([tuple(row) for row in rows], seeded_before=finished)


# --- serving -----------------------------------------------------------------------------------


def test_first_start_generates_an_admin_password_that_logs_in(tmp_path: Path, serve) -> None:
    server = serve(tmp_path)

    password = generated_password(server)
    with server.client() as client:
        token = log_in(client, DEFAULT_ADMIN, password)
        me = client.get("/api/v1/users/me", headers=bearer(token))
    assert me.status_code == 200, me.text
    assert me.json()["email"] == DEFAULT_ADMIN
    assert me.json()["is_superuser"] is True


def test_served_api_creates_and_reads_back_a_lead(tmp_path: Path, serve) -> None:
    server = serve(tmp_path)

    with server.client() as client:
        headers = bearer(log_in(client, DEFAULT_ADMIN, generated_password(server)))
        created = client.post(
            "/api/v1/leads",
            headers=headers,
            json={"first_name": "Ada", "last_name": "Lovelace", "email": "ada@analytical.io"},
        )
        assert created.status_code == 201, created.text
        location = created.headers["Location"]
        read = client.get(location, headers=headers)

    assert read.status_code == 200, read.text
    lead = read.json()
    assert lead["id"] == created.json()["id"]
    assert (lead["first_name"], lead["last_name"]) == ("Ada", "Lovelace")
    assert lead["email"] == "ada@analytical.io"


def test_first_start_writes_the_admin_password_beside_the_database_and_logs_only_where(
    tmp_path: Path, serve
) -> None:
    server = serve(tmp_path)

    password_file = tmp_path / "crm.db.admin_password"
    assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
    password = password_file.read_text().strip()
    never_log(password)
    assert len(password) >= 16
    output = server.output()
    assert password not in output, output
    (said,) = [line for line in log_lines(output) if "password_file" in line]
    assert Path(said["password_file"]) == password_file.resolve()
    assert said["admin_email"] == DEFAULT_ADMIN
    assert said["level"] == "WARNING"  # shown at LOG_LEVEL=WARNING too


def test_serving_keeps_the_signing_key_beside_the_database_with_mode_0600(
    tmp_path: Path, serve
) -> None:
    serve(tmp_path)

    key_file = tmp_path / "crm.db.secret"
    assert key_file.is_file()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert len(key_file.read_text().strip()) >= 32


def test_restart_keeps_tokens_valid_and_makes_no_new_password(tmp_path: Path, serve) -> None:
    first = serve(tmp_path)
    password = generated_password(first)
    with first.client() as client:
        token = log_in(client, DEFAULT_ADMIN, password)
    stop(first.process)

    second = serve(tmp_path)

    with second.client() as client:
        me = client.get("/api/v1/users/me", headers=bearer(token))
        assert me.status_code == 200, me.text
        assert me.json()["email"] == DEFAULT_ADMIN
        log_in(client, DEFAULT_ADMIN, password)  # the first password still holds
    output = second.output()
    assert not password_files(output), output
    assert password not in output
    assert (tmp_path / "crm.db.admin_password").read_text().strip() == password


def test_admin_from_the_environment_is_created_and_its_password_not_logged(
    tmp_path: Path, serve
) -> None:
    password = "env-admin-" + secrets.token_hex(8)
    server = serve(tmp_path, ADMIN_EMAIL="Chief@Example.com", ADMIN_PASSWORD=password)

    never_log(password)
    output = server.output()
    assert password not in output, output
    assert not password_files(output), output
    assert not (tmp_path / "crm.db.admin_password").exists()
    with server.client() as client:
        token = log_in(client, "chief@example.com", password)
        me = client.get("/api/v1/users/me", headers=bearer(token))
        assert me.json()["is_superuser"] is True
        refused = client.post(
            "/api/v1/auth/token", data={"username": DEFAULT_ADMIN, "password": password}
        )
    assert refused.status_code == 401, "the default admin should not exist as well"


def test_production_refuses_to_start_without_a_secret_key(tmp_path: Path) -> None:
    # Were it to serve instead of refusing, the timeout would end it (failing the test).
    result = run_cli(
        "--port",
        str(free_port()),
        cwd=tmp_path,
        env=cli_env(APP_ENV="production"),
        timeout=READY_DEADLINE_SECONDS,
    )

    assert result.returncode != 0, describe(result)
    assert "SECRET_KEY" in result.stderr, describe(result)
    assert_no_traceback(result)
    assert not (tmp_path / "crm.db.secret").exists()


def test_several_workers_serve_and_share_the_signing_key(tmp_path: Path, serve) -> None:
    server = serve(tmp_path, "--workers", "2")
    wait_for_workers(server, 2)

    with server.client() as client:
        token = log_in(client, DEFAULT_ADMIN, generated_password(server))
        # New connections each time, so the requests spread over both workers; a token signed
        # by one must be accepted by the other.
        for _ in range(6):
            with server.client() as fresh:
                me = fresh.get("/api/v1/users/me", headers=bearer(token))
                assert me.status_code == 200, me.text


# --- PostgreSQL --------------------------------------------------------------------------------


@postgres_only
def test_migrate_accepts_a_plain_postgres_url(tmp_path: Path) -> None:
    with throwaway_database_sync("crm_cli") as name:
        url = make_url(TEST_DATABASE_URL).set(drivername="postgres", database=name)
        plain = url.render_as_string(hide_password=False)
        assert plain.startswith("postgres://")

        result = run_cli("migrate", cwd=tmp_path, env=cli_env(DATABASE_URL=plain))

        assert result.returncode == 0, describe(result)
        rows = run_async(
            lambda: postgres_fetch(
                name, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            )
        )
        tables = {row["tablename"] for row in rows}
        assert {"users", "leads", "alembic_version"} <= tables
        assert not (tmp_path / "crm.db").exists()


# --- generated files ---------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]


def ignored_by_git(name: str) -> bool:
    """Whether the repository's .gitignore keeps a file of this name out of commits."""
    result = subprocess.run(["git", "check-ignore", "--no-index", "-q", name], cwd=ROOT)
    assert result.returncode in (0, 1), f"git check-ignore failed in {ROOT} (not a clone?)"
    return result.returncode == 0


def test_every_file_a_first_start_makes_is_ignored_by_git(tmp_path: Path, serve) -> None:
    stop(serve(tmp_path).process)

    made = {path.name for path in tmp_path.iterdir() if not path.name.startswith("server-")}
    assert {"crm.db", "crm.db.secret", "crm.db.admin_password", "crm.db.lock"} <= made, made
    assert [name for name in sorted(made) if not ignored_by_git(name)] == []


def test_the_working_folder_key_and_password_files_are_ignored_by_git() -> None:
    """Where a development start with PostgreSQL keeps them."""
    assert ignored_by_git(DEFAULT_SECRET_FILE)
    assert ignored_by_git(DEFAULT_ADMIN_PASSWORD_FILE)


PRODUCTION_KEY = "production-signing-key-" + "x" * 32


@postgres_only
def test_production_with_postgresql_will_not_write_a_password_into_the_working_folder(
    tmp_path: Path,
) -> None:
    with throwaway_database_sync("crm_prod") as name:
        url = postgres_url(name)
        env = cli_env(APP_ENV="production", SECRET_KEY=PRODUCTION_KEY, DATABASE_URL=url)
        # Were it to serve instead of refusing, the timeout would end it (failing the test).
        result = run_cli(
            "--port", str(free_port()), cwd=tmp_path, env=env, timeout=READY_DEADLINE_SECONDS
        )
        users = run_async(lambda: postgres_fetch(name, "SELECT count(*) AS n FROM users"))

    assert result.returncode == 2, describe(result)
    assert "ADMIN_PASSWORD_FILE" in result.stderr and "ADMIN_PASSWORD" in result.stderr
    assert str(tmp_path) in result.stderr, describe(result)  # says which folder it spared
    assert_no_traceback(result)
    assert list(tmp_path.iterdir()) == []
    assert users[0]["n"] == 0


@postgres_only
def test_production_with_postgresql_writes_the_password_where_admin_password_file_says(
    tmp_path: Path, serve
) -> None:
    keep = tmp_path / "secrets"
    keep.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    with throwaway_database_sync("crm_prod") as name:
        url = postgres_url(name)
        server = serve(
            work,
            APP_ENV="production",
            SECRET_KEY=PRODUCTION_KEY,
            DATABASE_URL=url,
            ADMIN_PASSWORD_FILE=str(keep / "admin_password"),
        )
        password = generated_password(server)
        with server.client() as client:
            log_in(client, DEFAULT_ADMIN, password)
        stop(server.process)

    assert (keep / "admin_password").is_file()
    assert [path.name for path in work.iterdir() if not path.name.startswith("server-")] == []
