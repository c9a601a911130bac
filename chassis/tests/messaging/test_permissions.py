"""Specs of a service's broker user of least privilege (`topology.service_resources`): with exactly
those rights the chassis declares its topology, publishes, consumes, dead-letters, re-drives a
dead-letter queue and the events nobody was bound to; another service's queue and any other name
are refused."""

from __future__ import annotations

import os
import secrets
import uuid
from collections.abc import AsyncIterator

import aio_pika
import aiormq
import pytest

from chassis.accounts import RabbitmqAdmin, rabbitmq_users
from chassis.accounts.plan import Credentials, RabbitmqAccount
from chassis.messaging import Broker, EventConsumer, redrive, topology
from chassis.settings import AmqpSettings
from chassis.testing.accounts import with_user

from .events import order_created
from .support import consuming, eventually, on_order_created, queue_is

QUEUE = "orders"


class Flaky:
    """A handler failing for the orders in `failing` until it is fixed."""

    def __init__(self) -> None:
        self.handled: list[str] = []
        self.failing: set[str] = set()

    async def __call__(self, event: object) -> None:
        order_id = getattr(event, "order_id", "")
        if order_id in self.failing:
            raise RuntimeError(f"cannot handle {order_id} yet")
        self.handled.append(order_id)

    async def has(self, order_id: str) -> bool:
        return order_id in self.handled


@pytest.fixture
async def service_settings(amqp_settings: AmqpSettings, run_id: str) -> AsyncIterator[AmqpSettings]:
    """`amqp_settings` logging in as a user of its own limited to the queue `orders`."""
    admin = RabbitmqAdmin(os.environ.get("RABBITMQ_ADMIN_URL", "rabbitmqctl"))
    user = f"t_{run_id}_{uuid.uuid4().hex[:6]}_orders"
    url = with_user(amqp_settings.amqp_url, user, secrets.token_hex(16))
    account = RabbitmqAccount(
        "orders",
        Credentials.from_url(url, "AMQP_URL"),
        "/",
        topology.service_resources(amqp_settings, QUEUE),
    )
    await rabbitmq_users.apply(admin, (account,))
    await eventually(lambda: _logs_in(url))
    yield amqp_settings.model_copy(update={"amqp_url": url})
    await admin.delete_user(user)


async def _logs_in(url: str) -> bool:
    try:
        connection = await aio_pika.connect(url, timeout=5)
    except aio_pika.exceptions.AMQPError:
        return False
    await connection.close()
    return True


@pytest.fixture
async def service_broker(service_settings: AmqpSettings) -> AsyncIterator[Broker]:
    broker = Broker(service_settings, "least-privilege", connection_name=f"{uuid.uuid4()}")
    await broker.connect()
    yield broker
    await broker.close()


async def test_a_service_user_runs_the_whole_consumer_life_with_its_own_rights_only(
    service_broker: Broker,
) -> None:
    handler = Flaky()
    early = order_created()
    # Published before the queue exists: kept by the alternate exchange, re-driven at bind.
    await service_broker.publish(early)
    consumer = EventConsumer(service_broker, QUEUE, on_order_created(handler))
    broken = order_created()
    handler.failing.add(broken.order_id)
    async with consuming(consumer):
        await eventually(lambda: handler.has(early.order_id))
        await service_broker.publish(broken)
        await eventually(lambda: queue_is(service_broker, consumer.dead_letter_queue_name, 1))
        handler.failing.clear()
        moved = await redrive.redrive_dead_letters(service_broker, consumer.queue_name)
        assert moved == 1
        await eventually(lambda: handler.has(broken.order_id))
    assert await service_broker.queue_depth(consumer.dead_letter_queue_name) == 0


async def test_another_queue_and_any_other_name_are_refused(
    service_settings: AmqpSettings, broker: Broker, amqp_settings: AmqpSettings
) -> None:
    # Another service's queue, declared by the platform's administrator.
    other = topology.queue_name(amqp_settings, "payments")
    await topology.declare_service_queue(broker.connection, amqp_settings, "payments", ["#"])
    connection = await aio_pika.connect(service_settings.amqp_url, timeout=10)
    async with connection:
        attempts = {
            "read another queue": lambda channel: _get(channel, other),
            "consume it": lambda channel: _consume(channel, other),
            "declare it": lambda channel: channel.declare_queue(other, durable=True),
            "declare a queue of no service": lambda channel: channel.declare_queue(
                topology.queue_name(amqp_settings, "anything"), durable=True
            ),
            "declare an exchange": lambda channel: channel.declare_exchange(
                f"{amqp_settings.events_exchange}.mine", aio_pika.ExchangeType.TOPIC
            ),
        }
        refused = []
        for what, attempt in attempts.items():
            channel = await connection.channel()
            try:
                await attempt(channel)
            except aiormq.exceptions.ChannelAccessRefused:
                refused.append(what)
        assert refused == list(attempts)


async def _get(channel: aio_pika.abc.AbstractChannel, name: str) -> None:
    queue = await channel.declare_queue(name, passive=True)  # a name is no secret: allowed
    await queue.get(fail=False)


async def _consume(channel: aio_pika.abc.AbstractChannel, name: str) -> None:
    async def ack(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        await message.ack()

    queue = await channel.declare_queue(name, passive=True)
    await queue.consume(ack)
