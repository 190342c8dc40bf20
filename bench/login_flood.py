"""Logins cannot stall the server (issue 14): the latency of an authenticated read, alone and
while anonymous clients flood the login with wrong passwords for ever-new emails.

    python bench/login_flood.py                 # a SQLite file in a scratch folder
    python bench/login_flood.py --attackers 16 --seconds 10 --database-url postgresql+asyncpg://...

It starts `python -m app` (uvloop + httptools, argon2 at its real cost), logs the bootstrap
admin in, then measures `GET /api/v1/users/me` from one client for `--seconds`: first with
nothing else running, then with `--attackers` clients sending wrong logins as fast as they are
answered. The per-address limit is lifted for the run (LOGIN_MAX_FAILURES_PER_ADDRESS), since
every attacker comes from 127.0.0.1 here and would be locked out within seconds otherwise: what
is measured is the password checks' bound (LOGIN_HASH_CONCURRENCY), not the lockout. Prints
both p50s, their ratio (the target: at most 2), and what the logins were answered.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
ADMIN_EMAIL = "flood-admin@example.com"
ADMIN_PASSWORD = "flood admin passphrase"
SETTINGS = ("DATABASE_URL", "SECRET_KEY", "SECRET_KEY_FILE", "APP_ENV", "ADMIN_EMAIL")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(folder: Path, port: int, database_url: str | None) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k not in SETTINGS}
    env.update(
        PYTHONPATH=str(ROOT),
        ADMIN_EMAIL=ADMIN_EMAIL,
        ADMIN_PASSWORD=ADMIN_PASSWORD,
        LOGIN_MAX_FAILURES_PER_ADDRESS="100000",
        LOG_LEVEL="WARNING",
    )
    if database_url:
        env["DATABASE_URL"] = database_url
    log = (folder / "server.log").open("wb")
    return subprocess.Popen(
        [sys.executable, "-m", "app", "--port", str(port)],
        cwd=folder,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


async def wait_ready(base: str) -> None:
    async with httpx.AsyncClient(base_url=base) as client:
        for _ in range(300):
            try:
                if (await client.get("/health/ready")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise SystemExit("the server did not get ready")


async def read_latencies(client: httpx.AsyncClient, token: str, seconds: float) -> list[float]:
    headers = {"Authorization": f"Bearer {token}"}
    timings: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        began = time.perf_counter()
        response = await client.get("/api/v1/users/me", headers=headers)
        timings.append(time.perf_counter() - began)
        response.raise_for_status()
    return timings


async def attacker(base: str, stop: asyncio.Event, answers: collections.Counter[int]) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        while not stop.is_set():
            email = f"nobody-{secrets.token_hex(6)}@example.com"
            response = await client.post(
                "/api/v1/auth/token", data={"username": email, "password": "wrong password"}
            )
            answers[response.status_code] += 1


def p50_ms(timings: list[float]) -> float:
    return statistics.median(timings) * 1000


async def measure(base: str, attackers: int, seconds: float) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        login = await client.post(
            "/api/v1/auth/token", data={"username": ADMIN_EMAIL, "password": ADMIN_PASSWORD}
        )
        login.raise_for_status()
        token = login.json()["access_token"]
        await read_latencies(client, token, 1.0)  # warm up
        idle = await read_latencies(client, token, seconds)
        stop, answers = asyncio.Event(), collections.Counter[int]()
        flood = [asyncio.create_task(attacker(base, stop, answers)) for _ in range(attackers)]
        await asyncio.sleep(1.0)  # let the flood build up
        flooded = await read_latencies(client, token, seconds)
        stop.set()
        await asyncio.gather(*flood)
    idle_p50, flooded_p50 = p50_ms(idle), p50_ms(flooded)
    print(f"GET /users/me, one client, {seconds:.0f} s each:")
    print(f"  alone:                     p50 {idle_p50:6.2f} ms  ({len(idle)} requests)")
    print(
        f"  with {attackers} login attackers: p50 {flooded_p50:6.2f} ms  ({len(flooded)} requests)"
    )
    print(f"  ratio {flooded_p50 / idle_p50:.2f} (target: at most 2)")
    answered = ", ".join(f"{code}: {count}" for code, count in sorted(answers.items()))
    print(f"  the logins were answered {answered}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attackers", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--database-url", default=None, help="default: a scratch SQLite file")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="login-flood-"))
    port = free_port()
    server = start_server(folder, port, args.database_url)
    try:
        base = f"http://127.0.0.1:{port}"
        asyncio.run(wait_ready(base))
        asyncio.run(measure(base, args.attackers, args.seconds))
    finally:
        server.terminate()
        server.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
