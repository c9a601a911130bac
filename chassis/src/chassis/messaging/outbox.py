"""Transactional outbox: events saved with the business change, relayed to the broker after commit.

`write_outbox` inserts in the caller's transaction (the unit of work calls it at commit);
`OutboxRelay` publishes what was committed, woken by NOTIFY (with a slow fallback poll), claiming
rows with `FOR UPDATE SKIP LOCKED` so any number of relays can run side by side. Each confirmed
row is marked published on its own: a row the broker keeps refusing is retried a few times, then
set aside (`parked_at`, with its last error, a log line and a metric) and never blocks the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg
from aiormq.exceptions import ChannelClosed, ChannelInvalidStateError, ChannelPreconditionFailed
from google.protobuf.message import Message
from prometheus_client import Counter, Gauge

from chassis.logging import get_logger
from chassis.messaging import tracing
from chassis.messaging.broker import Broker, BrokerUnavailable, OutgoingEvent
from chassis.messaging.envelope import Envelope, has_time, stamp, stamp_time
from chassis.metrics import expose

NOTIFY_CHANNEL = "outbox"

# The tables a service's migrations must create (each service's migration holds this SQL as it
# was when written; the relay and the unit of work read and write these columns).
OUTBOX_DDL = f"""
CREATE TABLE IF NOT EXISTS outbox (
    id              bigserial PRIMARY KEY,
    event_id        uuid NOT NULL UNIQUE,
    event_type      text NOT NULL,
    routing_key     text NOT NULL,
    correlation_id  text NOT NULL,
    payload         bytea NOT NULL,
    trace_context   jsonb NOT NULL DEFAULT '{{}}',
    created_at      timestamptz NOT NULL DEFAULT now(),
    published_at    timestamptz,
    attempts        integer NOT NULL DEFAULT 0,
    last_error      text,
    parked_at       timestamptz
);
CREATE INDEX IF NOT EXISTS outbox_pending_idx ON outbox (id)
    WHERE published_at IS NULL AND parked_at IS NULL;
CREATE INDEX IF NOT EXISTS outbox_published_at_idx ON outbox (published_at)
    WHERE published_at IS NOT NULL;
CREATE OR REPLACE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('{NOTIFY_CHANNEL}', '');
    RETURN NULL;
END
$$;
DROP TRIGGER IF EXISTS outbox_notify ON outbox;
CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();
"""

OUTBOX_BACKLOG = Gauge(
    "outbox_backlog", "Outbox events committed but not yet published", registry=None
)
OUTBOX_OLDEST_AGE = Gauge(
    "outbox_oldest_unpublished_age_seconds",
    "Age of the oldest outbox event waiting to be published (0 when none waits)",
    registry=None,
)
OUTBOX_PARKED = Gauge(
    "outbox_parked",
    "Outbox events set aside after repeated publish failures (need an operator)",
    registry=None,
)
OUTBOX_PUBLISHED = Counter(
    "outbox_published",
    "Outbox events published and confirmed by the broker",
    ["event_type"],
    registry=None,
)
OUTBOX_PUBLISH_FAILURES = Counter(
    "outbox_publish_failures",
    "Publish attempts of one outbox row that failed for that row (not a broker outage)",
    ["event_type"],
    registry=None,
)

logger = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class PendingEvent:
    """An event queued by a unit of work, stamped and checked, waiting for its commit."""

    event: Message
    envelope: Envelope
    trace_context: str

    @classmethod
    def of(cls, event: Message) -> PendingEvent:
        """Stamp the event's id and check what AMQP limits now, so a bad event fails its own
        transaction instead of blocking the relay later; the current trace context travels
        with it. The body is serialised at commit, once the event has its time."""
        return cls(event=event, envelope=stamp(event), trace_context=tracing.current_context())


async def write_outbox(
    conn: asyncpg.Connection, events: Sequence[PendingEvent], *, now: datetime | None = None
) -> None:
    """Insert `events` in the caller's open transaction, in one statement. An event without
    `occurred_at` gets the transaction's time (PostgreSQL `now()`): the clock of the rows the
    same transaction wrote, and of the outbox row (its AMQP timestamp). `now`: that time, when
    a statement of the transaction already returned it (else it is asked for)."""
    if not events:
        return
    if not conn.is_in_transaction():
        raise RuntimeError("the outbox is written inside the transaction of the change it reports")
    if not all(has_time(e.event) for e in events):
        if now is None:
            now = await conn.fetchval("SELECT now()")
        for pending in events:
            stamp_time(pending.event, now)
    await conn.execute(
        "INSERT INTO outbox (event_id, event_type, routing_key, correlation_id, payload,"
        " trace_context) SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[],"
        " $5::bytea[], $6::jsonb[])",
        [e.envelope.event_id for e in events],
        [e.envelope.event_type for e in events],
        [e.envelope.routing_key for e in events],
        [e.envelope.correlation_id for e in events],
        [e.event.SerializeToString() for e in events],
        [e.trace_context for e in events],
    )


async def add_to_outbox(conn: asyncpg.Connection, event: Message) -> None:
    """Queue one event inside the caller's transaction (the unit of work is the usual way)."""
    await write_outbox(conn, [PendingEvent.of(event)])


class OutboxRelay:
    """Publishes committed outbox rows with confirms and marks each confirmed row published."""

    def __init__(
        self,
        pool_url: str,
        broker: Broker,
        *,
        batch_size: int = 100,
        poll_interval: float = 5.0,
        db_timeout: float = 10.0,
        max_backoff: float = 2.0,
        max_attempts: int = 5,
    ) -> None:
        expose(
            OUTBOX_BACKLOG,
            OUTBOX_OLDEST_AGE,
            OUTBOX_PARKED,
            OUTBOX_PUBLISHED,
            OUTBOX_PUBLISH_FAILURES,
        )
        self._url = pool_url
        self._broker = broker
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self._db_timeout = db_timeout
        self._max_backoff = max_backoff
        self._max_attempts = max_attempts
        self._backoff = 0.0
        self._gauges_at = -float("inf")

    async def run(self) -> None:
        """Relay forever; database or broker failures are logged and retried with backoff."""
        while True:
            try:
                await self._relay()
            except Exception as exc:  # Postgres, network and aio-pika/aiormq errors alike: retry
                await self._back_off(exc)

    async def _back_off(self, exc: BaseException) -> None:
        # Short: what a relay does while a server is away is one connection attempt per wait,
        # and whatever waits in the outbox (a saga step) goes out at most `max_backoff` after
        # the server is back. With 30 s, a relay that failed five times during a 3 s PostgreSQL
        # restart slept 8 s past it, and a saga of three relayed steps timed out.
        self._backoff = min(max(self._backoff * 2, 0.5), self._max_backoff)
        logger.warning(
            "outbox_relay_failed",
            error=f"{type(exc).__name__}: {exc}",
            retry_in_seconds=self._backoff,
        )
        # A broker back from an outage ends the wait at once: what waited goes out then, not
        # up to `max_backoff` later (long enough for a saga to time out).
        await self._broker.reconnected_within(self._backoff)

    async def _relay(self) -> None:
        wake = asyncio.Event()
        # One connection both listens and claims: the server queues a NOTIFY that comes during a
        # batch's transaction and delivers it after, so none is missed, and every relay holds
        # one connection of the server's limit, not two.
        connection = await asyncpg.connect(
            self._url, timeout=self._db_timeout, command_timeout=self._db_timeout
        )
        try:
            await connection.add_listener(NOTIFY_CHANNEL, lambda *_: wake.set())
            connection.add_termination_listener(lambda *_: wake.set())
            while True:
                wake.clear()
                claimed = self._batch_size
                while claimed == self._batch_size:
                    claimed = await self._publish_batch(connection)
                self._backoff = 0.0
                # At most once per poll interval: under load a wake per commit would
                # otherwise add a count over the outbox to every batch.
                if time.monotonic() - self._gauges_at >= self._poll_interval:
                    await self._refresh_gauges(connection)
                    self._gauges_at = time.monotonic()
                if connection.is_closed():
                    raise ConnectionError("outbox LISTEN connection lost")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), self._poll_interval)
        finally:
            await _close(connection)

    async def _publish_batch(self, conn: asyncpg.Connection) -> int:
        """Claim one batch, publish it, mark every confirmed row; returns how many were claimed.

        A broker outage (nothing could be published) raises, so the relay backs off; a row that
        failed on its own is counted against that row and, after `max_attempts`, parked.
        """
        async with conn.transaction():
            rows = await conn.fetch(
                "SELECT id, event_id, event_type, routing_key, correlation_id, payload,"
                " trace_context, created_at, attempts FROM outbox"
                " WHERE published_at IS NULL AND parked_at IS NULL"
                " ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
                self._batch_size,
            )
            if not rows:
                return 0
            # Confirms arrive in pipeline; waiting for each in turn would cost a round trip per row.
            results = await asyncio.gather(
                *(self._publish_row(row) for row in rows), return_exceptions=True
            )
            published = [row for row, result in zip(rows, results, strict=True) if result is None]
            failed = [
                (row, result)
                for row, result in zip(rows, results, strict=True)
                if isinstance(result, BaseException)
            ]
            if published:
                await conn.execute(
                    "UPDATE outbox SET published_at = now() WHERE id = ANY($1::bigint[])",
                    [row["id"] for row in published],
                )
            outage = [error for _, error in failed if _is_outage(error)]
            for row, error in failed:
                if not _is_outage(error):
                    await self._count_failure(conn, row, error)
        for row in published:
            OUTBOX_PUBLISHED.labels(event_type=row["event_type"]).inc()
        if outage and not published:
            raise outage[0]
        return len(rows)

    async def _count_failure(
        self, conn: asyncpg.Connection, row: asyncpg.Record, error: BaseException
    ) -> None:
        attempts = row["attempts"] + 1
        park = attempts >= self._max_attempts
        message = f"{type(error).__name__}: {error}"[:1000]
        await conn.execute(
            "UPDATE outbox SET attempts = $2, last_error = $3,"
            " parked_at = CASE WHEN $4 THEN now() END WHERE id = $1",
            row["id"],
            attempts,
            message,
            park,
        )
        OUTBOX_PUBLISH_FAILURES.labels(event_type=row["event_type"]).inc()
        log = logger.error if park else logger.warning
        log(
            "outbox_row_parked" if park else "outbox_row_publish_failed",
            outbox_id=row["id"],
            event_id=str(row["event_id"]),
            event_type=row["event_type"],
            attempts=attempts,
            error=message,
        )

    async def _publish_row(self, row: asyncpg.Record) -> None:
        headers: dict[str, str] = {}
        payload = bytes(row["payload"])
        with tracing.publishing(
            self._broker.settings,
            routing_key=row["routing_key"],
            event_id=str(row["event_id"]),
            correlation_id=row["correlation_id"],
            body_size=len(payload),
            stored_context=row["trace_context"],
            headers=headers,
        ):
            await self._broker.publish_outgoing(
                OutgoingEvent(
                    event_id=str(row["event_id"]),
                    event_type=row["event_type"],
                    routing_key=row["routing_key"],
                    correlation_id=row["correlation_id"],
                    body=payload,
                    headers=headers,
                    occurred_at=row["created_at"],
                )
            )

    async def _refresh_gauges(self, conn: asyncpg.Connection) -> None:
        row = await conn.fetchrow(
            "SELECT count(*) FILTER (WHERE parked_at IS NULL) AS backlog,"
            " count(*) FILTER (WHERE parked_at IS NOT NULL) AS parked,"
            " coalesce(extract(epoch FROM now() - min(created_at)"
            " FILTER (WHERE parked_at IS NULL)), 0) AS oldest"
            " FROM outbox WHERE published_at IS NULL"
        )
        if row is None:  # an aggregate always has a row; nothing to report without one
            return
        OUTBOX_BACKLOG.set(int(row["backlog"]))
        OUTBOX_PARKED.set(int(row["parked"]))
        OUTBOX_OLDEST_AGE.set(float(row["oldest"]))


def _is_outage(error: BaseException) -> bool:
    """The broker (not this row) is the problem: nothing is counted against the row. A channel
    that is closed, or closed under the publish, is the connection's state, whatever the row;
    only a nack, a return or a precondition the message itself broke is the row's own."""
    if isinstance(error, BrokerUnavailable | ConnectionError | TimeoutError | OSError):
        return True
    if isinstance(error, ChannelInvalidStateError):
        return True
    return isinstance(error, ChannelClosed) and not isinstance(error, ChannelPreconditionFailed)


async def _close(conn: asyncpg.Connection) -> None:
    with contextlib.suppress(OSError, TimeoutError, asyncpg.InterfaceError):
        await conn.close(timeout=2)
