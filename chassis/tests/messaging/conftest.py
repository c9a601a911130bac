"""Fixtures for the messaging specs: a fresh database and an isolated AMQP namespace per test.

`run_id`, `create_database`, `amqp_url` and `amqp_isolation` are stand-ins for the chassis
testing plugin until it lands.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import aio_pika
import asyncpg
import pytest
from aio_pika.abc import AbstractIncomingMessage

from chassis.messaging import INBOX_DDL, OUTBOX_DDL, Broker
from chassis.settings import AmqpSettings

POSTGRES_URL = os.environ.get("POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432")


@dataclass(frozen=True)
class AmqpIsolation:
    exchange: str
    queue_prefix: str


@pytest.fixture(scope="session")
def run_id() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture(scope="session")
def amqp_url() -> str:
    return os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


@pytest.fixture(scope="session")
async def create_database(run_id: str) -> AsyncIterator[Callable[[str], Awaitable[str]]]:
    created: list[str] = []

    async def create(name: str) -> str:
        database = f"t_{run_id}_{name}"[:63]
        conn = await asyncpg.connect(f"{POSTGRES_URL}/postgres")
        try:
            await conn.execute(f'CREATE DATABASE "{database}"')
        finally:
            await conn.close()
        created.append(database)
        return f"{POSTGRES_URL}/{database}"

    yield create
    conn = await asyncpg.connect(f"{POSTGRES_URL}/postgres")
    try:
        for database in created:
            await conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture(scope="session")
async def amqp_isolation(run_id: str, amqp_url: str) -> AsyncIterator[AmqpIsolation]:
    isolation = AmqpIsolation(exchange=f"test.{run_id}.events", queue_prefix=f"test.{run_id}.")
    yield isolation
    listing = await asyncio.create_subprocess_exec(
        "rabbitmqctl",
        "list_queues",
        "name",
        "-q",
        "--no-table-headers",
        stdout=asyncio.subprocess.PIPE,
    )
    listed, _ = await listing.communicate()
    connection = await aio_pika.connect(amqp_url, timeout=10)
    async with connection:
        channel = await connection.channel()
        for name in listed.decode().split():
            if name.startswith(isolation.queue_prefix):
                await channel.queue_delete(name)
        for exchange in (isolation.exchange, f"{isolation.exchange}.dlx"):
            await channel.exchange_delete(exchange)


# --- messaging-specific fixtures -----------------------------------------------------------


@pytest.fixture
def amqp_settings(amqp_url: str, amqp_isolation: AmqpIsolation) -> AmqpSettings:
    return AmqpSettings(
        amqp_url=amqp_url,
        events_exchange=amqp_isolation.exchange,
        # Each test gets its own queues, so a leftover message cannot leak into the next spec.
        queue_prefix=f"{amqp_isolation.queue_prefix}{uuid.uuid4().hex[:6]}.",
        delivery_limit=2,
    )


@pytest.fixture
async def broker(amqp_settings: AmqpSettings) -> AsyncIterator[Broker]:
    broker = Broker(amqp_settings, "messaging-tests", connection_name=f"{uuid.uuid4()}")
    await broker.connect()
    yield broker
    await broker.close()


@pytest.fixture
async def database_url(create_database: Callable[[str], Awaitable[str]]) -> str:
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
    channel = await connection.channel()
    exchange = await channel.declare_exchange(
        amqp_settings.events_exchange, aio_pika.ExchangeType.TOPIC, durable=True
    )
    queue = await channel.declare_queue(exclusive=True)
    await queue.bind(exchange, routing_key="#")
    recorder = Tap()
    await queue.consume(recorder.on_message)
    yield recorder
    await connection.close()
