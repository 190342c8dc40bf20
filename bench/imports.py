"""CSV import (issue 16): 100,000 valid rows sent to `POST /leads/import` and imported in the
background by the import worker of one app process (PostgreSQL), against the floor of
PostgreSQL's own `COPY ... FROM STDIN WITH CSV` of the same file into a table of text columns,
in the same run. See bench/README.md ("Results, issue 16").

    python bench/imports.py \\
        --database-url postgresql+asyncpg://postgres@127.0.0.1:5432/crm_bench_import \\
        [--rows 100000] [--modes skip,abort]

The database is emptied first (every table of the app's dropped; the app migrates it again).
Reported per on_error mode: seconds from the upload to the import's end (polled every 0.2 s),
rows per second, the app process's resident memory before, its peak (sampled while the import
runs, and its own high-water mark VmHWM),
and the time as a ratio of the floor's. Targets: under 60 s and 300 MB for 100,000 rows.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402
import httpx  # noqa: E402
import uvloop  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from app.config import normalize_database_url  # noqa: E402
from bench import procstat  # noqa: E402
from bench.run import (  # noqa: E402
    API,
    RESULTS_DIR,
    Server,
    admin_token,
    app_env,
    free_port,
    log,
)

HEADER = "First Name,Last Name,E-mail,Phone Number,Company Name,Job Title,Lead Source,Tags,Notes"
SOURCES = ("website", "referral", "facebook", "instagram", "whatsapp", "other")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python bench/imports.py", description=__doc__)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--modes", default="skip,abort")
    return parser.parse_args(argv)


def spreadsheet(rows: int, prefix: str) -> bytes:
    """A file as a CRM export or a trade-show list looks: every row valid, each its own email."""
    lines = [HEADER]
    for n in range(rows):
        lines.append(
            f"Ada{n},Lovelace{n % 1000},{prefix}{n}@firm{n % 5000}.example,"
            f"+1 415 555 {n % 10000:04d},Firm {n % 5000},Engineer,{SOURCES[n % len(SOURCES)]},"
            f'"vip;imported",Met at the fair (stand {n % 300})'
        )
    return ("\n".join(lines) + "\n").encode()


async def reset(dsn: str) -> None:
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    finally:
        await connection.close()


async def floor_seconds(dsn: str, content: bytes) -> float:
    """PostgreSQL reading the same file into text columns by itself: the least an import of
    it can take."""
    connection = await asyncpg.connect(dsn)
    columns = ", ".join(f"c{i} text" for i in range(len(HEADER.split(","))))
    try:
        await connection.execute(f"CREATE TEMP TABLE import_floor ({columns})")
        started = time.perf_counter()
        await connection.copy_to_table(
            "import_floor", source=_Bytes(content), format="csv", header=True
        )
        return time.perf_counter() - started
    finally:
        await connection.close()


class _Bytes:
    """`content` as the async iterable of chunks asyncpg's COPY takes."""

    def __init__(self, content: bytes) -> None:
        self.content = content

    def __aiter__(self) -> Any:
        async def chunks() -> Any:
            for start in range(0, len(self.content), 1 << 20):
                yield self.content[start : start + (1 << 20)]

        return chunks()


async def measure(
    client: httpx.AsyncClient, token: str, content: bytes, on_error: str, pid: int
) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"}
    peak = 0.0
    before = procstat.memory_mb(pid) or (0.0, 0.0)
    started = time.perf_counter()
    sent = await client.post(
        f"{API}/leads/import",
        content=content,
        params={"on_error": on_error},
        headers={**headers, "Content-Type": "text/csv"},
    )
    if sent.status_code != 202:
        raise SystemExit(f"error: {sent.status_code} {sent.text[:500]}")
    location = sent.headers["Location"]
    while True:
        memory = procstat.memory_mb(pid)
        if memory is not None:
            peak = max(peak, memory[0])
        job = (await client.get(location, headers=headers)).json()
        if job["report"] is not None:
            break
        await asyncio.sleep(0.2)
    total = time.perf_counter() - started
    high_water = (procstat.memory_mb(pid) or (0.0, 0.0))[1]
    report = job["report"]
    if job["status"] != "done" or report["created"] != job["total_rows"]:
        raise SystemExit(f"error: the import did not create every lead: {json.dumps(job)[:800]}")
    return {
        "on_error": on_error,
        "rows": job["total_rows"],
        "megabytes": round(len(content) / 1e6, 1),
        "total_seconds": round(total, 2),
        "rows_per_second": round(job["total_rows"] / total),
        "worker_rss_before_mb": round(before[0], 1),
        "worker_peak_rss_mb": round(peak, 1),  # sampled every 0.2 s
        "worker_vmhwm_mb": round(high_water, 1),  # the process's own high-water mark
    }


async def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    url = normalize_database_url(args.database_url)
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    await reset(dsn)
    env = app_env(url, IMPORT_POLL_SECONDS="0.2")
    port = free_port()
    server = Server("import-api", [sys.executable, "-m", "app", "--port", str(port)], env, port)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    results: list[dict[str, Any]] = []
    try:
        log(f"starting the app (1 worker, its import worker inside) on port {port}")
        await server.start("/health/ready")
        async with httpx.AsyncClient(base_url=server.url, timeout=600) as client:
            token = await admin_token(client, env)
            for on_error in args.modes.split(","):
                content = spreadsheet(args.rows, prefix=f"{on_error}-")
                floor = await floor_seconds(dsn, content)
                log(f"floor: COPY of the {len(content) / 1e6:.1f} MB file: {floor:.2f} s")
                log(f"import, on_error={on_error}")
                result = await measure(client, token, content, on_error, server.pid)
                result["floor_seconds"] = round(floor, 2)
                result["ratio_to_floor"] = round(floor / result["total_seconds"], 3)
                results.append(result)
                log(json.dumps(result))
    finally:
        server.stop()
    print(json.dumps(results, indent=2))
    (RESULTS_DIR / "imports.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    uvloop.install()
    raise SystemExit(asyncio.run(main()))
