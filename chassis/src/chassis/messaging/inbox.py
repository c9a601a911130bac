"""Idempotent consumption: the event id is claimed in the same transaction as the handler's effect.

A redelivered event finds its id already in the inbox and is acknowledged with no effect. The
claim is made through the unit of work (`uow.inbox.claim(event)`), so the claim, the effect and
the events the effect produced commit together or not at all. `uow.inbox.claim_with(event, query)`
makes the claim and the effect's first statement one statement (one round trip fewer per event).
"""

from __future__ import annotations

import enum
import re
import uuid
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


# A query that can see the claim names it as a table (`FROM claim`, `JOIN claim`).
_READS_CLAIM = re.compile(r"\b(?:FROM|JOIN)\s+claim\b", re.IGNORECASE)


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
        claimed_at = await self._conn.fetchval(
            "INSERT INTO inbox (consumer, event_id, event_type) VALUES ($1, $2, $3)"
            " ON CONFLICT DO NOTHING RETURNING now()",
            *self._claim_args(event),
        )
        if claimed_at is None:
            return False
        self._claimed(claimed_at)
        return True

    async def claim_with(
        self, event: Message, query: str, *args: object, ctes: str = ""
    ) -> list[asyncpg.Record] | None:
        """Claim `event` and run `query`, the effect's first statement, as one statement: None
        for a duplicate (nothing ran), else the rows `query` returned (maybe none), in its
        order.

        `query` (parameters `$1`... from `args`) is a data-modifying statement that reads from
        `claim`, a one-row table when the claim succeeded and an empty one for a duplicate (as in
        `INSERT ... SELECT $1 FROM claim` or `UPDATE ... WHERE EXISTS (SELECT FROM claim)`), so
        that it changes nothing for a duplicate. `ctes`: common table expressions the query
        reads (`moved AS (UPDATE ... WHERE ... AND EXISTS (SELECT FROM claim) RETURNING ...)`):
        a data-modifying one must be at the statement's top level, beside `claim`, not inside
        the query. The claim behaves as `claim`: a concurrent
        duplicate waits on the key until the first transaction ends. The effect's reads see the
        database as the statement began; rows it updates are re-read once their lock is had, as
        in any `UPDATE`."""
        if not _READS_CLAIM.search(f"{ctes} {query}"):
            raise ValueError("the effect of claim_with must read from `claim`")
        first = len(args) + 1
        rows = await self._conn.fetch(
            "WITH claim AS (INSERT INTO inbox (consumer, event_id, event_type)"  # noqa: S608
            f" VALUES (${first}, ${first + 1}, ${first + 2})"
            " ON CONFLICT DO NOTHING RETURNING now() AS claimed_at),"
            f"{f' {ctes},' if ctes else ''} effect AS ({query})"
            " SELECT claim.claimed_at, effect_row.* FROM claim LEFT JOIN"
            " (SELECT true AS effect_returned, row_number() OVER () AS effect_row_number,"
            " effect.* FROM effect) AS effect_row ON true ORDER BY effect_row_number",
            *args,
            *self._claim_args(event),
        )
        if not rows:
            return None
        self._claimed(rows[0]["claimed_at"])
        return [row for row in rows if row["effect_returned"]]

    def _claim_args(self, event: Message) -> tuple[str, uuid.UUID, str]:
        if not self._consumer:
            raise RuntimeError("this unit of work was opened without an inbox consumer name")
        return self._consumer, codec.event_id_of(event), codec.type_name(event)

    def _claimed(self, claimed_at: datetime) -> None:
        if self._on_claimed is not None:
            self._on_claimed(claimed_at)
