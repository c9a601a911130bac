"""Specs of publishing at commit: a unit of work's events leave from the process that committed
them, and the relay (with its grace) publishes only what that did not. Real PostgreSQL and
RabbitMQ; the outbox table without its NOTIFY trigger, as the services' migrations leave it."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any, cast

import asyncpg
import pytest
from opentelemetry import trace
from prometheus_client import REGISTRY

from chassis.messaging import Broker, OutboxPublisher, OutboxRelay
from chassis.unit_of_work import UnitOfWork
from ecommerce.events.v1 import events_pb2

from .conftest import Tap
from .events import order_created
from .support import eventually, running
from .test_outbox import all_marked_published, ensure_sdk_tracer_provider, unpublished

GRACE = 1.0


@pytest.fixture
async def outbox_pool(pool: asyncpg.Pool) -> asyncpg.Pool:
    await pool.execute("DROP TRIGGER outbox_notify ON outbox")
    return pool


@pytest.fixture
async def publisher(outbox_pool: asyncpg.Pool, broker: Broker) -> AsyncIterator[OutboxPublisher]:
    publisher = OutboxPublisher(outbox_pool)
    publisher.attach(broker)
    yield publisher
    await publisher.close()


async def commit(
    pool: asyncpg.Pool, publisher: OutboxPublisher | None, *events: events_pb2.OrderCreated
) -> None:
    async with UnitOfWork(pool, publisher=publisher) as uow:
        for event in events:
            uow.publish(event)


def deferred() -> float:
    return REGISTRY.get_sample_value("outbox_deferred_total") or 0.0


async def test_a_unit_of_works_events_leave_at_commit_with_no_relay_running(
    outbox_pool: asyncpg.Pool, publisher: OutboxPublisher, tap: Tap
) -> None:
    ensure_sdk_tracer_provider()
    first, second = order_created(), order_created()
    with trace.get_tracer("spec").start_as_current_span("checkout") as span:
        await commit(outbox_pool, publisher, first, second)
    checkout_trace_id = f"{span.get_span_context().trace_id:032x}"

    messages = await tap.wait_for(2, within=5)
    await all_marked_published(outbox_pool, within=5)

    assert [m.message_id for m in messages] == [first.event_id, second.event_id]
    created_at = await outbox_pool.fetchval("SELECT min(created_at) FROM outbox")
    for message in messages:
        assert message.routing_key == "order.created"
        assert message.correlation_id in (first.order_id, second.order_id)
        assert message.timestamp is not None
        assert message.timestamp.replace(tzinfo=None) == created_at.replace(
            tzinfo=None, microsecond=0
        )
        traceparent = str((message.headers or {})["traceparent"])
        assert traceparent.split("-")[1] == checkout_trace_id
    assert events_pb2.OrderCreated.FromString(messages[0].body) == first


async def test_many_commits_at_once_are_each_published_once_and_a_relay_adds_nothing(
    outbox_pool: asyncpg.Pool, database_url: str, broker: Broker, tap: Tap
) -> None:
    # Rounds of at most 16 rows: 200 events take several, whatever waits joins the next.
    publisher = OutboxPublisher(outbox_pool, round_size=16)
    publisher.attach(broker)
    events = [order_created() for _ in range(200)]
    await asyncio.gather(
        *(commit(outbox_pool, publisher, *events[i : i + 2]) for i in range(0, 200, 2))
    )
    # No relay runs: the publisher alone published and marked every row.
    await tap.wait_for(200, within=10)
    await all_marked_published(outbox_pool, within=5)
    await publisher.close()

    async with running(OutboxRelay(database_url, broker, grace=GRACE)):
        await asyncio.sleep(GRACE * 2)  # past the grace and a poll: nothing left to publish
    received = Counter(message.message_id for message in tap.messages)
    assert received == Counter(event.event_id for event in events)


class CountingPool:
    """The pool the publisher marks through, counting the marks (one connection each)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self.marks = 0

    def acquire(self, *, timeout: float) -> Any:
        self.marks += 1
        return self._pool.acquire(timeout=timeout)


async def test_rows_confirmed_within_the_linger_share_one_mark_and_publishing_never_waits(
    outbox_pool: asyncpg.Pool, broker: Broker, tap: Tap
) -> None:
    counting = CountingPool(outbox_pool)
    publisher = OutboxPublisher(cast(asyncpg.Pool, counting), mark_linger=1.5)
    publisher.attach(broker)
    events = [order_created() for _ in range(10)]
    for event in events:
        await commit(outbox_pool, publisher, event)
        await asyncio.sleep(0.02)
    # Every event is out at once; their marks wait for the linger.
    await tap.wait_for(10, within=1)
    assert await unpublished(outbox_pool) == 10
    await all_marked_published(outbox_pool, within=5)
    assert counting.marks == 1
    assert [m.message_id for m in tap.messages] == [e.event_id for e in events]
    await publisher.close()


async def test_what_the_publisher_could_not_publish_the_relay_publishes_after_its_grace(
    outbox_pool: asyncpg.Pool, database_url: str, broker: Broker, tap: Tap
) -> None:
    # A publisher whose broker is not connected (away, reconnecting) leaves every row.
    idle = Broker(broker.settings, "idle-broker", connection_name=str(uuid.uuid4()))
    stranded = OutboxPublisher(outbox_pool)
    stranded.attach(idle)
    before = deferred()
    event = order_created()

    async with running(OutboxRelay(database_url, broker, grace=GRACE)):
        await commit(outbox_pool, stranded, event)
        assert deferred() == before + 1
        await asyncio.sleep(GRACE / 2)
        assert tap.messages == [], "the relay took a row younger than its grace"
        [message] = await tap.wait_for(1, within=GRACE * 5)
        await all_marked_published(outbox_pool, within=5)
    assert message.message_id == event.event_id


async def test_a_row_whose_mark_failed_is_published_again_by_the_relay_never_lost(
    outbox_pool: asyncpg.Pool, database_url: str, broker: Broker, tap: Tap
) -> None:
    # The mark goes through a pool that is closed: the publish was confirmed, the mark fails.
    closed = await asyncpg.create_pool(database_url, min_size=0, max_size=1)
    await closed.close()
    forgetful = OutboxPublisher(closed)
    forgetful.attach(broker)
    event = order_created()
    before = deferred()

    await commit(outbox_pool, forgetful, event)
    await tap.wait_for(1, within=5)
    await eventually(lambda: _deferred_at_least(before + 1), within=5)
    assert await unpublished(outbox_pool) == 1

    async with running(OutboxRelay(database_url, broker, grace=GRACE)):
        await tap.wait_for(2, within=GRACE * 5)
        await all_marked_published(outbox_pool, within=5)
    assert [m.message_id for m in tap.messages] == [event.event_id, event.event_id]


async def _deferred_at_least(count: float) -> bool:
    return deferred() >= count


async def test_close_finishes_the_round_in_flight_and_leaves_later_commits_to_the_relay(
    outbox_pool: asyncpg.Pool, broker: Broker, tap: Tap
) -> None:
    publisher = OutboxPublisher(outbox_pool)
    publisher.attach(broker)
    sent = order_created()
    await commit(outbox_pool, publisher, sent)
    await publisher.close()
    # Closing waited for the round: published and marked before close returned.
    assert await unpublished(outbox_pool) == 0
    assert [m.message_id for m in await tap.wait_for(1, within=5)] == [sent.event_id]

    await commit(outbox_pool, publisher, order_created())
    await asyncio.sleep(0.3)
    assert await unpublished(outbox_pool) == 1
    assert len(tap.messages) == 1


async def test_a_relay_without_grace_still_publishes_every_row_at_once(
    pool: asyncpg.Pool, database_url: str, broker: Broker, tap: Tap
) -> None:
    # The table keeps its NOTIFY trigger; no publisher: the relay alone, woken on commit.
    event = order_created()
    async with running(OutboxRelay(database_url, broker, poll_interval=30)):
        await asyncio.sleep(0.2)  # listening
        await commit(pool, None, event)
        [message] = await tap.wait_for(1, within=5)
    assert message.message_id == event.event_id
