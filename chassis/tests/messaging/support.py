"""Helpers of the messaging specs: running a consumer or relay for a block, waiting for a
condition, reading the consumer metrics, and closing one connection from the broker side."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from prometheus_client import REGISTRY

from chassis.messaging import Broker, EventConsumer, OutboxRelay, Subscription
from chassis.messaging.inbox import Handler
from chassis.testing.waiting import eventually  # noqa: F401 - re-exported for the specs
from ecommerce.events.v1 import events_pb2

ORDER_CREATED = "ecommerce.events.v1.OrderCreated"


def on_order_created(handler: Handler) -> list[Subscription]:
    return [Subscription.of(events_pb2.OrderCreated, handler)]


@contextlib.asynccontextmanager
async def consuming(consumer: EventConsumer) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(consumer.run())
    try:
        await asyncio.wait_for(consumer.consuming.wait(), 20)
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@contextlib.asynccontextmanager
async def running(relay: OutboxRelay) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(relay.run())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def consumed(outcome: str, event_type: str = ORDER_CREATED) -> float:
    labels = {"event_type": event_type, "outcome": outcome}
    return REGISTRY.get_sample_value("events_consumed_total", labels) or 0.0


async def queue_is(broker: Broker, queue: str, depth: int) -> bool:
    return await broker.queue_depth(queue) == depth


async def close_connection_named(connection_name: str) -> None:
    """Close only this connection from the broker side, as a broker restart or blip would."""
    listing = await rabbitmqctl("list_connections", "pid", "client_properties")
    [pid] = [
        line.split("\t", 1)[0]
        for line in listing.splitlines()
        if f'{{"connection_name","{connection_name}"}}' in line
    ]
    await rabbitmqctl("close_connection", pid, "messaging spec: simulated outage")


async def rabbitmqctl(*args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        "rabbitmqctl", "-q", *args, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await process.communicate()
    assert process.returncode == 0, f"rabbitmqctl {args} failed"
    return out.decode()
