"""Transactional outbox: events saved with the business change, relayed to the broker after commit.

`add_to_outbox` writes in the caller's transaction; `OutboxRelay` publishes what was committed,
woken by NOTIFY (with a slow fallback poll), claiming rows with `FOR UPDATE SKIP LOCKED` so any
number of relays can run side by side.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from datetime import timedelta
from typing import Any

import asyncpg
from google.protobuf.message import Message
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from prometheus_client import Counter, Gauge

from chassis.logging import get_logger
from chassis.messaging import codec
from chassis.messaging.broker import Broker, OutgoingEvent

NOTIFY_CHANNEL = "outbox"

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
    published_at    timestamptz
);
CREATE INDEX IF NOT EXISTS outbox_unpublished_idx ON outbox (id) WHERE published_at IS NULL;
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

OUTBOX_BACKLOG = Gauge("outbox_backlog", "Outbox events committed but not yet published")
OUTBOX_PUBLISHED = Counter(
    "outbox_published", "Outbox events published and confirmed by the broker", ["event_type"]
)

_tracer = trace.get_tracer("chassis.messaging")
logger = get_logger(__name__)


async def add_to_outbox(
    conn: asyncpg.Connection, event: Message, *, routing_key: str, correlation_id: str
) -> None:
    """Queue `event` for publishing, inside the transaction that makes the change it reports."""
    if not conn.is_in_transaction():
        raise RuntimeError("add_to_outbox must run inside the caller's transaction")
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    await conn.execute(
        "INSERT INTO outbox (event_id, event_type, routing_key, correlation_id, payload,"
        " trace_context) VALUES ($1, $2, $3, $4, $5, $6::jsonb)",
        codec.event_id_of(event),
        codec.type_name(event),
        routing_key,
        correlation_id,
        event.SerializeToString(),
        json.dumps(carrier),
    )


class OutboxRelay:
    """Publishes committed outbox rows with confirms and marks them published in one transaction."""

    def __init__(
        self,
        pool_url: str,
        broker: Broker,
        *,
        batch_size: int = 100,
        poll_interval: float = 5.0,
        db_timeout: float = 10.0,
        max_backoff: float = 30.0,
        retention: timedelta = timedelta(days=1),
    ) -> None:
        self._url = pool_url
        self._broker = broker
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self._db_timeout = db_timeout
        self._max_backoff = max_backoff
        self._retention = retention
        self._backoff = 0.0

    async def run(self) -> None:
        """Relay forever; database or broker failures are logged and retried with backoff."""
        while True:
            try:
                await self._relay()
            except Exception as exc:  # Postgres, network and aio-pika/aiormq errors alike: retry
                await self._back_off(exc)

    async def _back_off(self, exc: BaseException) -> None:
        self._backoff = min(max(self._backoff * 2, 0.5), self._max_backoff)
        logger.warning(
            "outbox relay failed, retrying",
            error=f"{type(exc).__name__}: {exc}",
            retry_in_seconds=self._backoff,
        )
        await asyncio.sleep(self._backoff)

    async def _relay(self) -> None:
        wake = asyncio.Event()
        listener = await asyncpg.connect(self._url, timeout=self._db_timeout)
        try:
            worker = await asyncpg.connect(
                self._url, timeout=self._db_timeout, command_timeout=self._db_timeout
            )
            try:
                await listener.add_listener(NOTIFY_CHANNEL, lambda *_: wake.set())
                listener.add_termination_listener(lambda *_: wake.set())
                while True:
                    wake.clear()
                    published = self._batch_size
                    while published == self._batch_size:
                        published = await self._publish_batch(worker)
                    self._backoff = 0.0
                    OUTBOX_BACKLOG.set(await self._backlog(worker))
                    if listener.is_closed():
                        raise ConnectionError("outbox LISTEN connection lost")
                    try:
                        await asyncio.wait_for(wake.wait(), self._poll_interval)
                    except TimeoutError:
                        await self._purge_published(worker)
            finally:
                await _close(worker)
        finally:
            await _close(listener)

    async def _publish_batch(self, conn: asyncpg.Connection) -> int:
        """Claim, publish and mark one batch; returns how many rows it published."""
        async with conn.transaction():
            rows = await conn.fetch(
                "SELECT id, event_id, event_type, routing_key, correlation_id, payload,"
                " trace_context, created_at FROM outbox WHERE published_at IS NULL"
                " ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
                self._batch_size,
            )
            if not rows:
                return 0
            # Confirms arrive in pipeline; waiting for each in turn would cost a round trip per row.
            await asyncio.gather(*(self._publish_row(row) for row in rows))
            await conn.execute(
                "UPDATE outbox SET published_at = now() WHERE id = ANY($1::bigint[])",
                [row["id"] for row in rows],
            )
        for row in rows:
            OUTBOX_PUBLISHED.labels(event_type=row["event_type"]).inc()
        return len(rows)

    async def _publish_row(self, row: asyncpg.Record) -> None:
        parent = propagate.extract(_trace_carrier(row["trace_context"]))
        token = otel_context.attach(parent)
        try:
            with _tracer.start_as_current_span(
                f"{row['routing_key']} publish",
                kind=trace.SpanKind.PRODUCER,
                attributes={
                    "messaging.system": "rabbitmq",
                    "messaging.destination.name": self._broker.settings.events_exchange,
                    "messaging.rabbitmq.destination.routing_key": row["routing_key"],
                    "messaging.message.id": str(row["event_id"]),
                },
            ):
                headers: dict[str, str] = {}
                propagate.inject(headers)
                await self._broker.publish_outgoing(
                    OutgoingEvent(
                        event_id=str(row["event_id"]),
                        event_type=row["event_type"],
                        routing_key=row["routing_key"],
                        correlation_id=row["correlation_id"],
                        body=bytes(row["payload"]),
                        headers=headers,
                        occurred_at=row["created_at"],
                    )
                )
        finally:
            otel_context.detach(token)

    async def _backlog(self, conn: asyncpg.Connection) -> int:
        count = await conn.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL")
        return int(count)

    async def _purge_published(self, conn: asyncpg.Connection) -> None:
        await conn.execute(
            "DELETE FROM outbox WHERE published_at < now() - $1::interval", self._retention
        )


def _trace_carrier(raw: Any) -> dict[str, str]:
    stored = json.loads(raw) if isinstance(raw, str) else raw
    return {str(key): str(value) for key, value in (stored or {}).items()}


async def _close(conn: asyncpg.Connection) -> None:
    with contextlib.suppress(OSError, TimeoutError, asyncpg.InterfaceError):
        await conn.close(timeout=2)
