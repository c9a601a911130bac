"""Specs of the transactional outbox and its relay, against real Postgres and RabbitMQ."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import asyncpg
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from chassis.messaging import (
    OUTBOX_DDL,
    Broker,
    EventConsumer,
    InvalidEnvelope,
    OutboxRelay,
    add_to_outbox,
)
from chassis.settings import AmqpSettings
from chassis.testing.proxy import TcpProxy
from ecommerce.events.v1 import events_pb2

from .conftest import Tap
from .events import order_created
from .support import consuming, eventually, on_order_created, running


async def commit_events(
    pool: asyncpg.Pool, count: int, per_transaction: int = 10
) -> list[events_pb2.OrderCreated]:
    events = [order_created() for _ in range(count)]
    for start in range(0, count, per_transaction):
        async with pool.acquire() as conn, conn.transaction():
            for event in events[start : start + per_transaction]:
                await add_to_outbox(conn, event)
    return events


async def unpublished(pool: asyncpg.Pool) -> int:
    return int(await pool.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL"))


async def all_marked_published(pool: asyncpg.Pool, within: float = 20.0) -> None:
    async with asyncio.timeout(within):
        while True:
            if not await unpublished(pool):
                return
            await asyncio.sleep(0.05)


def ensure_sdk_tracer_provider() -> None:
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        trace.set_tracer_provider(TracerProvider())


async def test_committed_event_is_published_with_its_amqp_properties_and_trace_context(
    pool: asyncpg.Pool, database_url: str, broker: Broker, tap: Tap
) -> None:
    ensure_sdk_tracer_provider()
    event = order_created()
    with trace.get_tracer("spec").start_as_current_span("checkout") as span:
        async with pool.acquire() as conn, conn.transaction():
            await add_to_outbox(conn, event)
    checkout_trace_id = f"{span.get_span_context().trace_id:032x}"

    async with running(OutboxRelay(database_url, broker)):
        [message] = await tap.wait_for(1)

    assert message.message_id == event.event_id
    assert message.type == "ecommerce.events.v1.OrderCreated"
    assert message.content_type == "application/x-protobuf"
    assert message.correlation_id == event.order_id
    assert message.routing_key == "order.created"
    assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert message.timestamp is not None
    assert events_pb2.OrderCreated.FromString(message.body) == event
    traceparent = str((message.headers or {})["traceparent"])
    assert traceparent.split("-")[1] == checkout_trace_id


async def test_each_event_reaches_the_broker_exactly_once_with_two_relays_running(
    pool: asyncpg.Pool, database_url: str, broker: Broker, tap: Tap
) -> None:
    async with (
        running(OutboxRelay(database_url, broker, batch_size=20)),
        running(OutboxRelay(database_url, broker, batch_size=20)),
    ):
        events = await commit_events(pool, 200)
        await tap.wait_for(200)
        await all_marked_published(pool)
    # Anything published twice would have been routed by now: confirms came before the commit.
    received = Counter(message.message_id for message in tap.messages)
    assert received == Counter(event.event_id for event in events)
    assert set(received.values()) == {1}


async def test_event_committed_while_no_relay_runs_is_published_when_one_starts(
    pool: asyncpg.Pool, database_url: str, broker: Broker, tap: Tap
) -> None:
    [event] = await commit_events(pool, 1)
    await asyncio.sleep(0.2)
    assert tap.messages == []

    async with running(OutboxRelay(database_url, broker)):
        [message] = await tap.wait_for(1)
        await all_marked_published(pool)

    assert message.message_id == event.event_id


async def test_events_left_by_a_relay_cancelled_mid_way_are_published_by_the_next_one(
    pool: asyncpg.Pool, database_url: str, broker: Broker, tap: Tap
) -> None:
    events = await commit_events(pool, 300, per_transaction=50)
    async with running(OutboxRelay(database_url, broker, batch_size=10)):
        await tap.wait_for(1)
    assert await unpublished(pool) > 0

    async with running(OutboxRelay(database_url, broker, batch_size=10)):
        await all_marked_published(pool)

    # The cancelled relay's last batch may have reached the broker before its rollback:
    # at-least-once, which the consumers' inbox turns into exactly-once effects.
    await tap.wait_for(300)
    assert {message.message_id for message in tap.messages} == {e.event_id for e in events}


async def test_rolled_back_transaction_publishes_nothing(
    pool: asyncpg.Pool, database_url: str, broker: Broker, tap: Tap
) -> None:
    rolled_back = order_created()
    with contextlib.suppress(ZeroDivisionError):
        async with pool.acquire() as conn, conn.transaction():
            await add_to_outbox(conn, rolled_back)
            raise ZeroDivisionError
    [committed] = await commit_events(pool, 1)

    async with running(OutboxRelay(database_url, broker)):
        await tap.wait_for(1)
        await asyncio.sleep(0.2)

    assert [message.message_id for message in tap.messages] == [committed.event_id]


async def test_add_to_outbox_outside_a_transaction_is_refused(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        with pytest.raises(RuntimeError, match="transaction"):
            await add_to_outbox(conn, order_created())
    assert await pool.fetchval("SELECT count(*) FROM outbox") == 0


async def test_event_without_a_uuid_event_id_is_refused(pool: asyncpg.Pool) -> None:
    event = order_created()
    event.event_id = "not-a-uuid"
    async with pool.acquire() as conn, conn.transaction():
        with pytest.raises(ValueError, match="event_id"):
            await add_to_outbox(conn, event)


async def test_relay_retries_until_its_database_becomes_usable(
    create_database: Callable[[str], Awaitable[str]], broker: Broker, tap: Tap
) -> None:
    database_url = await create_database("late_outbox")
    relay = OutboxRelay(database_url, broker, poll_interval=0.2, max_backoff=0.5)
    async with running(relay) as task:
        # No outbox table yet: the relay fails, backs off, and keeps trying.
        await asyncio.sleep(1.0)
        assert not task.done()
        conn = await asyncpg.connect(database_url)
        try:
            await conn.execute(OUTBOX_DDL)
            event = order_created()
            async with conn.transaction():
                await add_to_outbox(conn, event)
        finally:
            await conn.close()
        [message] = await tap.wait_for(1)
    assert message.message_id == event.event_id


async def test_an_event_whose_envelope_amqp_cannot_carry_is_refused_when_queued(
    pool: asyncpg.Pool,
) -> None:
    async with pool.acquire() as conn, conn.transaction():
        with pytest.raises(InvalidEnvelope, match="correlation_id"):
            await add_to_outbox(conn, order_created(order_id="x" * 300))


async def test_one_row_the_broker_refuses_is_set_aside_and_never_blocks_the_others(
    pool: asyncpg.Pool, database_url: str, broker: Broker, tap: Tap
) -> None:
    """A row written by an older version (or by hand) with a 300-byte correlation id cannot be
    published; the rows around it are, exactly once, and the bad one is parked with its error."""
    before = await commit_events(pool, 50)
    bad = order_created()
    await pool.execute(
        "INSERT INTO outbox (event_id, event_type, routing_key, correlation_id, payload)"
        " VALUES ($1, $2, 'order.created', $3, $4)",
        uuid.UUID(bad.event_id),
        "ecommerce.events.v1.OrderCreated",
        "x" * 300,
        bad.SerializeToString(),
    )
    after = await commit_events(pool, 150)
    relay = OutboxRelay(database_url, broker, batch_size=100, max_attempts=3, poll_interval=0.1)
    async with running(relay):
        await tap.wait_for(200)

        async def parked() -> bool:
            return bool(
                await pool.fetchval(
                    "SELECT parked_at IS NOT NULL FROM outbox WHERE event_id = $1",
                    uuid.UUID(bad.event_id),
                )
            )

        await eventually(parked)
        await asyncio.sleep(0.3)
    received = Counter(message.message_id for message in tap.messages)
    assert received == Counter(e.event_id for e in [*before, *after])
    row = await pool.fetchrow(
        "SELECT attempts, last_error, published_at FROM outbox WHERE event_id = $1",
        uuid.UUID(bad.event_id),
    )
    assert row["attempts"] == 3
    assert row["published_at"] is None
    assert row["last_error"]
    assert await unpublished(pool) == 1


async def test_an_event_published_before_any_queue_is_bound_reaches_the_queue_bound_later(
    pool: asyncpg.Pool, database_url: str, broker: Broker
) -> None:
    """A fresh install where the publisher starts first: the broker confirms an event no queue
    is bound to; the alternate exchange keeps it until a consumer binds and re-drives it."""
    events = await commit_events(pool, 100)
    async with running(OutboxRelay(database_url, broker)):
        await all_marked_published(pool)
    received: list[str] = []

    async def record(event: events_pb2.OrderCreated) -> None:
        received.append(event.event_id)

    consumer = EventConsumer(broker, "late-consumer", on_order_created(record))
    async with consuming(consumer):

        async def all_arrived() -> bool:
            return len(received) >= len(events)

        await eventually(all_arrived)
    assert sorted(received) == sorted(e.event_id for e in events)


@pytest.mark.slow
async def test_a_broker_outage_parks_no_row_and_every_event_goes_out_once_it_is_back(
    pool: asyncpg.Pool, database_url: str, amqp_settings: AmqpSettings, tap: Tap
) -> None:
    """The broker goes away under a relay with work to do (its channel closed, new connections
    refused) and comes back: the failed publishes are the broker's, not the rows', so none is
    counted against a row, none is parked, and every event is published."""
    target = urlsplit(amqp_settings.amqp_url)
    async with TcpProxy(target.hostname or "127.0.0.1", target.port or 5672) as proxy:
        through_proxy = target._replace(netloc=f"guest:guest@127.0.0.1:{proxy.port}")
        settings = amqp_settings.model_copy(update={"amqp_url": urlunsplit(through_proxy)})
        broker = Broker(settings, "messaging-tests", connection_name=f"{uuid.uuid4()}")
        await broker.connect()
        relay = OutboxRelay(database_url, broker, max_attempts=2, poll_interval=0.1)
        try:
            async with running(relay):
                before = await commit_events(pool, 20)
                await tap.wait_for(20)
                await proxy.cut()
                during = await commit_events(pool, 60)
                await asyncio.sleep(2.0)  # the relay tries, and fails, meanwhile
                await proxy.restore()
                await all_marked_published(pool, within=60)
        finally:
            await broker.close()
    assert await pool.fetchval("SELECT count(*) FROM outbox WHERE parked_at IS NOT NULL") == 0
    assert await pool.fetchval("SELECT max(attempts) FROM outbox") == 0
    await tap.wait_for(80)
    received = {message.message_id for message in tap.messages}
    assert received == {e.event_id for e in [*before, *during]}


@pytest.mark.slow
async def test_a_relay_backing_off_through_a_long_broker_outage_publishes_once_the_broker_is_back(
    pool: asyncpg.Pool, database_url: str, amqp_settings: AmqpSettings, tap: Tap
) -> None:
    """Its back-off has grown to several seconds when the broker returns: the reconnection ends
    the wait, so the events go out about a second later, not at the end of the back-off (a
    saga could time out meanwhile)."""
    async with TcpProxy.in_front_of(amqp_settings.amqp_url) as proxy:
        url = proxy.url(amqp_settings.amqp_url)
        broker = Broker(
            amqp_settings.model_copy(update={"amqp_url": url}),
            "messaging-tests",
            connection_name=f"{uuid.uuid4()}",
            publish_timeout=1,
        )
        await broker.connect()
        relay = OutboxRelay(database_url, broker, poll_interval=0.1, max_backoff=30)
        try:
            async with running(relay):
                await proxy.cut()
                events = await commit_events(pool, 5)
                await asyncio.sleep(8)  # backing off 0.5, 1, 2, 4 s, then 8 s from about here
                await proxy.restore()
                restored = asyncio.get_running_loop().time()
                await tap.wait_for(5, within=30)
                waited = asyncio.get_running_loop().time() - restored
        finally:
            await broker.close()
    assert {m.message_id for m in tap.messages} == {e.event_id for e in events}
    assert waited < 4, f"published {waited:.1f}s after the broker was back"
