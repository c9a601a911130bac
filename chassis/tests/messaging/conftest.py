"""Fixtures for the messaging specs: per test, a fresh database with the outbox and inbox, and
queues of its own under the run's AMQP isolation (from the chassis testing plugin)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import aio_pika
import asyncpg
import pytest
from aio_pika.abc import AbstractIncomingMessage

from chassis.messaging import INBOX_DDL, OUTBOX_DDL, Broker, topology
from chassis.settings import AmqpSettings
from chassis.testing.plugin import AmqpIsolation, CreateDatabase


@pytest.fixture
def amqp_settings(amqp_url: str, amqp_isolation: AmqpIsolation) -> AmqpSettings:
    # Each test gets its own exchange and queues (all under the run's prefix, removed at the end),
    # so a leftover or unrouted message cannot leak into the next spec.
    prefix = f"{amqp_isolation.queue_prefix}{uuid.uuid4().hex[:6]}."
    return AmqpSettings(
        amqp_url=amqp_url,
        events_exchange=f"{prefix}events",
        queue_prefix=prefix,
        delivery_limit=2,
    )


@pytest.fixture
async def broker(amqp_settings: AmqpSettings) -> AsyncIterator[Broker]:
    broker = Broker(amqp_settings, "messaging-tests", connection_name=f"{uuid.uuid4()}")
    await broker.connect()
    yield broker
    await broker.close()


@pytest.fixture
async def database_url(create_database: CreateDatabase) -> str:
    url = await create_database(uuid.uuid4().hex[:8])
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(OUTBOX_DDL)
        await conn.execute(INBOX_DDL)
    finally:
        await conn.close()
    return url


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=8)
    yield pool
    await pool.close()


class Tap:
    """A throwaway queue bound to the events exchange that records every message it receives."""

    def __init__(self) -> None:
        self.messages: list[AbstractIncomingMessage] = []
        self._arrived = asyncio.Condition()

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        await message.ack()
        async with self._arrived:
            self.messages.append(message)
            self._arrived.notify_all()

    async def wait_for(self, count: int, within: float = 20.0) -> list[AbstractIncomingMessage]:
        async with self._arrived:
            await asyncio.wait_for(
                self._arrived.wait_for(lambda: len(self.messages) >= count), within
            )
        return list(self.messages)


@pytest.fixture
async def tap(amqp_settings: AmqpSettings) -> AsyncIterator[Tap]:
    connection = await aio_pika.connect(amqp_settings.amqp_url, timeout=10)
    await topology.declare_events_exchange(connection, amqp_settings)
    channel = await connection.channel()
    exchange = await channel.get_exchange(amqp_settings.events_exchange)
    queue = await channel.declare_queue(exclusive=True)
    await queue.bind(exchange, routing_key="#")
    recorder = Tap()
    await queue.consume(recorder.on_message)
    yield recorder
    await connection.close()
