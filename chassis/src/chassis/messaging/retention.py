"""Retention of the outbox and the inbox: published outbox rows and processed inbox ids are deleted
once older than their retention, on a timer of their own and in bounded chunks, so that steady
traffic never postpones the purge and one purge never holds a long lock.

The inbox must remember an event id for longer than any redelivery can take (a dead-lettered
message re-driven days later still meets its id): keep its retention well above the time an
operator may take to re-drive a dead-letter queue.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import asyncpg
from prometheus_client import Counter

from chassis.logging import get_logger
from chassis.metrics import expose

PURGED = Counter(
    "messaging_rows_purged",
    "Outbox and inbox rows deleted by retention",
    ["table"],
    registry=None,
)
_log = get_logger(__name__)

_PURGE_OUTBOX = """
DELETE FROM outbox WHERE id IN (
    SELECT id FROM outbox WHERE published_at < now() - $1::interval LIMIT $2
)
"""
_PURGE_INBOX = """
DELETE FROM inbox WHERE ctid IN (
    SELECT ctid FROM inbox WHERE processed_at < now() - $1::interval LIMIT $2
)
"""


class MessagingRetention:
    """Deletes old outbox and inbox rows every `interval` seconds (a background task)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        outbox_retention: timedelta,
        inbox_retention: timedelta,
        interval: float = 60.0,
        chunk: int = 1000,
    ) -> None:
        expose(PURGED)
        self._pool = pool
        self._outbox_retention = outbox_retention
        self._inbox_retention = inbox_retention
        self._interval = interval
        self._chunk = chunk

    async def run(self) -> None:
        while True:
            await self.purge_once()
            await asyncio.sleep(self._interval)

    async def purge_once(self) -> dict[str, int]:
        """One pass over both tables; how many rows each lost."""
        purged = {
            "outbox": await self._purge("outbox", _PURGE_OUTBOX, self._outbox_retention),
            "inbox": await self._purge("inbox", _PURGE_INBOX, self._inbox_retention),
        }
        if any(purged.values()):
            _log.info("messaging_rows_purged", **purged)
        return purged

    async def _purge(self, table: str, sql: str, retention: timedelta) -> int:
        total = 0
        while True:
            status = await self._pool.execute(sql, retention, self._chunk, timeout=30)
            deleted = int(status.split()[-1])
            total += deleted
            PURGED.labels(table=table).inc(deleted)
            if deleted < self._chunk:
                return total
