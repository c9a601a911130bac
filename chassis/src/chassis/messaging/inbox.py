"""Idempotent consumption: the event id is recorded in the same transaction as the handler's effect.

A redelivered event finds its id already in the inbox and is acknowledged with no effect.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg
from google.protobuf.message import Message

from chassis.messaging import codec

INBOX_DDL = """
CREATE TABLE IF NOT EXISTS inbox (
    consumer      text NOT NULL,
    event_id      uuid NOT NULL,
    event_type    text NOT NULL,
    processed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);
"""


class Outcome(enum.StrEnum):
    """What a handler did with an event (the `outcome` label of `events_consumed_total`)."""

    PROCESSED = "processed"
    DUPLICATE = "duplicate"


E = TypeVar("E", bound=Message)

# Receives the decoded protobuf event; returning None counts as PROCESSED.
Handler = Callable[[Any], Awaitable[Outcome | None]]


def postgres_inbox(
    pool: asyncpg.Pool,
    consumer: str,
    fn: Callable[[asyncpg.Connection, E], Awaitable[None]],
    *,
    acquire_timeout: float = 10.0,
) -> Callable[[E], Awaitable[Outcome]]:
    """Wrap `fn(conn, event)` in a transaction that first claims the event id for `consumer`."""

    async def handle(event: E) -> Outcome:
        event_id = codec.event_id_of(event)
        async with pool.acquire(timeout=acquire_timeout) as conn, conn.transaction():
            # A concurrent duplicate blocks on the key until the first transaction ends, then
            # either conflicts (it committed) or claims the id (it rolled back).
            claimed = await conn.fetchval(
                "INSERT INTO inbox (consumer, event_id, event_type) VALUES ($1, $2, $3)"
                " ON CONFLICT DO NOTHING RETURNING true",
                consumer,
                event_id,
                codec.type_name(event),
            )
            if not claimed:
                return Outcome.DUPLICATE
            await fn(conn, event)
        return Outcome.PROCESSED

    return handle
