"""Lead export (issue 16): `GET /leads/export` of every lead of a seeded database, as CSV and as
JSON Lines, from one app worker, against the floor of PostgreSQL's own `COPY (SELECT the same
columns ORDER BY id) TO STDOUT WITH CSV` read by one client connection, in the same run. See
bench/README.md ("Results, issue 16").

    python bench/export.py \\
        --database-url postgresql+asyncpg://postgres@127.0.0.1:5432/crm_bench [--formats csv,jsonl]

Reported for each format: seconds to the first byte and to the last, MB sent, leads per second,
the worker's peak resident memory (VmHWM, read while the export runs), and the time as a ratio
of the floor's. Targets: first byte under 1 s, the worker under 200 MB, at a million leads.
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
from app.schemas.lead import LEAD_STORED_FIELDS  # noqa: E402
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

SAMPLE_SECONDS = 0.05


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python bench/export.py", description=__doc__)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--formats", default="csv,jsonl")
    return parser.parse_args(argv)


async def floor_seconds(dsn: str) -> tuple[float, int]:
    """PostgreSQL writing the same rows as CSV by itself: the least an export can take."""
    columns = ", ".join(LEAD_STORED_FIELDS)
    query = f"SELECT {columns} FROM leads WHERE archived_at IS NULL ORDER BY id"
    connection = await asyncpg.connect(dsn)
    size = 0

    async def count(chunk: bytes) -> None:
        nonlocal size
        size += len(chunk)

    try:
        started = time.perf_counter()
        await connection.copy_from_query(query, output=count, format="csv", header=True)
        return time.perf_counter() - started, size
    finally:
        await connection.close()


async def worker_pid(server: Server) -> int:
    """The process that serves requests: with one worker, uvicorn serves in its own process."""
    return server.pid


async def measure_export(client: httpx.AsyncClient, token: str, fmt: str, pid: int) -> dict:
    peak = 0.0
    done = asyncio.Event()

    async def sample() -> None:
        nonlocal peak
        while not done.is_set():
            memory = procstat.memory_mb(pid)
            if memory is not None:
                peak = max(peak, memory[0])
            await asyncio.sleep(SAMPLE_SECONDS)

    sampler = asyncio.create_task(sample())
    size = lines = 0
    first_byte: float | None = None
    started = time.perf_counter()
    headers = {"Authorization": f"Bearer {token}"}
    async with client.stream(
        "GET", f"{API}/leads/export", params={"format": fmt}, headers=headers
    ) as response:
        if response.status_code != 200:
            raise SystemExit(f"error: {response.status_code} {(await response.aread())[:500]!r}")
        async for chunk in response.aiter_raw():
            if first_byte is None:
                first_byte = time.perf_counter() - started
            size += len(chunk)
            lines += chunk.count(b"\n")
    total = time.perf_counter() - started
    done.set()
    await sampler
    return {
        "format": fmt,
        "first_byte_seconds": round(first_byte or total, 3),
        "total_seconds": round(total, 2),
        "megabytes": round(size / 1e6, 1),
        "newlines": lines,
        "worker_peak_rss_mb": round(peak, 1),
    }


async def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    url = normalize_database_url(args.database_url)
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    env = app_env(url, DB_STATEMENT_TIMEOUT_MS="15000")
    port = free_port()
    server = Server("export-api", [sys.executable, "-m", "app", "--port", str(port)], env, port)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    results: list[dict[str, Any]] = []
    try:
        log(f"starting the app (1 worker) on port {port}")
        await server.start("/health/ready")
        async with httpx.AsyncClient(base_url=server.url, timeout=600) as client:
            token = await admin_token(client, env)
            pid = await worker_pid(server)
            log("floor: COPY ... TO STDOUT WITH CSV of the same leads")
            floor, floor_size = await floor_seconds(dsn)
            log(f"floor: {floor:.2f} s, {floor_size / 1e6:.1f} MB")
            for fmt in args.formats.split(","):
                log(f"export as {fmt}")
                result = await measure_export(client, token, fmt, pid)
                result["floor_seconds"] = round(floor, 2)
                result["ratio_to_floor"] = round(floor / result["total_seconds"], 2)
                results.append(result)
                log(json.dumps(result))
    finally:
        server.stop()
    print(json.dumps(results, indent=2))
    (RESULTS_DIR / "export.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    uvloop.install()
    raise SystemExit(asyncio.run(main()))
