"""Every call to the broker has a deadline: a broker that accepts TCP but stops answering (a proxy
that stops forwarding mid-call, `TcpProxy.blackhole`) costs a relay, a consumer, readiness or a
shutdown at most its bound, and everything works again once the broker answers."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest

from chassis.messaging import (
    Broker,
    BrokerUnavailable,
    ConfirmTimeout,
    EventConsumer,
    OutboxRelay,
    OutgoingEvent,
    add_to_outbox,
    redrive,
)
from chassis.messaging.dead_letters import show
from chassis.messaging.topology import CLOSE_TIMEOUT
from chassis.settings import AmqpSettings
from chassis.testing.proxy import TcpProxy
from ecommerce.events.v1 import events_pb2

from .conftest import Tap
from .events import order_created
from .support import consuming, eventually, on_order_created, running

# The deadlines of the brokers under test: short, so that a test waits little for them.
RPC_TIMEOUT = 1.0
PUBLISH_TIMEOUT = 1.0
# What a loaded, shared machine may add to a deadline before the call returns.
SLACK = 1.5


@pytest.fixture
async def proxy(amqp_settings: AmqpSettings) -> AsyncIterator[TcpProxy]:
    async with TcpProxy.in_front_of(amqp_settings.amqp_url) as running_proxy:
        yield running_proxy


@pytest.fixture
def proxied(amqp_settings: AmqpSettings, proxy: TcpProxy) -> AmqpSettings:
    """The test's broker settings, reaching the broker through `proxy`."""
    return amqp_settings.model_copy(update={"amqp_url": proxy.url(amqp_settings.amqp_url)})


def new_broker(settings: AmqpSettings) -> Broker:
    return Broker(
        settings,
        "messaging-tests",
        connection_name=f"deadlines-{uuid.uuid4()}",
        connect_timeout=RPC_TIMEOUT,
        publish_timeout=PUBLISH_TIMEOUT,
    )


@pytest.fixture
async def broker_through_proxy(proxied: AmqpSettings) -> AsyncIterator[Broker]:
    broker = new_broker(proxied)
    await broker.connect()
    try:
        yield broker
    finally:
        await broker.close()


async def seconds_taken(call: Awaitable[Any]) -> float:
    """How long `call` took to answer (raising counts as answering)."""
    started = time.monotonic()
    with contextlib.suppress(Exception):  # whether it failed is not the point here
        await call
    return time.monotonic() - started


def publish(broker: Broker) -> Awaitable[None]:
    event = order_created()
    return broker.publish(event)


class Recorder:
    """A handler that remembers the order ids it was given."""

    def __init__(self) -> None:
        self.orders: list[str] = []

    async def __call__(self, event: events_pb2.OrderCreated) -> None:
        self.orders.append(event.order_id)


# (what, the call on a connected broker whose server went silent, its bound in seconds)
CALLS: list[tuple[str, Callable[[Broker], Awaitable[Any]], float]] = [
    ("publish, retried once", publish, 2 * PUBLISH_TIMEOUT),
    ("consumer channel", lambda broker: broker.channel(prefetch=4), RPC_TIMEOUT),
    ("queue depth", lambda broker: broker.queue_depth(f"{uuid.uuid4()}"), RPC_TIMEOUT),
    ("unrouted re-drive", redrive.redrive_unrouted, 2 * RPC_TIMEOUT),
    (
        "dead-letter re-drive",
        lambda broker: redrive.redrive_dead_letters(broker, f"{uuid.uuid4()}"),
        2 * RPC_TIMEOUT,
    ),
    ("dead-letter show", lambda broker: show(broker, f"{uuid.uuid4()}", limit=10), 2 * RPC_TIMEOUT),
    ("readiness", lambda broker: broker.check(), 0.1),
    ("close", lambda broker: broker.close(), CLOSE_TIMEOUT),
]


@pytest.mark.slow
@pytest.mark.parametrize(("what", "call", "bound"), CALLS, ids=[what for what, _, _ in CALLS])
async def test_every_broker_call_answers_within_its_bound_when_the_broker_goes_silent(
    broker_through_proxy: Broker,
    proxy: TcpProxy,
    what: str,
    call: Callable[[Broker], Awaitable[Any]],
    bound: float,
) -> None:
    await proxy.blackhole()
    try:
        assert await seconds_taken(call(broker_through_proxy)) < bound + SLACK, what
    finally:
        await proxy.restore()


async def test_connecting_to_a_silent_broker_fails_at_its_deadline_then_works_once_it_answers(
    proxied: AmqpSettings, proxy: TcpProxy, tap: Tap
) -> None:
    await proxy.blackhole()
    broker = new_broker(proxied)
    assert await seconds_taken(broker.connect()) < RPC_TIMEOUT + SLACK
    with pytest.raises(BrokerUnavailable):
        await broker.check()

    await proxy.restore()
    await broker.connect()
    try:
        await publish(broker)
        await tap.wait_for(1)
    finally:
        await broker.close()


async def test_a_publish_the_silent_broker_never_confirms_times_out_and_the_next_goes_out(
    broker_through_proxy: Broker, proxy: TcpProxy, tap: Tap
) -> None:
    await proxy.blackhole()
    lost = order_created()
    with pytest.raises(ConfirmTimeout):
        await broker_through_proxy.publish_outgoing(OutgoingEvent.of(lost))
    await proxy.restore()

    after = order_created()
    await broker_through_proxy.publish(after)

    async def arrived() -> bool:
        return after.event_id in {message.message_id for message in tap.messages}

    await eventually(arrived)


async def test_a_relay_on_a_silent_broker_lets_go_of_its_rows_and_publishes_them_when_it_answers(
    pool: asyncpg.Pool, database_url: str, broker_through_proxy: Broker, proxy: TcpProxy, tap: Tap
) -> None:
    """The relay claims rows (FOR UPDATE) and publishes them; on a silent broker each attempt
    ends at the publish deadline and gives the rows up, so another relay could take them."""
    relay = OutboxRelay(database_url, broker_through_proxy, poll_interval=0.1)
    await proxy.blackhole()
    async with running(relay):
        event = order_created()
        async with pool.acquire() as conn, conn.transaction():
            await add_to_outbox(conn, event)

        async def claimed_by_the_relay() -> bool:
            return not await lockable(pool)

        async def given_up_again() -> bool:
            return await lockable(pool)

        await eventually(claimed_by_the_relay, within=5, every=0.01)
        await eventually(given_up_again, within=PUBLISH_TIMEOUT + SLACK, every=0.01)

        await proxy.restore()

        async def published() -> bool:
            return event.event_id in {message.message_id for message in tap.messages}

        await eventually(published, within=40)


async def lockable(pool: asyncpg.Pool) -> bool:
    """Whether no one holds the outbox's unpublished rows (another relay could claim them)."""
    async with pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(
            "SELECT id FROM outbox WHERE published_at IS NULL FOR UPDATE SKIP LOCKED"
        )
        total = await conn.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL")
        return len(rows) == total > 0


@pytest.mark.slow
async def test_a_consumer_starting_on_a_silent_broker_fails_in_time_and_consumes_once_it_answers(
    broker_through_proxy: Broker, proxy: TcpProxy, broker: Broker
) -> None:
    recorder = Recorder()
    consumer = EventConsumer(broker_through_proxy, "orders", on_order_created(recorder))
    await proxy.blackhole()
    # Declaring, binding and consuming: a few calls, each bounded.
    assert await seconds_taken(consumer.run()) < 5 * RPC_TIMEOUT + SLACK
    with pytest.raises(BrokerUnavailable):
        await consumer.check()

    await proxy.restore()
    async with consuming(consumer):
        event = order_created()
        await broker.publish(event)

        async def handled() -> bool:
            return event.order_id in recorder.orders

        await eventually(handled)


async def test_a_consumer_stopping_while_the_broker_is_silent_stops_in_time(
    broker_through_proxy: Broker, proxy: TcpProxy
) -> None:
    consumer = EventConsumer(broker_through_proxy, "orders", on_order_created(Recorder()))
    task = asyncio.create_task(consumer.run())
    await asyncio.wait_for(consumer.consuming.wait(), 20)
    await proxy.blackhole()
    try:
        task.cancel()
        # Cancelling the consume, then closing its channel: two bounded calls.
        assert await seconds_taken(asyncio.wait([task])) < 2 * RPC_TIMEOUT + SLACK
        assert task.cancelled()
    finally:
        await proxy.restore()


@pytest.mark.slow
async def test_a_connection_silent_for_three_heartbeats_is_replaced_and_consuming_resumes(
    amqp_settings: AmqpSettings, proxy: TcpProxy, broker: Broker
) -> None:
    """Nothing the consumer awaits tells it that the broker went silent while it waits for
    deliveries: the heartbeat does. Three missed beats close the connection (readiness fails),
    and the robust connection dials again until the broker answers, then consumes again."""
    silent_url = proxy.url(amqp_settings.amqp_url) + "?heartbeat=1"
    consumer_broker = new_broker(amqp_settings.model_copy(update={"amqp_url": silent_url}))
    await consumer_broker.connect()
    recorder = Recorder()
    consumer = EventConsumer(consumer_broker, "orders", on_order_created(recorder))
    try:
        async with consuming(consumer):
            await proxy.blackhole()

            async def not_ready() -> bool:
                try:
                    await consumer.check()
                except BrokerUnavailable:
                    return True
                return False

            await eventually(not_ready, within=(1 + 1) * 3 + 2 * SLACK)
            await proxy.cut()  # the dead connections go; the broker answers new ones again
            await proxy.restore()

            event = order_created()
            await broker.publish(event)

            async def handled() -> bool:
                return event.order_id in recorder.orders

            await eventually(handled, within=30)
            await consumer.check()
    finally:
        await consumer_broker.close()
