"""Transactional outbox: events saved with the business change, published after the commit.

`write_outbox` inserts in the caller's transaction (the unit of work calls it at commit).

Two ways out, one table. `OutboxPublisher` publishes a unit of work's rows from the process that
committed them, right after the commit (no read of the table: the rows are in hand), and marks
the confirmed ones published with one `UPDATE` for whatever was confirmed together. `OutboxRelay`
is the guarantee behind it: it claims what is still unpublished with `FOR UPDATE SKIP LOCKED` (so
any number of relays run side by side), publishes and marks it. With a publisher in front, the
relay takes only rows older than a grace period (the publisher's, had it been alive) and polls;
without one, it takes every row and is woken by NOTIFY. A process killed between a commit and its
publish, a broker that was away, a mark that failed: the relay publishes those rows, at most the
grace plus a poll later (consumers deduplicate what is published twice). A row the broker keeps
refusing is retried by the relay a few times, then set aside (`parked_at`, with its last error, a
log line and a metric) and never blocks the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

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
OUTBOX_DEFERRED = Counter(
    "outbox_deferred",
    "Outbox events the committing process did not publish (broker away, no confirm, a failed"
    " mark, a full queue): the relay publishes them after its grace",
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


# What the relay reads of a row and the publisher builds from a committed unit of work: the same
# keys, published by the same `_publish_row`.
OutboxRow = Mapping[str, Any]


async def write_outbox(
    conn: asyncpg.Connection, events: Sequence[PendingEvent], *, now: datetime | None = None
) -> list[OutboxRow]:
    """Insert `events` in the caller's open transaction, in one statement; returns the rows as
    the relay would read them (to publish after the commit). An event without `occurred_at`
    gets the transaction's time (PostgreSQL `now()`): the clock of the rows the same transaction
    wrote, and of the outbox row (its AMQP timestamp). `now`: that time, when a statement of the
    transaction already returned it (else it is asked for)."""
    if not events:
        return []
    if not conn.is_in_transaction():
        raise RuntimeError("the outbox is written inside the transaction of the change it reports")
    if not all(has_time(e.event) for e in events):
        if now is None:
            now = await conn.fetchval("SELECT now()")
        for pending in events:
            stamp_time(pending.event, now)
    payloads = [e.event.SerializeToString() for e in events]
    inserted = await conn.fetch(
        "INSERT INTO outbox (event_id, event_type, routing_key, correlation_id, payload,"
        " trace_context) SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[],"
        " $5::bytea[], $6::jsonb[]) RETURNING event_id, id, created_at",
        [e.envelope.event_id for e in events],
        [e.envelope.event_type for e in events],
        [e.envelope.routing_key for e in events],
        [e.envelope.correlation_id for e in events],
        payloads,
        [e.trace_context for e in events],
    )
    stored = {row["event_id"]: row for row in inserted}
    return [
        {
            "id": stored[e.envelope.event_id]["id"],
            "event_id": e.envelope.event_id,
            "event_type": e.envelope.event_type,
            "routing_key": e.envelope.routing_key,
            "correlation_id": e.envelope.correlation_id,
            "payload": payload,
            "trace_context": e.trace_context,
            "created_at": stored[e.envelope.event_id]["created_at"],
        }
        for e, payload in zip(events, payloads, strict=True)
    ]


async def add_to_outbox(conn: asyncpg.Connection, event: Message) -> None:
    """Queue one event inside the caller's transaction (the unit of work is the usual way)."""
    await write_outbox(conn, [PendingEvent.of(event)])


class OutboxPublisher:
    """Publishes what a unit of work committed from the process that committed it, right after
    the commit, and marks what the broker confirmed published (one `UPDATE` for the rows
    confirmed within `mark_linger` seconds).

    `submit` never waits: rows join the next round of a single background task, so the rows of
    every commit made while a round is out go together in the next (publishes pipelined; at most
    `round_size` rows a round). Publishing never waits for a mark; marking waits up to
    `mark_linger` for more confirmed rows (at most `round_size`), so that the commits of a busy
    service share one marking transaction instead of one each (a mark is a committed write: the
    server's cost is per transaction more than per row). The linger is far below the relay's
    grace, so a row waiting for its mark is not published again. Nothing here retries: a row
    that is not confirmed (the broker is away, refuses it, a confirm does not come), or whose
    mark fails, is left in the table for the relay, which takes rows older than its grace; so is
    a row submitted while more than `max_pending` wait or after `close`. The broker is attached
    at wiring (`attach`); until then every row is the relay's.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        db_timeout: float = 5.0,
        max_pending: int = 10_000,
        round_size: int = 256,
        close_timeout: float = 5.0,
        mark_linger: float = 0.2,
    ) -> None:
        expose(OUTBOX_PUBLISHED, OUTBOX_DEFERRED)
        self._pool = pool
        self._round_size = round_size
        self._mark_linger = mark_linger
        self._submitted = asyncio.Event()
        self._close_timeout = close_timeout
        self._db_timeout = db_timeout
        self._max_pending = max_pending
        self._broker: Broker | None = None
        self._pending: list[OutboxRow] = []
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def attach(self, broker: Broker) -> None:
        self._broker = broker

    def submit(self, rows: Sequence[OutboxRow]) -> None:
        """Publish `rows` (committed, as `write_outbox` returned them) soon; never raises."""
        broker = self._broker
        if not rows:
            return
        if (
            self._closed
            or broker is None
            or not broker.connected
            or len(self._pending) + len(rows) > self._max_pending
        ):
            OUTBOX_DEFERRED.inc(len(rows))
            return
        self._pending.extend(rows)
        self._submitted.set()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._drain(broker), name="outbox_publisher"
            )

    async def _drain(self, broker: Broker) -> None:
        """Publish round after round; mark the confirmed rows once `mark_linger` has passed
        since the first of them was confirmed, when `round_size` wait, or at `close`."""
        confirmed: list[OutboxRow] = []
        first_confirmed = 0.0
        loop = asyncio.get_running_loop()
        try:
            while self._pending or confirmed:
                if self._pending and len(confirmed) < self._round_size:
                    rows = self._pending[: self._round_size]
                    del self._pending[: self._round_size]
                    published = await self._publish(broker, rows)
                    if published and not confirmed:
                        first_confirmed = loop.time()
                    confirmed += published
                    continue
                linger = first_confirmed + self._mark_linger - loop.time()
                if linger > 0 and not self._closed and len(confirmed) < self._round_size:
                    self._submitted.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._submitted.wait(), linger)
                    continue
                await self._mark(confirmed)
                confirmed = []
        finally:
            self._task = None

    async def _publish(self, broker: Broker, rows: list[OutboxRow]) -> list[OutboxRow]:
        """The rows the broker confirmed."""
        results = await asyncio.gather(
            *(_publish_row(broker, row) for row in rows), return_exceptions=True
        )
        published = [row for row, result in zip(rows, results, strict=True) if result is None]
        errors = [result for result in results if isinstance(result, BaseException)]
        if errors:
            OUTBOX_DEFERRED.inc(len(errors))
            logger.warning(
                "outbox_publish_deferred",
                rows=len(errors),
                error=f"{type(errors[0]).__name__}: {errors[0]}",
            )
        return published

    async def _mark(self, published: list[OutboxRow]) -> None:
        try:
            async with self._pool.acquire(timeout=self._db_timeout) as conn:
                await conn.execute(
                    "UPDATE outbox SET published_at = now()"
                    " WHERE id = ANY($1::bigint[]) AND published_at IS NULL",
                    [row["id"] for row in published],
                    timeout=self._db_timeout,
                )
        except Exception as error:  # the database is away: the relay publishes them again
            OUTBOX_DEFERRED.inc(len(published))
            logger.warning(
                "outbox_mark_deferred",
                rows=len(published),
                error=f"{type(error).__name__}: {error}",
            )
            return
        for row in published:
            OUTBOX_PUBLISHED.labels(event_type=row["event_type"]).inc()

    async def close(self) -> None:
        """Take no more rows; wait at most `close_timeout` for the rounds in flight and the
        marks (what they do not finish is the relay's)."""
        self._closed = True
        self._submitted.set()  # a lingering mark is made now
        task = self._task
        if task is not None:
            _, pending = await asyncio.wait({task}, timeout=self._close_timeout)
            for unfinished in pending:
                unfinished.cancel()


class OutboxRelay:
    """Publishes committed outbox rows with confirms and marks each confirmed row published.

    `grace` 0 (no publisher in front): every unpublished row, woken by NOTIFY on commit, with a
    poll every `poll_interval` behind it. `grace` > 0 (an `OutboxPublisher` publishes at
    commit, and the table has no NOTIFY trigger): only rows whose transaction began at least
    `grace` seconds ago, looked for every `grace / 2` seconds at most."""

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
        grace: float = 0.0,
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
        self._grace = grace
        self._poll_interval = min(poll_interval, grace / 2) if grace > 0 else poll_interval
        self._gauge_interval = poll_interval
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
            if not self._grace:
                await connection.add_listener(NOTIFY_CHANNEL, lambda *_: wake.set())
            connection.add_termination_listener(lambda *_: wake.set())
            while True:
                wake.clear()
                claimed = self._batch_size
                while claimed == self._batch_size:
                    claimed = await self._publish_batch(connection)
                self._backoff = 0.0
                # At most once per `poll_interval` (5 s), however often the relay looks: under
                # load a wake per commit, or a poll every second, would otherwise add a count
                # over the outbox to every batch.
                if time.monotonic() - self._gauges_at >= self._gauge_interval:
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
        if self._grace and not await conn.fetchval(
            "SELECT EXISTS (SELECT FROM outbox WHERE published_at IS NULL AND parked_at IS NULL"
            " AND created_at < now() - make_interval(secs => $1::float8))",
            self._grace,
        ):
            # Nothing past the grace (the publisher's work): one statement, not a transaction.
            return 0
        async with conn.transaction():
            rows = await conn.fetch(
                "SELECT id, event_id, event_type, routing_key, correlation_id, payload,"
                " trace_context, created_at, attempts FROM outbox"
                " WHERE published_at IS NULL AND parked_at IS NULL"
                " AND ($2::float8 = 0 OR created_at < now() - make_interval(secs => $2::float8))"
                " ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
                self._batch_size,
                self._grace,
            )
            if not rows:
                return 0
            # Confirms arrive in pipeline; waiting for each in turn would cost a round trip per row.
            results = await asyncio.gather(
                *(_publish_row(self._broker, row) for row in rows), return_exceptions=True
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


async def _publish_row(broker: Broker, row: OutboxRow) -> None:
    """Publish one outbox row with its confirm, in a PRODUCER span continuing the trace of the
    transaction that wrote it."""
    headers: dict[str, str] = {}
    payload = bytes(row["payload"])
    with tracing.publishing(
        broker.settings,
        routing_key=row["routing_key"],
        event_id=str(row["event_id"]),
        correlation_id=row["correlation_id"],
        body_size=len(payload),
        stored_context=row["trace_context"],
        headers=headers,
    ):
        await broker.publish_outgoing(
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
