"""Idempotent consumption: the event id is claimed in the same transaction as the handler's effect.

A redelivered event finds its id already in the inbox and is acknowledged with no effect. The
claim is made through the unit of work (`uow.inbox.claim(event)`), so the claim, the effect and
the events the effect produced commit together or not at all.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import asyncpg
from google.protobuf.message import Message

from chassis.messaging import codec

# The table a service's migrations must create (see OUTBOX_DDL for how migrations hold it).
INBOX_DDL = """
CREATE TABLE IF NOT EXISTS inbox (
    consumer      text NOT NULL,
    event_id      uuid NOT NULL,
    event_type    text NOT NULL,
    processed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);
CREATE INDEX IF NOT EXISTS inbox_processed_at_idx ON inbox (processed_at);
"""


class Outcome(enum.StrEnum):
    """What a handler did with an event (the `outcome` label of `events_consumed_total`)."""

    PROCESSED = "processed"
    DUPLICATE = "duplicate"


# Receives the decoded protobuf event; returning None counts as PROCESSED.
Handler = Callable[[Any], Awaitable[Outcome | None]]


class Inbox:
    """The ids of the events one consumer has already handled, on a transaction's connection."""

    def __init__(
        self,
        conn: asyncpg.Connection,
        consumer: str,
        on_claimed: Callable[[datetime], None] | None = None,
    ) -> None:
        self._conn = conn
        self._consumer = consumer
        # Told the transaction's time (`now()`) when a claim returns it (the unit of work
        # stamps its events with it instead of asking the server once more).
        self._on_claimed = on_claimed

    async def claim(self, event: Message) -> bool:
        """True the first time this consumer sees the event; False for a duplicate.

        A concurrent duplicate blocks on the key until the first transaction ends, then either
        conflicts (it committed) or claims the id (it rolled back)."""
        if not self._consumer:
            raise RuntimeError("this unit of work was opened without an inbox consumer name")
        claimed_at = await self._conn.fetchval(
            "INSERT INTO inbox (consumer, event_id, event_type) VALUES ($1, $2, $3)"
            " ON CONFLICT DO NOTHING RETURNING now()",
            self._consumer,
            codec.event_id_of(event),
            codec.type_name(event),
        )
        if claimed_at is None:
            return False
        if self._on_claimed is not None:
            self._on_claimed(claimed_at)
        return True
