"""Specs of the event consumer and the Postgres inbox, against real Postgres and RabbitMQ."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import aio_pika
import asyncpg
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from chassis.messaging import Broker, EventConsumer, postgres_inbox
from chassis.settings import AmqpSettings
from ecommerce.events.v1 import events_pb2

from .events import order_created

ORDER_CREATED = "ecommerce.events.v1.OrderCreated"


@contextlib.asynccontextmanager
async def consuming(consumer: EventConsumer) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(consumer.run())
    try:
        # Publishing before the queue is bound would route the event nowhere.
        await asyncio.wait_for(consumer.consuming.wait(), 20)
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def eventually(
    condition: Callable[[], Awaitable[bool]], within: float = 20.0, every: float = 0.05
) -> None:
    async with asyncio.timeout(within):
        while True:
            if await condition():
                return
            await asyncio.sleep(every)


def consumed(outcome: str, event_type: str = ORDER_CREATED) -> float:
    labels = {"event_type": event_type, "outcome": outcome}
    return REGISTRY.get_sample_value("events_consumed_total", labels) or 0.0


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
    consumer = EventConsumer(broker, "orders", {"order.created": recorder})
    event = order_created(quantity=3)
    async with consuming(consumer):
        await broker.publish(event, routing_key="order.created", correlation_id=event.order_id)
        await eventually(lambda: recorder.has(1))
        await eventually(lambda: _is_empty(broker, consumer.queue_name))

    assert recorder.events == [event]
    assert isinstance(recorder.events[0], events_pb2.OrderCreated)


async def _is_empty(broker: Broker, queue: str) -> bool:
    return await broker.queue_depth(queue) == 0


async def test_handler_runs_in_the_trace_of_the_publisher(broker: Broker) -> None:
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        trace.set_tracer_provider(TracerProvider())
    recorder = Recorder()
    consumer = EventConsumer(broker, "orders", {"order.created": recorder})
    event = order_created()
    async with consuming(consumer):
        with trace.get_tracer("spec").start_as_current_span("checkout") as span:
            await broker.publish(event, routing_key="order.created", correlation_id="c")
        await eventually(lambda: recorder.has(1))

    assert recorder.trace_ids == [span.get_span_context().trace_id]


async def test_duplicate_delivery_of_an_event_has_one_effect(
    broker: Broker, pool: asyncpg.Pool
) -> None:
    await pool.execute("CREATE TABLE reservations (order_id uuid, quantity int)")

    async def reserve(conn: asyncpg.Connection, event: events_pb2.OrderCreated) -> None:
        await conn.execute(
            "INSERT INTO reservations VALUES ($1, $2)",
            uuid.UUID(event.order_id),
            event.lines[0].quantity,
        )

    handler = postgres_inbox(pool, "product-reservations", reserve)
    consumer = EventConsumer(broker, "products", {"order.created": handler})
    event = order_created(quantity=2)
    processed, duplicates = consumed("processed"), consumed("duplicate")
    async with consuming(consumer):
        for _ in range(3):
            await broker.publish(event, routing_key="order.created", correlation_id="c")

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

    async def flaky(conn: asyncpg.Connection, event: events_pb2.OrderCreated) -> None:
        nonlocal calls
        calls += 1
        await conn.execute("INSERT INTO effects VALUES ($1)", uuid.UUID(event.event_id))
        if calls == 1:
            raise ConnectionResetError("downstream went away")

    consumer = EventConsumer(
        broker, "products", {"order.created": postgres_inbox(pool, "flaky", flaky)}
    )
    event = order_created()
    async with consuming(consumer):
        await broker.publish(event, routing_key="order.created", correlation_id="c")

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
    consumer = EventConsumer(broker, "orders", {"order.created": recorder})
    labels = {"queue": consumer.queue_name, "event_type": ORDER_CREATED}
    behind = [order_created() for _ in range(5)]
    with capture_logs() as logs:
        async with consuming(consumer):
            for event in [poison, *behind]:
                await broker.publish(event, routing_key="order.created", correlation_id="c")
            await eventually(lambda: recorder.has(5))

            async def in_dlq() -> bool:
                return await broker.queue_depth(consumer.dead_letter_queue_name) == 1

            await eventually(in_dlq)

    assert recorder.events == behind
    # The first delivery plus `delivery_limit` redeliveries, then the broker dead-letters it.
    assert recorder.attempts[poison.order_id] == amqp_settings.delivery_limit + 1
    assert REGISTRY.get_sample_value("events_dead_lettered_total", labels) == 1
    [line] = [log for log in logs if "dead-letter" in log["event"]]
    assert line["message_id"] == poison.event_id
    assert line["log_level"] == "error"
    assert "cannot handle order" in line["error"]


async def test_message_of_an_unknown_type_goes_straight_to_the_dlq(broker: Broker) -> None:
    recorder = Recorder()
    consumer = EventConsumer(broker, "orders", {"order.created": recorder})
    async with consuming(consumer):
        exchange = await broker.connection.channel()
        events = await exchange.get_exchange(broker.settings.events_exchange)
        await events.publish(
            aio_pika.Message(b"\x00garbage", type="ecommerce.events.v1.NoSuchEvent"),
            routing_key="order.created",
        )

        async def in_dlq() -> bool:
            return await broker.queue_depth(consumer.dead_letter_queue_name) == 1

        await eventually(in_dlq)
    assert recorder.attempts == {}


@pytest.mark.slow
async def test_consumer_keeps_consuming_after_the_broker_closes_its_connection(
    amqp_settings: AmqpSettings, broker: Broker
) -> None:
    consumer_broker = Broker(amqp_settings, "messaging-tests", connection_name=str(uuid.uuid4()))
    await consumer_broker.connect()
    reconnected = asyncio.Event()
    consumer_broker.connection.reconnect_callbacks.add(lambda *_: reconnected.set())
    recorder = Recorder()
    consumer = EventConsumer(consumer_broker, "orders", {"order.created": recorder})
    try:
        async with consuming(consumer) as task:
            first, second = order_created(), order_created()
            await broker.publish(first, routing_key="order.created", correlation_id="c")
            await eventually(lambda: recorder.has(1))

            await close_connection_named(consumer_broker.connection_name)
            await asyncio.wait_for(reconnected.wait(), 30)

            await broker.publish(second, routing_key="order.created", correlation_id="c")
            await eventually(lambda: recorder.has(2), within=30)
            assert not task.done()
    finally:
        await consumer_broker.close()
    assert recorder.events == [first, second]


async def close_connection_named(connection_name: str) -> None:
    """Close only this connection from the broker side, as a broker restart or blip would."""
    listing = await _rabbitmqctl("list_connections", "pid", "client_properties")
    [pid] = [
        line.split("\t", 1)[0]
        for line in listing.splitlines()
        if f'{{"connection_name","{connection_name}"}}' in line
    ]
    await _rabbitmqctl("close_connection", pid, "messaging spec: simulated outage")


async def _rabbitmqctl(*args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        "rabbitmqctl", "-q", *args, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await process.communicate()
    assert process.returncode == 0, f"rabbitmqctl {args} failed"
    return out.decode()
