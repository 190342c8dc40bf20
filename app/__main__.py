"""`python -m app`: migrate, make sure there is a superuser, and serve.

python -m app [--host H] [--port P] [--workers N] [--reload]
              [--[no-]proxy-headers] [--forwarded-allow-ips IPS] [--root-path PATH]
python -m app migrate
python -m app create-user EMAIL [--superuser] [--full-name NAME]   (password: prompt or stdin)
python -m app seed-demo --leads N [--agents K] [--force]   (--force: under APP_ENV=production)
python -m app worker   (webhook delivery and background imports alone; `python -m app` runs
                        both in each process too)
python -m app import FILE.csv [--mode insert|upsert] [--on-error abort|skip] [--dry-run]
                     [--delimiter D] [--as EMAIL]
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import FrameType
from typing import Any

from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from app.config import AppEnv, Settings, get_settings
from app.models.lead_import import ImportMode, OnError

logger = logging.getLogger("app.bootstrap")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = get_settings()
    try:
        return args.handler(args, settings)
    except RuntimeError as exc:  # configuration problems: say what is wrong, no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (DBAPIError, OSError) as exc:
        print(f"error: cannot use the database at {_safe_url(settings)}: {exc}", file=sys.stderr)
        return 1


def _safe_url(settings: Settings) -> str:
    return make_url(settings.database_url).render_as_string(hide_password=True)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m app", description="CRM leads backend")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--reload", action="store_true", help="restart on code changes (dev)")
    # Behind a reverse proxy (README: behind a reverse proxy); uvicorn's own options, passed on.
    parser.add_argument(
        "--proxy-headers",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="take the client address and scheme from X-Forwarded-For/-Proto when the peer is "
        "a trusted proxy (default: on)",
    )
    parser.add_argument(
        "--forwarded-allow-ips",
        default=None,
        help="comma-separated proxy addresses (or networks) trusted for X-Forwarded-*, '*' for "
        "any (default: $FORWARDED_ALLOW_IPS, else none: the peer is the client)",
    )
    parser.add_argument(
        "--root-path", default="", help="the path prefix the proxy serves the app under"
    )
    parser.set_defaults(handler=_serve)
    commands = parser.add_subparsers(title="commands")

    migrate = commands.add_parser("migrate", help="apply the database migrations")
    migrate.set_defaults(handler=_migrate)

    create = commands.add_parser("create-user", help="create a user account")
    create.add_argument("email")
    create.add_argument("--superuser", action="store_true")
    create.add_argument("--full-name", default=None)
    create.set_defaults(handler=_create_user)

    seed = commands.add_parser("seed-demo", help="insert realistic demo leads and agents")
    seed.add_argument("--leads", type=int, default=1000)
    seed.add_argument("--agents", type=int, default=10)
    seed.add_argument("--force", action="store_true", help="seed even though APP_ENV is production")
    seed.set_defaults(handler=_seed_demo)

    worker = commands.add_parser(
        "worker",
        help="deliver webhooks and run background imports (any number may run beside the app "
        "processes)",
    )
    worker.set_defaults(handler=_work)

    load = commands.add_parser("import", help="import leads from a CSV file, with a progress bar")
    load.add_argument("file", type=Path)
    load.add_argument("--mode", choices=[m.value for m in ImportMode], default="insert")
    load.add_argument("--on-error", choices=[o.value for o in OnError], default="abort")
    load.add_argument("--dry-run", action="store_true", help="report only; write nothing")
    load.add_argument("--delimiter", default=None, help="default: the header row's")
    load.add_argument(
        "--as",
        dest="as_email",
        default=None,
        help="the user importing (default: the first superuser); an agent's rows are theirs",
    )
    load.set_defaults(handler=_import)
    return parser


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from app.bootstrap import resolve_secret_key
    from app.logging_config import configure_logging, logging_config

    configure_logging(settings.log_level, settings.log_format)
    # Fail early on a missing production key; make the key file (each worker reads it again).
    settings = resolve_secret_key()
    trusted_proxies = args.forwarded_allow_ips
    if trusted_proxies is None:
        trusted_proxies = settings.forwarded_allow_ips
    _run(settings, _prepare)
    # uvicorn re-raises SIGTERM once its graceful shutdown is done, which would end the process
    # with 143: a requested, completed stop exits 0 instead, as process managers expect.
    signal.signal(signal.SIGTERM, _exit_after_graceful_shutdown)
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=None if args.reload else args.workers,
        reload=args.reload,
        log_level=settings.log_level.lower(),
        # Applied again in each worker process.
        log_config=logging_config(settings.log_level, settings.log_format),
        access_log=False,  # app.access writes one line per request, with its request id
        # On SIGTERM: stop accepting, let the requests in flight finish for this long, then
        # cancel them; the app's lifespan closes the database pool after that.
        timeout_graceful_shutdown=settings.shutdown_grace_seconds,
        loop="uvloop",
        # httptools, with the header and body timeouts and the connection cap (app/server.py).
        http="app.server:GuardedHttpToolsProtocol",
        timeout_keep_alive=settings.keep_alive_seconds,  # typed int by uvicorn; a float works
        # No trusted proxy, no X-Forwarded-* believed at all (uvicorn alone trusts 127.0.0.1).
        proxy_headers=args.proxy_headers and bool(trusted_proxies.strip()),
        forwarded_allow_ips=trusted_proxies,
        root_path=args.root_path,
    )
    return 0


def _exit_after_graceful_shutdown(signum: int, frame: FrameType | None) -> None:
    """uvicorn re-raises SIGTERM here once it has shut down (the pool is closed by then). Ending
    the process at once, as the default action would, rather than by SystemExit: a request
    cancelled past the grace period can leave a database driver thread waiting on a lock, and
    the interpreter's orderly exit would wait for that thread."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


async def _prepare(settings: Settings, db: Any, engine: Any) -> None:
    from app.bootstrap import ensure_first_superuser
    from app.database import startup_lock, upgrade_database

    async with startup_lock(engine):
        report = await upgrade_database(engine)
        generated = await ensure_first_superuser(db)
    if report.applied:
        logger.info(
            "migrated the database to revision %s (%d revisions applied)",
            report.after,
            len(report.applied),
            extra={"revisions": [revision for revision, _ in report.applied]},
        )
    if generated:
        email, path = generated
        # WARNING, so that it shows at LOG_LEVEL=WARNING too: someone has to fetch the password.
        logger.warning(
            "created the first superuser %s; its generated password is in %s (mode 0600): "
            "read it, then delete the file",
            email,
            path.resolve(),
            extra={"admin_email": email, "password_file": str(path.resolve())},
        )


def _migrate(args: argparse.Namespace, settings: Settings) -> int:
    from app.database import upgrade_database

    async def run(settings: Settings, db: Any, engine: Any) -> None:
        report = await upgrade_database(engine)
        where = _safe_url(settings)
        if not report.applied:
            print(f"{where} is already at revision {report.after} (head): nothing to apply.")
            return
        start = f"revision {report.before}" if report.before else "an empty database"
        count = len(report.applied)
        print(f"Migrated {where} from {start}, applying {count} revision(s):")
        for revision, description in report.applied:
            print(f"  {revision}  {description}")
        head = " (head)" if report.after == report.head else ""
        print(f"It is now at revision {report.after}{head}.")

    _run(settings, run)
    return 0


def _create_user(args: argparse.Namespace, settings: Settings) -> int:
    from app.services.exceptions import CRMException
    from app.services.user_service import UserService

    if sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if getpass.getpass("Repeat password: ") != password:
            print("error: the passwords differ", file=sys.stderr)
            return 2
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    data = {
        "email": args.email,
        "full_name": args.full_name or args.email.split("@")[0],
        "password": password,
        "is_superuser": args.superuser,
    }

    async def run(settings: Settings, db: Any, engine: Any) -> None:
        from app.database import upgrade_database

        await upgrade_database(engine)
        user = await UserService.create_user(db, data, acting_user_id=None)
        role = "superuser" if user.is_superuser else "user"
        print(f"Created {role} {user.email} (id {user.id}).")

    try:
        _run(settings, run)
    except CRMException as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    return 0


def _seed_demo(args: argparse.Namespace, settings: Settings) -> int:
    from app.seed import DEMO_AGENT_PASSWORD, seed_demo

    if args.leads < 0 or args.agents < 1:
        print("error: --leads must be 0 or more and --agents at least 1", file=sys.stderr)
        return 2
    if settings.app_env is AppEnv.PRODUCTION and not args.force:
        print(
            f"error: APP_ENV=production: refusing to add demo leads and agents (all with the "
            f"same known password) to {_safe_url(settings)}; pass --force if that is really "
            "what you want.",
            file=sys.stderr,
        )
        return 2

    async def run(settings: Settings, db: Any, engine: Any) -> None:
        from app.database import upgrade_database

        await upgrade_database(engine)
        count, emails = await seed_demo(db, args.leads, args.agents)
        print(f"Inserted {count} leads for {len(emails)} agents ({emails[0]} ... {emails[-1]}),")
        print(f"all with the password {DEMO_AGENT_PASSWORD!r}.")

    # A large seed's COPY and index builds run for minutes; seed.py lifts the server's
    # statement timeout for them, and the app's own limit on a statement must go with it.
    _run(settings.model_copy(update={"db_statement_timeout_ms": 0}), run)
    return 0


def _work(args: argparse.Namespace, settings: Settings) -> int:
    """A webhook and import worker without the API: until SIGTERM or SIGINT, after which it
    finishes the webhook round in flight, gives back what it had not sent, and gives back the
    import it was running."""
    from app.database import create_session_factory
    from app.logging_config import configure_logging
    from app.workers.imports import ImportWorker
    from app.workers.webhooks import WebhookWorker

    configure_logging(settings.log_level, settings.log_format)

    async def run(settings: Settings, db: Any, engine: Any) -> None:
        await _prepare(settings, db, engine)
        await db.close()  # its transaction would hold SQLite's write lock for as long as we run
        stop = asyncio.Event()
        sessions = create_session_factory(engine)
        reads = create_session_factory(engine, read_only=True)
        importer = ImportWorker(sessions, settings)
        imports = asyncio.create_task(importer.run())

        def stopping() -> None:
            # An import is not finished first (it may run for a minute): it stops after the
            # chunk in flight and is given back, for the next worker to resume at once.
            stop.set()
            importer.stop.set()

        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stopping)
        async with WebhookWorker(sessions, reads, settings) as worker:
            logger.info("webhook and import worker started")
            await worker.run(stop)
        await asyncio.wait({imports})
        logger.info("webhook and import worker stopped")

    _run(settings, run, fast_loop=True)
    return 0


def _import(args: argparse.Namespace, settings: Settings) -> int:
    """A CSV file imported as `POST /leads/import` would, with a progress bar: the import is
    queued like a large upload and run by a worker in this process, so one interrupted here
    is resumed by any other worker (`python -m app`, `python -m app worker`)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from app.database import create_session_factory
    from app.services.exceptions import CRMException
    from app.services.lead_imports import ImportJobs, ImportOptions, LeadImports
    from app.workers.imports import ImportWorker

    try:
        content = args.file.read_bytes()
    except OSError as exc:
        print(f"error: {args.file}: {exc.strerror}", file=sys.stderr)
        return 2
    options = ImportOptions(
        mode=ImportMode(args.mode),
        on_error=OnError(args.on_error),
        dry_run=args.dry_run,
        delimiter=args.delimiter,
    )
    outcome: dict[str, Any] = {}

    async def run(settings: Settings, db: Any, engine: Any) -> None:
        await _prepare(settings, db, engine)
        user_id = await _importing_user(db, args.as_email)
        answer = await LeadImports.run(db, content, user_id, options, queue=True)
        import_id = answer.body["import_id"]
        await db.close()  # SQLite: its read transaction must not outlast the worker's writes
        worker = ImportWorker(create_session_factory(engine), settings)
        columns = ("{task.description}", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, transient=False) as bar:
            task = bar.add_task("reading", total=answer.body["total_rows"])

            def show(phase: str, done: int, total: int) -> None:
                bar.update(task, description=phase, completed=done, total=total)

            await worker.run_once(import_id, on_progress=show)
        outcome.update(await ImportJobs.status(db, import_id, user_id))

    try:
        _run(settings, run)
    except CRMException as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    return _print_import(outcome)


async def _importing_user(db: Any, email: str | None) -> int:
    from sqlalchemy import func, select

    from app.models import User
    from app.services.exceptions import UserNotFoundException

    if email is None:
        first = select(User.id).where(User.is_superuser.is_(True), User.is_active.is_(True))
        user_id = await db.scalar(first.order_by(User.id).limit(1))
    else:
        user_id = await db.scalar(select(User.id).where(func.lower(User.email) == email.lower()))
    await db.rollback()
    if user_id is None:
        raise UserNotFoundException(email or "(no active superuser)")
    return int(user_id)


def _print_import(job: dict[str, Any]) -> int:
    """The report, one line of counts and a line per refused row; 1 unless done."""
    report = job.get("report") or {}
    print(
        f"Import {job.get('import_id')}: {job.get('status')}. "
        + ", ".join(f"{report.get(k, 0)} {k}" for k in ("created", "updated", "unchanged"))
        + f", {report.get('skipped', 0)} refused."
    )
    for error in report.get("errors", []):
        print(f"  row {error['row']}, {error['column']}: {error['message']}", file=sys.stderr)
    if report.get("unknown_columns"):
        print("Columns not imported: " + ", ".join(report["unknown_columns"]))
    if job.get("error"):
        print(f"error: {job['error']}", file=sys.stderr)
    return 0 if job.get("status") == "done" else 1


def _run(
    settings: Settings,
    job: Callable[[Settings, Any, Any], Awaitable[None]],
    *,
    fast_loop: bool = False,
) -> None:
    """`job` with an engine and a session; `fast_loop`: on uvloop, as the served app runs."""
    from app.database import create_engine, create_session_factory

    async def run() -> None:
        engine = create_engine(settings=settings)
        try:
            async with create_session_factory(engine)() as db:
                await job(settings, db, engine)
        finally:
            await engine.dispose()

    if fast_loop:
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(run())
        return
    asyncio.run(run())


if __name__ == "__main__":
    sys.exit(main())
