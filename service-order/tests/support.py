"""Helpers of the order specs: waiting for a condition or for SERVING, recording the events on an
exchange, and reading RPC errors and Prometheus samples."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import aio_pika
import grpc
import pytest
from aio_pika.abc import AbstractIncomingMessage
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY

from chassis.messaging import topology
from chassis.settings import AmqpSettings

M = TypeVar("M", bound=Message)


async def eventually(
    condition: Callable[[], Awaitable[bool]], *, within: float = 20.0, every: float = 0.05
) -> None:
    """Wait until `condition` holds (a bound on waiting, not a timing assertion)."""
    async with asyncio.timeout(within):
        while True:
            if await condition():
                return
            await asyncio.sleep(every)


async def wait_serving(address: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    async with grpc.aio.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while True:
            with contextlib.suppress(grpc.aio.AioRpcError):
                reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{address} is not SERVING after {timeout_s} s")
            await asyncio.sleep(0.1)


async def rpc_error(call: Awaitable[object]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


def sample(name: str, **labels: str) -> float:
    """A Prometheus sample of this process (0 when never recorded)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


@dataclass(frozen=True)
class Received:
    event_type: str
    message: AbstractIncomingMessage


class Tap:
    """Records every message published to an exchange (an exclusive queue bound to `#`)."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self._arrived = asyncio.Condition()

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        await message.ack()
        async with self._arrived:
            self.received.append(Received(message.type or "", message))
            self._arrived.notify_all()

    def messages(self, order_id: str, event_type: type[Message]) -> list[AbstractIncomingMessage]:
        name = event_type.DESCRIPTOR.full_name
        return [
            r.message
            for r in self.received
            if r.event_type == name and r.message.correlation_id == order_id
        ]

    def events(self, order_id: str, event_type: type[M]) -> list[M]:
        return [event_type.FromString(m.body) for m in self.messages(order_id, event_type)]

    async def wait_for(
        self, order_id: str, event_type: type[Message], count: int = 1, within: float = 20.0
    ) -> list[AbstractIncomingMessage]:
        async with self._arrived:
            await asyncio.wait_for(
                self._arrived.wait_for(lambda: len(self.messages(order_id, event_type)) >= count),
                within,
            )
        return self.messages(order_id, event_type)


@contextlib.asynccontextmanager
async def open_tap(settings: AmqpSettings) -> AsyncIterator[Tap]:
    connection = await aio_pika.connect(settings.amqp_url, timeout=10)
    try:
        await topology.declare_events_exchange(connection, settings)
        channel = await connection.channel()
        exchange = await channel.get_exchange(settings.events_exchange)
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(exchange, routing_key="#")
        recorder = Tap()
        await queue.consume(recorder.on_message)
        yield recorder
    finally:
        await connection.close()
