"""CPU time and memory of process trees, from /proc.

The CPU time of a tree is, over its living processes, their own user + system time plus that of
their children already gone (`cutime`, `cstime`: a process that exits hands its times to the
parent that reaps it). The sum only grows, and its growth between two readings is exactly the
CPU the tree used in between, even for processes that start and end in the meantime.

That measures a server (the uvicorn process and its workers) and PostgreSQL (the postmaster and
everything it forks: backends, parallel query workers, autovacuum, the checkpointer). The
PostgreSQL figure covers the whole database server, so it includes anything else using it at
the time; it is only available when PostgreSQL runs on this machine.
"""

from __future__ import annotations

import os
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()  # the name may hold spaces and parentheses


def parent_pid(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[1]) if fields else None


def process_tree(root: int) -> list[int]:
    """`root` and all its living descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields is not None:
                children.setdefault(int(fields[1]), []).append(int(entry))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        if Path(f"/proc/{pid}").exists():
            tree.append(pid)
            todo.extend(children.get(pid, ()))
    return tree


def tree_cpu_seconds(root: int) -> float:
    """CPU seconds the tree under `root` has used so far, reaped children included."""
    total = 0
    for pid in process_tree(root):
        fields = _stat_fields(pid)
        if fields is not None:
            total += sum(int(value) for value in fields[11:15])  # utime stime cutime cstime
    return total / TICKS


def memory_mb(pid: int) -> tuple[float, float] | None:
    """(resident now, peak resident) in MB."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    values = {}
    for line in status.splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            name, amount = line.split(":", 1)
            values[name] = int(amount.split()[0]) / 1024
    return values.get("VmRSS", 0.0), values.get("VmHWM", 0.0)


def tree_rss_mb(root: int) -> float:
    """The largest resident size of any process of the tree now."""
    sizes = [memory[0] for pid in process_tree(root) if (memory := memory_mb(pid))]
    return max(sizes, default=0.0)


def tree_peak_rss_mb(root: int) -> float:
    """The largest peak resident size (VmHWM) of any living process of the tree."""
    peaks = [memory[1] for pid in process_tree(root) if (memory := memory_mb(pid))]
    return max(peaks, default=0.0)


def tree_peak_rss_total_mb(root: int) -> float:
    """The peak resident sizes (VmHWM) of the tree's living processes added up: the most the
    whole server can have held at once (exactly that for a single process)."""
    return sum(memory[1] for pid in process_tree(root) if (memory := memory_mb(pid)))


def tree_maps(root: int, needles: tuple[str, ...]) -> dict[str, bool]:
    """Which of `needles` some process of the tree has mapped (a path fragment of a shared
    library: `uvloop/loop`, `httptools/parser`): what the server really runs on, whatever its
    command line says."""
    found = dict.fromkeys(needles, False)
    for pid in process_tree(root):
        try:
            maps = Path(f"/proc/{pid}/maps").read_text()
        except OSError:
            continue
        for needle in needles:
            found[needle] = found[needle] or needle in maps
    return found


def postmaster_of(backend_pid: int) -> int | None:
    """The PostgreSQL postmaster, from one of its backends (`SELECT pg_backend_pid()`); None
    when the database does not run on this machine."""
    parent = parent_pid(backend_pid)
    if parent is None:
        return None
    try:
        name = Path(f"/proc/{parent}/comm").read_text().strip()
    except OSError:
        return None
    return parent if name.startswith(("postgres", "postmaster")) else None


class CpuMeter:
    """CPU seconds of a server's tree and of PostgreSQL between `start` and `stop`, and the
    server's largest resident size seen by `sample`."""

    def __init__(self, server_pid: int, postmaster_pid: int | None) -> None:
        self.server_pid = server_pid
        self.postmaster_pid = postmaster_pid
        self.server_start = self.db_start = 0.0
        self.peak_rss_mb = 0.0

    def start(self) -> None:
        self.server_start = tree_cpu_seconds(self.server_pid)
        if self.postmaster_pid is not None:
            self.db_start = tree_cpu_seconds(self.postmaster_pid)
        self.sample()

    def sample(self) -> None:
        self.peak_rss_mb = max(self.peak_rss_mb, tree_rss_mb(self.server_pid))

    def stop(self) -> tuple[float, float | None]:
        """(server CPU seconds, PostgreSQL CPU seconds or None when unknown)."""
        self.sample()
        server = tree_cpu_seconds(self.server_pid) - self.server_start
        if self.postmaster_pid is None:
            return server, None
        return server, tree_cpu_seconds(self.postmaster_pid) - self.db_start
