"""Specs of the transactional outbox and its relay, against real Postgres and RabbitMQ."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable

import aio_pika
import asyncpg
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from chassis.messaging import OUTBOX_DDL, Broker, OutboxRelay, add_to_outbox
from ecommerce.events.v1 import events_pb2

from .conftest import Tap
from .events import order_created


@contextlib.asynccontextmanager
async def running(relay: OutboxRelay) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(relay.run())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def commit_events(
    pool: asyncpg.Pool, count: int, per_transaction: int = 10
) -> list[events_pb2.OrderCreated]:
    events = [order_created() for _ in range(count)]
    for start in range(0, count, per_transaction):
        async with pool.acquire() as conn, conn.transaction():
            for event in events[start : start + per_transaction]:
                await add_to_outbox(
                    conn, event, routing_key="order.created", correlation_id=event.order_id
                )
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
            await add_to_outbox(
                conn, event, routing_key="order.created", correlation_id=event.order_id
            )
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
            await add_to_outbox(conn, rolled_back, routing_key="order.created", correlation_id="x")
            raise ZeroDivisionError
    [committed] = await commit_events(pool, 1)

    async with running(OutboxRelay(database_url, broker)):
        await tap.wait_for(1)
        await asyncio.sleep(0.2)

    assert [message.message_id for message in tap.messages] == [committed.event_id]


async def test_add_to_outbox_outside_a_transaction_is_refused(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        with pytest.raises(RuntimeError, match="transaction"):
            await add_to_outbox(
                conn, order_created(), routing_key="order.created", correlation_id="x"
            )
    assert await pool.fetchval("SELECT count(*) FROM outbox") == 0


async def test_event_without_a_uuid_event_id_is_refused(pool: asyncpg.Pool) -> None:
    event = order_created()
    event.event_id = "not-a-uuid"
    async with pool.acquire() as conn, conn.transaction():
        with pytest.raises(ValueError, match="event_id"):
            await add_to_outbox(conn, event, routing_key="order.created", correlation_id="x")


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
                await add_to_outbox(conn, event, routing_key="order.created", correlation_id="c")
        finally:
            await conn.close()
        [message] = await tap.wait_for(1)
    assert message.message_id == event.event_id
