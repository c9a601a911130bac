"""Outbox and inbox throughput on real Postgres and RabbitMQ: prints figures, asserts nothing.

Usage: uv run python bench/outbox/bench_outbox.py [--events 5000] [--relays 1 2] [--prefetch 64]
Uses POSTGRES_URL and AMQP_URL (defaults: localhost); everything it creates is named
bench_<id> / bench.<id>. and removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import AsyncIterator

import aio_pika
import asyncpg

from chassis.messaging import (
    INBOX_DDL,
    OUTBOX_DDL,
    Broker,
    EventConsumer,
    OutboxRelay,
    Subscription,
    add_to_outbox,
)
from chassis.messaging.consumer import EVENTS_CONSUMED
from chassis.postgres import database_url, ensure_database
from chassis.settings import AmqpSettings
from chassis.unit_of_work import HandledOnce, UnitOfWork
from ecommerce.events.v1 import events_pb2

POSTGRES_URL = os.environ.get("POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432")
AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
EVENT_TYPE = "ecommerce.events.v1.OrderCreated"


def order_created() -> events_pb2.OrderCreated:
    return events_pb2.OrderCreated(
        order_id=str(uuid.uuid4()),
        user_id=str(uuid.uuid4()),
        lines=[events_pb2.OrderLine(product_id=str(uuid.uuid4()), quantity=1, unit_price_cents=9)],
        total_cents=9,
        currency="USD",
    )


async def commit(pool: asyncpg.Pool, count: int, per_transaction: int = 10) -> None:
    async def writer(batches: int) -> None:
        for _ in range(batches):
            async with pool.acquire() as conn, conn.transaction():
                for _ in range(per_transaction):
                    event = order_created()
                    await add_to_outbox(conn, event)

    batches = count // per_transaction
    writers = 8
    await asyncio.gather(*(writer(batches // writers) for _ in range(writers)))


async def unpublished(pool: asyncpg.Pool) -> int:
    return int(await pool.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL"))


async def wait_until(pool: asyncpg.Pool) -> None:
    while True:
        if not await unpublished(pool):
            return
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def running(*coroutines: object) -> AsyncIterator[None]:
    tasks = [asyncio.create_task(c) for c in coroutines]  # type: ignore[arg-type]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def bench_relay_drain(
    url: str, pool: asyncpg.Pool, broker: Broker, events: int, relays: int
) -> float:
    """Events/s for relays draining a backlog committed while none ran."""
    await commit(pool, events)
    started = time.perf_counter()
    async with running(*(OutboxRelay(url, broker).run() for _ in range(relays))):
        await wait_until(pool)
    return events / (time.perf_counter() - started)


async def bench_relay_live(
    url: str, pool: asyncpg.Pool, broker: Broker, events: int, relays: int
) -> float:
    """Events/s from the first commit to the last confirm, writers and relays running together."""
    async with running(*(OutboxRelay(url, broker).run() for _ in range(relays))):
        await asyncio.sleep(0.3)
        started = time.perf_counter()
        await commit(pool, events)
        await wait_until(pool)
        return events / (time.perf_counter() - started)


def consumed_so_far() -> float:
    return sum(
        EVENTS_CONSUMED.labels(event_type=EVENT_TYPE, outcome=outcome)._value.get()
        for outcome in ("processed", "duplicate")
    )


async def bench_consumer(
    broker: Broker, pool: asyncpg.Pool, events: int, prefetch: int
) -> tuple[float, int]:
    """Events/s through EventConsumer + a unit of work with its inbox claim, 10% of deliveries
    being duplicates."""
    await pool.execute("CREATE TABLE IF NOT EXISTS effects (order_id uuid PRIMARY KEY)")

    async def effect(uow: UnitOfWork, event: events_pb2.OrderCreated) -> None:
        await uow.connection.execute("INSERT INTO effects VALUES ($1)", uuid.UUID(event.order_id))

    once = HandledOnce(lambda: UnitOfWork(pool, consumer="bench"))
    consumer = EventConsumer(
        broker,
        "bench",
        [Subscription.of(events_pb2.OrderCreated, once(effect))],
        prefetch=prefetch,
    )
    # The relay scenarios published to an exchange no queue was bound to: forget those events.
    channel = await broker.channel()
    unrouted = await channel.declare_queue(
        f"{broker.settings.events_exchange}.unrouted", passive=True
    )
    await unrouted.purge()
    await channel.close()
    # Declare and bind the queue, then stop consuming so the backlog builds up.
    async with running(consumer.run()):
        await consumer.consuming.wait()
    unique = [order_created() for _ in range(events * 9 // 10)]
    deliveries = [*unique, *unique[: events - len(unique)]]
    await asyncio.gather(*(broker.publish(e) for e in deliveries))
    baseline = consumed_so_far()
    started = time.perf_counter()
    async with running(consumer.run()):
        while True:
            if consumed_so_far() - baseline >= len(deliveries):
                break
            await asyncio.sleep(0.01)
    elapsed = time.perf_counter() - started
    return len(deliveries) / elapsed, int(await pool.fetchval("SELECT count(*) FROM effects"))


async def publish_ceiling(broker: Broker, events: int) -> float:
    """Events/s of publishing with confirms alone (pipelined, as the relay does), no database."""
    messages = [order_created() for _ in range(events)]
    started = time.perf_counter()
    await asyncio.gather(*(broker.publish(e) for e in messages))
    return events / (time.perf_counter() - started)


async def consume_ceiling(
    broker: Broker, settings: AmqpSettings, events: int, prefetch: int
) -> float:
    """Deliveries/s of consuming a quorum queue with a manual ack each, no database."""
    channel = await broker.connection.channel()
    name = f"{settings.queue_prefix}ceiling"
    queue = await channel.declare_queue(name, durable=True, arguments={"x-queue-type": "quorum"})
    body = order_created().SerializeToString()
    publisher = await broker.connection.channel(publisher_confirms=True)
    await asyncio.gather(
        *(publisher.default_exchange.publish(aio_pika.Message(body), name) for _ in range(events))
    )
    await publisher.close()
    await channel.set_qos(prefetch_count=prefetch)
    done = asyncio.Event()
    seen = 0

    async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        nonlocal seen
        await message.ack()
        seen += 1
        if seen >= events:
            done.set()

    started = time.perf_counter()
    tag = await queue.consume(on_message)
    await done.wait()
    elapsed = time.perf_counter() - started
    await queue.cancel(tag)
    await channel.queue_delete(name)
    await channel.close()
    return events / elapsed


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--relays", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--prefetch", type=int, default=64)
    args = parser.parse_args()

    run = uuid.uuid4().hex[:8]
    settings = AmqpSettings(
        amqp_url=AMQP_URL, events_exchange=f"bench.{run}.events", queue_prefix=f"bench.{run}."
    )
    broker = Broker(settings, "bench-outbox")
    await broker.connect()
    rows: list[tuple[str, float, str]] = []
    created: list[str] = []
    try:
        publishing = await publish_ceiling(broker, args.events)
        consuming = await consume_ceiling(broker, settings, args.events, args.prefetch)
        for relays in args.relays:
            for mode, bench in (("drain", bench_relay_drain), ("live", bench_relay_live)):
                name = f"bench_{run}_{mode}_{relays}"
                await ensure_database(POSTGRES_URL, name)
                created.append(name)
                url = database_url(POSTGRES_URL, name)
                async with asyncpg.create_pool(url, min_size=8, max_size=10) as pool:
                    await pool.execute(OUTBOX_DDL)
                    rate = await bench(url, pool, broker, args.events, relays)
                label = f"outbox {mode}, {relays} relay(s), {args.events} events"
                rows.append((label, rate, "publish with confirms"))

        name = f"bench_{run}_inbox"
        await ensure_database(POSTGRES_URL, name)
        created.append(name)
        async with asyncpg.create_pool(database_url(POSTGRES_URL, name), max_size=10) as pool:
            await pool.execute(INBOX_DDL)
            rate, effects = await bench_consumer(broker, pool, args.events, args.prefetch)
        rows.append(
            (
                f"consumer + inbox, prefetch {args.prefetch}, {args.events} deliveries"
                f" ({effects} unique effects)",
                rate,
                "consume with ack",
            )
        )
    finally:
        await cleanup(broker, settings, created)

    ceilings = {"publish with confirms": publishing, "consume with ack": consuming}
    print(
        f"### Outbox and inbox (`bench/outbox/bench_outbox.py`), {time.strftime('%Y-%m-%d %H:%M')}"
    )
    print(
        "\nCeilings measured in the same run on the same broker, no database: publishing the same"
        " events with confirms (pipelined, as the relay does), and consuming a quorum queue with"
        f" a manual ack each (prefetch {args.prefetch}).\n"
    )
    print("| scenario | events/s | ceiling | ratio |\n| --- | ---: | --- | ---: |")
    for label, rate, ceiling in rows:
        best = ceilings[ceiling]
        print(f"| {label} | {rate:,.0f} | {ceiling}: {best:,.0f}/s | {rate / best:.0%} |")


async def cleanup(broker: Broker, settings: AmqpSettings, databases: list[str]) -> None:
    channel = await broker.connection.channel()
    queues = ("bench", "bench.dlq", "ceiling")
    for queue in (f"{settings.queue_prefix}{name}" for name in queues):
        with contextlib.suppress(aio_pika.exceptions.AMQPError):
            await channel.queue_delete(queue)
    exchanges = [settings.events_exchange, f"{settings.events_exchange}.dlx"]
    with contextlib.suppress(aio_pika.exceptions.AMQPError):
        await channel.queue_delete(f"{settings.events_exchange}.unrouted")
    for exchange in [*exchanges, f"{settings.events_exchange}.unrouted"]:
        with contextlib.suppress(aio_pika.exceptions.AMQPError):
            await channel.exchange_delete(exchange)
    await broker.close()
    conn = await asyncpg.connect(database_url(POSTGRES_URL, "postgres"))
    try:
        for name in databases:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


if __name__ == "__main__":
    asyncio.run(main())
