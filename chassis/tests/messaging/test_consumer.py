"""Specs of the event consumer, against real Postgres and RabbitMQ."""

from __future__ import annotations

import asyncio
import itertools
import random
import time
import uuid

import aio_pika
import asyncpg
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from chassis.errors import Unavailable
from chassis.messaging import Broker, EventConsumer, Subscription, topology
from chassis.settings import AmqpSettings
from chassis.unit_of_work import HandledOnce, UnitOfWork
from ecommerce.events.v1 import events_pb2

from .events import order_cancelled, order_created
from .support import (
    ORDER_CREATED,
    close_connection_named,
    consumed,
    consuming,
    eventually,
    on_order_created,
    queue_is,
)


class Recorder:
    """A handler that remembers what it was given, failing for the orders it is told to."""

    def __init__(self, failing_orders: frozenset[str] = frozenset()) -> None:
        self.events: list[events_pb2.OrderCreated] = []
        self.attempts: dict[str, int] = {}
        self.trace_ids: list[int] = []
        self._failing = failing_orders

    async def __call__(self, event: events_pb2.OrderCreated) -> None:
        self.attempts[event.order_id] = self.attempts.get(event.order_id, 0) + 1
        self.trace_ids.append(trace.get_current_span().get_span_context().trace_id)
        if event.order_id in self._failing:
            raise RuntimeError(f"cannot handle order {event.order_id}")
        self.events.append(event)

    async def has(self, count: int) -> bool:
        return len(self.events) >= count


async def test_handler_receives_the_decoded_event_and_the_message_is_acknowledged(
    broker: Broker,
) -> None:
    recorder = Recorder()
    consumer = EventConsumer(broker, "orders", on_order_created(recorder))
    event = order_created(quantity=3)
    async with consuming(consumer):
        await broker.publish(event)
        await eventually(lambda: recorder.has(1))
        await eventually(lambda: queue_is(broker, consumer.queue_name, 0))

    assert recorder.events == [event]
    assert isinstance(recorder.events[0], events_pb2.OrderCreated)


async def test_handler_runs_in_the_trace_of_the_publisher(broker: Broker) -> None:
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        trace.set_tracer_provider(TracerProvider())
    recorder = Recorder()
    consumer = EventConsumer(broker, "orders", on_order_created(recorder))
    event = order_created()
    async with consuming(consumer):
        with trace.get_tracer("spec").start_as_current_span("checkout") as span:
            await broker.publish(event)
        await eventually(lambda: recorder.has(1))

    assert recorder.trace_ids == [span.get_span_context().trace_id]


async def test_duplicate_delivery_of_an_event_has_one_effect(
    broker: Broker, pool: asyncpg.Pool
) -> None:
    await pool.execute("CREATE TABLE reservations (order_id uuid, quantity int)")

    async def reserve(uow: UnitOfWork, event: events_pb2.OrderCreated) -> None:
        await uow.connection.execute(
            "INSERT INTO reservations VALUES ($1, $2)",
            uuid.UUID(event.order_id),
            event.lines[0].quantity,
        )

    handler = HandledOnce(lambda: UnitOfWork(pool, consumer="products"))(reserve)
    consumer = EventConsumer(broker, "products", on_order_created(handler))
    event = order_created(quantity=2)
    processed, duplicates = consumed("processed"), consumed("duplicate")
    async with consuming(consumer):
        for _ in range(3):
            await broker.publish(event)

        async def all_three_handled() -> bool:
            return (consumed("processed") - processed, consumed("duplicate") - duplicates) == (
                1,
                2,
            )

        await eventually(all_three_handled)

    rows = await pool.fetch("SELECT order_id, quantity FROM reservations")
    assert [(str(row["order_id"]), row["quantity"]) for row in rows] == [(event.order_id, 2)]
    assert await pool.fetchval("SELECT count(*) FROM inbox") == 1


async def test_a_failing_handler_rolls_back_its_inbox_entry_so_the_retry_takes_effect(
    broker: Broker, pool: asyncpg.Pool
) -> None:
    await pool.execute("CREATE TABLE effects (event_id uuid)")
    calls = 0

    async def flaky(uow: UnitOfWork, event: events_pb2.OrderCreated) -> None:
        nonlocal calls
        calls += 1
        await uow.connection.execute("INSERT INTO effects VALUES ($1)", uuid.UUID(event.event_id))
        if calls == 1:
            raise RuntimeError("a bug that went away")

    handler = HandledOnce(lambda: UnitOfWork(pool, consumer="flaky"))(flaky)
    consumer = EventConsumer(broker, "products", on_order_created(handler))
    event = order_created()
    async with consuming(consumer):
        await broker.publish(event)

        async def effect_recorded() -> bool:
            return bool(await pool.fetchval("SELECT count(*) FROM effects"))

        await eventually(effect_recorded)

    assert calls == 2
    assert await pool.fetchval("SELECT count(*) FROM effects") == 1


async def test_message_failing_every_attempt_goes_to_the_dlq_and_the_queue_keeps_flowing(
    broker: Broker, amqp_settings: AmqpSettings
) -> None:
    poison = order_created()
    recorder = Recorder(failing_orders=frozenset({poison.order_id}))
    consumer = EventConsumer(broker, "orders", on_order_created(recorder))
    labels = {"queue": consumer.queue_name, "event_type": ORDER_CREATED}
    behind = [order_created() for _ in range(5)]
    with capture_logs() as logs:
        async with consuming(consumer):
            for event in [poison, *behind]:
                await broker.publish(event)
            await eventually(lambda: recorder.has(5))
            await eventually(lambda: queue_is(broker, consumer.dead_letter_queue_name, 1))

    assert recorder.events == behind
    assert recorder.attempts[poison.order_id] == amqp_settings.delivery_limit
    assert REGISTRY.get_sample_value("events_dead_lettered_total", labels) == 1
    [line] = [log for log in logs if log["event"] == "event_dead_lettered"]
    assert line["message_id"] == poison.event_id
    assert line["log_level"] == "error"
    assert line["reason"] == "handler_failed"
    assert "cannot handle order" in line["error"]


@pytest.mark.parametrize(
    ("message_type", "body"),
    [
        ("ecommerce.events.v1.NoSuchEvent", b"\x00garbage"),
        ("ecommerce.events.v1.OrderCancelled", order_cancelled().SerializeToString()),
        (ORDER_CREATED, b"\xff\xff\xff not protobuf"),
        (None, b""),
    ],
    ids=["unknown type", "another type than subscribed", "unparsable body", "no type"],
)
async def test_a_poison_message_goes_straight_to_the_dlq_with_its_reason(
    broker: Broker, message_type: str | None, body: bytes
) -> None:
    recorder = Recorder()
    consumer = EventConsumer(broker, "orders", on_order_created(recorder))
    with capture_logs() as logs:
        async with consuming(consumer):
            channel = await broker.connection.channel()
            events = await channel.get_exchange(broker.settings.events_exchange)
            await events.publish(
                aio_pika.Message(body, type=message_type, message_id=str(uuid.uuid4())),
                routing_key="order.created",
            )
            await eventually(lambda: queue_is(broker, consumer.dead_letter_queue_name, 1))
            await channel.close()
    assert recorder.attempts == {}
    [line] = [log for log in logs if log["event"] == "event_dead_lettered"]
    assert line["reason"] == "poison"


async def test_events_of_one_order_are_handled_in_the_order_the_queue_delivered_them(
    broker: Broker,
) -> None:
    seen: dict[str, list[str]] = {}

    async def record(event: events_pb2.OrderCreated | events_pb2.OrderCancelled) -> None:
        # Handling a creation takes longer than a cancellation: without ordering, the
        # cancellation would overtake it.
        if isinstance(event, events_pb2.OrderCreated):
            await asyncio.sleep(random.uniform(0.005, 0.03))
        seen.setdefault(event.order_id, []).append(type(event).__name__)

    consumer = EventConsumer(
        broker,
        "orders",
        [
            Subscription.of(events_pb2.OrderCreated, record),
            Subscription.of(events_pb2.OrderCancelled, record),
        ],
        prefetch=64,
    )
    orders = [str(uuid.uuid4()) for _ in range(150)]
    async with consuming(consumer):
        for order_id in orders:
            await broker.publish(order_created(order_id))
            await broker.publish(order_cancelled(order_id))

        async def all_seen() -> bool:
            return sum(len(v) for v in seen.values()) == 2 * len(orders)

        await eventually(all_seen, within=60)
    assert {tuple(v) for v in seen.values()} == {("OrderCreated", "OrderCancelled")}


@pytest.mark.slow
async def test_a_dependency_outage_pauses_handling_without_burning_delivery_attempts(
    broker: Broker,
) -> None:
    """A handler whose database is down raises Unavailable: the consumer keeps the message and
    retries it with growing delays, so a few seconds of outage dead-letter nothing."""
    down = True
    handled: list[str] = []

    async def needs_database(event: events_pb2.OrderCreated) -> None:
        if down:
            raise Unavailable("the database is unavailable")
        handled.append(event.event_id)

    consumer = EventConsumer(broker, "orders", on_order_created(needs_database))
    events = [order_created() for _ in range(40)]
    async with consuming(consumer):
        for event in events:
            await broker.publish(event)
        await asyncio.sleep(3)  # longer than delivery_limit (2) immediate retries would take
        down = False

        async def all_handled() -> bool:
            return len(handled) == len(events)

        await eventually(all_handled, within=30)
        assert await broker.queue_depth(consumer.dead_letter_queue_name) == 0
    assert sorted(handled) == sorted(e.event_id for e in events)


@pytest.mark.slow
async def test_a_dependency_outage_is_retried_at_least_every_second_or_so(broker: Broker) -> None:
    """Retries of an event whose dependency is down stay at most about a second apart however
    long the outage, so the event is handled soon after the dependency is back (with the 5 s cap
    of redeliveries, a 6 s outage left gaps of 3.2 s and then 5 s)."""
    down_until = time.monotonic() + 6.0
    attempts: list[float] = []
    handled = asyncio.Event()

    async def needs_database(_: events_pb2.OrderCreated) -> None:
        attempts.append(time.monotonic())
        if time.monotonic() < down_until:
            raise Unavailable("the database is unavailable")
        handled.set()

    consumer = EventConsumer(broker, "orders", on_order_created(needs_database))
    async with consuming(consumer):
        await broker.publish(order_created())
        await asyncio.wait_for(handled.wait(), 30)
    gaps = [later - earlier for earlier, later in itertools.pairwise(attempts)]
    assert len(attempts) >= 7
    assert max(gaps) < 2.5, gaps


@pytest.mark.slow
async def test_a_consumer_dying_again_and_again_does_not_dead_letter_healthy_events(
    amqp_settings: AmqpSettings, broker: Broker
) -> None:
    """The broker counts every return of an unacknowledged message as a delivery; a consumer
    that crashes with messages in flight must not push healthy events into the DLQ."""
    events = [order_created() for _ in range(10)]
    await topology.declare_service_queue(
        broker.connection, amqp_settings, "orders", ["order.created"]
    )
    for event in events:
        await broker.publish(event)

    for _crash in range(amqp_settings.delivery_limit + 2):
        dying = Broker(amqp_settings, "messaging-tests", connection_name=f"dying-{uuid.uuid4()}")
        await dying.connect()
        holding = asyncio.Event()

        async def hold(_: events_pb2.OrderCreated, holding: asyncio.Event = holding) -> None:
            holding.set()
            await asyncio.Event().wait()  # in flight when the process "dies"

        consumer = EventConsumer(dying, "orders", on_order_created(hold))
        async with consuming(consumer):
            await asyncio.wait_for(holding.wait(), 20)
            await close_connection_named(dying.connection_name)
            await asyncio.sleep(0.3)
        await dying.close()

    recorder = Recorder()
    survivor = EventConsumer(broker, "orders", on_order_created(recorder))
    async with consuming(survivor):
        await eventually(lambda: recorder.has(len(events)), within=30)
        assert await broker.queue_depth(survivor.dead_letter_queue_name) == 0


@pytest.mark.slow
async def test_a_message_already_in_the_dlq_shows_in_the_depth_gauge_and_a_warning(
    broker: Broker,
) -> None:
    consumer = EventConsumer(broker, "orders", on_order_created(Recorder()))
    async with consuming(consumer):
        pass
    await broker.publish_message(
        aio_pika.Message(b"dead", message_id=str(uuid.uuid4())),
        routing_key=consumer.queue_name,
        exchange=f"{broker.settings.events_exchange}.dlx",
    )
    with capture_logs() as logs:
        async with consuming(consumer):

            async def warned() -> bool:
                return any(log["event"] == "dead_letter_queue_not_empty" for log in logs)

            await eventually(warned, within=10)
    depth = REGISTRY.get_sample_value(
        "events_dlq_depth", {"queue": consumer.dead_letter_queue_name}
    )
    assert depth == 1


async def test_readiness_fails_while_the_consumer_is_not_consuming(broker: Broker) -> None:
    consumer = EventConsumer(broker, "orders", on_order_created(Recorder()))
    with pytest.raises(Exception, match="not consuming"):
        await consumer.check()
    async with consuming(consumer):
        await consumer.check()
    with pytest.raises(Exception, match="not consuming"):
        await consumer.check()


async def test_changing_the_delivery_limit_keeps_the_consumer_consuming(
    amqp_settings: AmqpSettings, broker: Broker
) -> None:
    consumer = EventConsumer(broker, "orders", on_order_created(Recorder()))
    async with consuming(consumer):
        pass
    changed = amqp_settings.model_copy(update={"delivery_limit": 7})
    other = Broker(changed, "messaging-tests", connection_name=str(uuid.uuid4()))
    await other.connect()
    try:
        recorder = Recorder()
        restarted = EventConsumer(other, "orders", on_order_created(recorder))
        async with consuming(restarted) as task:
            await restarted.check()
            event = order_created()
            await other.publish(event)
            await eventually(lambda: recorder.has(1))
            assert not task.done()
    finally:
        await other.close()


@pytest.mark.slow
async def test_consumer_keeps_consuming_after_the_broker_closes_its_connection(
    amqp_settings: AmqpSettings, broker: Broker
) -> None:
    consumer_broker = Broker(amqp_settings, "messaging-tests", connection_name=str(uuid.uuid4()))
    await consumer_broker.connect()
    reconnected = asyncio.Event()
    consumer_broker.connection.reconnect_callbacks.add(lambda *_: reconnected.set())
    recorder = Recorder()
    consumer = EventConsumer(consumer_broker, "orders", on_order_created(recorder))
    try:
        async with consuming(consumer) as task:
            first, second = order_created(), order_created()
            await broker.publish(first)
            await eventually(lambda: recorder.has(1))

            await close_connection_named(consumer_broker.connection_name)
            await asyncio.wait_for(reconnected.wait(), 30)

            await broker.publish(second)
            await eventually(lambda: recorder.has(2), within=30)
            assert not task.done()
    finally:
        await consumer_broker.close()
    assert recorder.events == [first, second]


@pytest.mark.slow
async def test_a_consumer_stopped_right_after_it_started_leaves_the_connection_whole(
    broker: Broker,
) -> None:
    """Stopping lands while the consumer opens channels (re-drive, depth gauges): the broker must
    never see a channel closed before it was opened, or it closes the whole connection that the
    service's publishers and other consumers share (CHANNEL_ERROR - expected 'channel.open')."""
    connection = broker.connection
    consumer = EventConsumer(broker, "orders", on_order_created(Recorder()))
    for attempt in range(15):
        async with consuming(consumer):
            await asyncio.sleep(attempt * 0.001)
    await asyncio.sleep(1.0)  # the broker's answer to a bad close would have arrived by now
    assert not connection.is_closed
    assert broker.connection is connection
    async with consuming(consumer):
        await consumer.check()
