"""Schemathesis against a real `python -m app`, on SQLite and on PostgreSQL, as an agent and as
a superuser: every operation of the app's /openapi.json, every phase (examples, coverage,
fuzzing, stateful), every check schemathesis has (server errors, responses and headers that do
not match the schema, undocumented status codes, schema-valid requests refused, schema-invalid
ones accepted, 405s and their `Allow`, resources missing after creation or present after
deletion, ...), with the per-operation exceptions of .ci/schemathesis.toml.

    python .ci/fuzz.py        # CI: both databases, both tokens, deterministic cases
    python .ci/fuzz.py --max-examples 300 --seed 7 --phases examples,coverage,fuzzing,stateful
                              # longer: more (and other, but reproducible) cases, every phase
                              # for both tokens; --database sqlite|postgresql for one only

Each database is a fresh one (a temporary SQLite file; a new PostgreSQL database, dropped
afterwards) served by its own server. An agent is created through the API. The agent's run goes
first and the superuser's second, and the superuser's password changes and deactivations aimed
at either account go to a stand-in account instead (.ci/fuzz_hooks.py): either would void that
account's tokens, and the rest of the run would only see 401s. For the same reason the
operations that end a session (logout, ending a session) are left out of those two runs and get
runs of their own, last, one for each, with the token of a session made for it by a login
of its own.
Leads are created, changed, archived and hard-deleted freely; no run depends on their state.
Exits non-zero when any check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# Every check schemathesis has, configured in this file (per-operation exceptions, each with its
# reason beside it): see the file.
CONFIG = HERE / "schemathesis.toml"
ADMIN_EMAIL = "admin@fuzz.example.com"
AGENT_EMAIL = "agent@fuzz.example.com"
STAND_IN_EMAIL = "stand-in@fuzz.example.com"
PASSWORD = "fuzzing passphrase 1"
PG_SERVER = "postgresql://postgres@127.0.0.1:5432"
PHASES = "examples,coverage,fuzzing,stateful"
READY_SECONDS = 30.0
# Settings the server must not inherit from the caller's environment.
APP_SETTINGS = (
    "DATABASE_URL",
    "SECRET_KEY",
    "SECRET_KEY_FILE",
    "APP_ENV",
    "ADMIN_EMAIL",
    "ADMIN_PASSWORD",
    "TEST_DATABASE_URL",
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def server(database_url: str, folder: Path) -> Iterator[str]:
    """`python -m app` on a free port, with a known superuser; its base URL."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in APP_SETTINGS}
    env.update(
        PYTHONPATH=str(ROOT),
        PYTHONUNBUFFERED="1",
        DATABASE_URL=database_url,
        ADMIN_EMAIL=ADMIN_EMAIL,
        ADMIN_PASSWORD=PASSWORD,
        LOG_LEVEL="WARNING",
        # The fuzz makes webhooks to whatever URLs it draws: nothing may be sent to them, and
        # their host names must not be looked up (no request leaves this machine). The
        # address rules have tests of their own (tests/test_webhook_urls.py).
        RUN_WEBHOOK_WORKER="false",
        WEBHOOK_ALLOW_PRIVATE_NETWORKS="true",
    )
    log = folder / "server.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "app", "--port", str(port)],
            cwd=folder,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + READY_SECONDS
        while True:
            if process.poll() is not None:
                raise SystemExit(f"the server exited early:\n{log.read_text()}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{base}/health/ready", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise SystemExit(f"the server was not ready in time:\n{log.read_text()}")
            time.sleep(0.2)
        yield base
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        errors = [line for line in log.read_text().splitlines() if "Traceback" in line]
        if errors:
            print(f"--- server log ({log})\n{log.read_text()}", file=sys.stderr)


def login(client: httpx.Client, email: str) -> str:
    response = client.post("/api/v1/auth/token", data={"username": email, "password": PASSWORD})
    response.raise_for_status()
    return str(response.json()["access_token"])


def fresh_session(base: str, email: str) -> str:
    """A token of a new session of the account's."""
    with httpx.Client(base_url=base, timeout=30) as client:
        return login(client, email)


@dataclass
class Accounts:
    tokens: dict[str, str]  # role -> bearer token
    emails: dict[str, str]  # role -> the account's login
    acting_ids: list[int]  # the accounts those tokens belong to
    stand_in_id: int  # takes the superuser's changes aimed at them (see .ci/fuzz_hooks.py)


def prepare(base: str) -> Accounts:
    """Tokens of the superuser and of a new agent, a stand-in account, and a lead for each
    token to find."""
    with httpx.Client(base_url=base, timeout=30) as client:
        admin = login(client, ADMIN_EMAIL)
        as_admin = {"Authorization": f"Bearer {admin}"}
        ids = []
        for email, name in ((AGENT_EMAIL, "Fuzz Agent"), (STAND_IN_EMAIL, "Stand In")):
            body = {"email": email, "full_name": name, "password": PASSWORD}
            created = client.post("/api/v1/users", json=body, headers=as_admin)
            created.raise_for_status()
            ids.append(int(created.json()["id"]))
        agent = login(client, AGENT_EMAIL)
        for token, name in ((agent, "agent"), (admin, "admin")):
            client.post(
                "/api/v1/leads",
                json={"first_name": "Fuzz", "last_name": name, "email": f"{name}@lead.example"},
                headers={"Authorization": f"Bearer {token}"},
            ).raise_for_status()
        admin_id = int(client.get("/api/v1/users/me", headers=as_admin).json()["id"])
    return Accounts(
        {"agent": agent, "superuser": admin},
        {"agent": AGENT_EMAIL, "superuser": ADMIN_EMAIL},
        [admin_id, ids[0]],
        ids[1],
    )


# Operations that end a session: run with the run's own token, they would end the session the
# rest of the run depends on (every later request 401). Each gets runs of its own, last, each
# with a token of a session of its own (from a login of its own), ending whatever it likes.
SESSION_ENDING = ("logout", "revokeMySession", "revokeUserSession")


def schemathesis(
    base: str,
    token: str,
    accounts: Accounts,
    args: argparse.Namespace,
    report: Path,
    *,
    only: str | None,
) -> int:
    """One run: every operation but the session-ending ones, or `only` that one."""
    selection = ["--include-operation-id", only] if only else []
    if not only:
        selection = [arg for op in SESSION_ENDING for arg in ("--exclude-operation-id", op)]
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "--config-file",
        str(CONFIG),
        "run",
        f"{base}/openapi.json",
        "--no-color",
        "--header",
        f"Authorization: Bearer {token}",
        *selection,
        "--max-examples",
        str(args.max_examples),
        "--continue-on-failure",
        "--suppress-health-check",
        "all",
        "--request-timeout",
        "30",
    ]
    command += ["--phases", args.phases or PHASES]
    # Deterministic by default: the same cases every run (no seed involved). A seed instead
    # draws other cases, reproducibly: what a longer exploratory run wants.
    if args.seed is None:
        command.append("--generation-deterministic")
    else:
        command += ["--seed", str(args.seed)]
    with report.open("w") as out:
        env = {
            **os.environ,
            "SCHEMATHESIS_HOOKS": str(HERE / "fuzz_hooks.py"),
            "FUZZ_PROTECTED_USER_IDS": ",".join(map(str, accounts.acting_ids)),
            "FUZZ_STAND_IN_USER_ID": str(accounts.stand_in_id),
        }
        status = subprocess.call(
            command, stdout=out, stderr=subprocess.STDOUT, cwd=report.parent, env=env
        )
    output = report.read_text()
    # The whole report on a failure; otherwise its warnings and summary.
    start = output.find("=== WARNINGS ===") if status == 0 else -1
    start = output.find("=== SUMMARY ===") if start < 0 and status == 0 else start
    print(output[output.rfind("\n", 0, start) + 1 :] if start >= 0 else output)
    return status


async def _pg(statement: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(f"{PG_SERVER}/postgres")
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


@contextlib.contextmanager
def database(kind: str, folder: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite+aiosqlite:///{folder / 'fuzz.db'}"
        return
    name = f"fuzz_{secrets.token_hex(4)}"
    asyncio.run(_pg(f'CREATE DATABASE "{name}"'))
    try:
        yield f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    finally:
        asyncio.run(_pg(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--max-examples", type=int, default=10)
    parser.add_argument("--seed", type=int, default=None, help="random cases from this seed")
    parser.add_argument(
        "--phases", default="", help="for both roles, e.g. examples,coverage,fuzzing,stateful"
    )
    parser.add_argument("--role", choices=["agent", "superuser", "both"], default="both")
    args = parser.parse_args()

    kinds = ["sqlite", "postgresql"] if args.database == "both" else [args.database]
    failed = []
    started = time.monotonic()
    for kind in kinds:
        folder = Path(tempfile.mkdtemp(prefix=f"fuzz-{kind}-"))
        with database(kind, folder) as url, server(url, folder) as base:
            accounts = prepare(base)
            roles = ("agent", "superuser") if args.role == "both" else (args.role,)
            runs = [(role, None) for role in roles]
            runs += [(role, only) for role in roles for only in SESSION_ENDING]
            for role, only in runs:  # agent first: see the module's docstring
                began = time.monotonic()
                what = f" ({only} only)" if only else ""
                print(f"--- schemathesis on {kind} as the {role}{what}", flush=True)
                token = accounts.tokens[role]
                if only:
                    token = fresh_session(base, accounts.emails[role])
                report = folder / f"{role}{'-' + only if only else ''}.txt"
                status = schemathesis(base, token, accounts, args, report, only=only)
                print(f"    ({time.monotonic() - began:.0f}s, exit {status})", flush=True)
                if status != 0:
                    failed.append(f"{kind}/{role}{what}")
        if not failed:
            shutil.rmtree(folder, ignore_errors=True)
    print(f"schemathesis: {time.monotonic() - started:.0f}s in all")
    if failed:
        print(f"schemathesis found failures in: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
