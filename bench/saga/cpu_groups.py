"""Which processes a checkout's CPU is charged to: the benchmark client, each service (the
processes under its honcho), PostgreSQL (the backends of the benchmark's own databases, its
background processes and the postmaster), RabbitMQ and Redis; everything else on the machine is
"not ours" (other sessions' tests on a shared machine) and reported apart.

PostgreSQL backends are chosen by database, so other sessions' queries are not counted; RabbitMQ
and Redis serve everyone from one process each, so their figures include whatever else used them
in the window (read them with the load average printed beside them).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

import asyncpg
from process_cpu import CpuWindow

from chassis.postgres import database_url

BENCHMARK_CLIENT = "benchmark client"
NOT_OURS = "not ours (rest of the machine)"


class PostgresMonitor:
    """One connection (to the `postgres` database) kept for the whole benchmark: the shared
    server's connection slots are scarce, so the figures never open one per reading."""

    def __init__(self, server_url: str) -> None:
        self._url = database_url(server_url, "postgres")
        self._conn: asyncpg.Connection | None = None

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            self._conn = await asyncpg.connect(self._url, timeout=10)
        return self._conn

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()

    async def commits(self, databases: Iterable[str]) -> int:
        """Committed transactions of `databases` so far (as their backends last reported)."""
        conn = await self._connection()
        value = await conn.fetchval(
            "SELECT sum(xact_commit) FROM pg_stat_database WHERE datname = ANY($1)",
            list(databases),
        )
        return int(value or 0)

    async def backend_pids(self, databases: Iterable[str]) -> set[int]:
        """Backends connected to `databases`, PostgreSQL's own background processes (no
        database); not the monitor's own backend."""
        conn = await self._connection()
        rows = await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE (datname = ANY($1) OR datname IS NULL)"
            " AND pid <> pg_backend_pid()",
            list(databases),
        )
        return {row["pid"] for row in rows}


def groups(
    window: CpuWindow,
    *,
    services: Mapping[str, int],
    postgres_backends: set[int],
) -> dict[str, set[int]]:
    """Group name -> pids, from the window's last snapshot. `services` maps a name to the pid
    of the process it was started as (its children are included)."""
    postmasters = {
        window.after[pid].ppid
        for pid in postgres_backends
        if pid in window.after and window.after[pid].command == "postgres"
    }
    found: dict[str, set[int]] = {BENCHMARK_CLIENT: {os.getpid()}}
    for name, pid in services.items():
        found[name] = window.descendants([pid])
    found["PostgreSQL"] = postgres_backends | postmasters
    found["RabbitMQ"] = window.by_command("beam.smp", "epmd")
    found["Redis"] = window.by_command("redis-server")
    ours = set().union(*found.values())
    found[NOT_OURS] = window.all_pids() - ours
    return found


def milliseconds_per(
    window: CpuWindow, grouped: Mapping[str, set[int]], count: int
) -> dict[str, float]:
    """CPU milliseconds per unit of work (`count` of them in the window) of each group, plus
    `ours` (every group but the rest of the machine) and `machine` (every core's busy time)."""
    count = max(count, 1)
    spent = {name: window.spent(pids) * 1000 / count for name, pids in grouped.items()}
    spent["ours"] = sum(v for k, v in spent.items() if k != NOT_OURS)
    spent["machine"] = window.machine_busy * 1000 / count
    return spent
