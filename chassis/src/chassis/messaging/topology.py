"""Broker topology: the events topic exchange, its dead-letter exchange, per-service quorum queues.

Each service queue dead-letters into `<exchange>.dlx` with its own name as routing key, so every
service has a private `<queue>.dlq`. Dead-lettering is at-least-once (quorum queues otherwise drop a
message whose dead-lettering fails), which needs `reject-publish` overflow on the source queue.
"""

from __future__ import annotations

from collections.abc import Iterable

from aio_pika import ExchangeType
from aio_pika.abc import AbstractRobustChannel, AbstractRobustExchange, AbstractRobustQueue

from chassis.settings import AmqpSettings


def queue_name(settings: AmqpSettings, queue: str) -> str:
    return f"{settings.queue_prefix}{queue}"


def dead_letter_queue_name(settings: AmqpSettings, queue: str) -> str:
    return f"{queue_name(settings, queue)}.dlq"


def dead_letter_exchange_name(settings: AmqpSettings) -> str:
    return f"{settings.events_exchange}.dlx"


async def declare_events_exchange(
    channel: AbstractRobustChannel, settings: AmqpSettings
) -> AbstractRobustExchange:
    return await channel.declare_exchange(
        settings.events_exchange, ExchangeType.TOPIC, durable=True
    )


async def declare_service_queue(
    channel: AbstractRobustChannel, settings: AmqpSettings, queue: str, routing_keys: Iterable[str]
) -> AbstractRobustQueue:
    """Declare the service's quorum queue, its DLQ, and bind it to `routing_keys`."""
    name = queue_name(settings, queue)
    exchange = await declare_events_exchange(channel, settings)
    dlx = await channel.declare_exchange(
        dead_letter_exchange_name(settings), ExchangeType.DIRECT, durable=True
    )
    dlq = await channel.declare_queue(
        dead_letter_queue_name(settings, queue),
        durable=True,
        arguments={"x-queue-type": "quorum"},
    )
    await dlq.bind(dlx, routing_key=name)
    service_queue = await channel.declare_queue(
        name,
        durable=True,
        arguments={
            "x-queue-type": "quorum",
            "x-delivery-limit": settings.delivery_limit,
            "x-dead-letter-exchange": dlx.name,
            "x-dead-letter-routing-key": name,
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        },
    )
    for key in routing_keys:
        await service_queue.bind(exchange, routing_key=key)
    return service_queue
