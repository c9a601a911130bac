"""`EventTap`: what a test sees of the events exchange. A throwaway exclusive queue bound to every
routing key records each event published during the block, decoded by the message classes the
test names; a test waits for and filters events by message type, as services subscribe.

```python
async with EventTap(amqp_settings, [events_pb2.StockReserved]) as tap:
    ... # make something publish
    [reserved] = await tap.wait_for(events_pb2.StockReserved, correlation_id=order_id)
```
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import aio_pika
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection
from google.protobuf.message import Message

from chassis.messaging import topology
from chassis.settings import AmqpSettings


@dataclass(frozen=True, slots=True)
class TappedEvent:
    event_type: str  # the AMQP `type`: the full protobuf name
    routing_key: str
    correlation_id: str
    message_id: str
    event: Message | None  # None when the type was not one the tap was told about
    headers: dict[str, Any]
    seen_at: float  # time.perf_counter() when the tap received it


class EventTap:
    def __init__(self, settings: AmqpSettings, message_classes: Iterable[type[Message]]) -> None:
        self._settings = settings
        self._classes = {cls.DESCRIPTOR.full_name: cls for cls in message_classes}
        self._connection: AbstractRobustConnection | None = None
        self.events: list[TappedEvent] = []
        self._arrived = asyncio.Condition()

    async def __aenter__(self) -> Self:
        self._connection = await aio_pika.connect_robust(self._settings.amqp_url, timeout=10)
        await topology.declare_events_exchange(self._connection, self._settings)
        channel = await self._connection.channel()
        exchange = await channel.get_exchange(self._settings.events_exchange)
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(exchange, routing_key="#")
        await queue.consume(self._record, no_ack=True)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._connection is not None:
            await self._connection.close()

    async def _record(self, message: AbstractIncomingMessage) -> None:
        cls = self._classes.get(message.type or "")
        event = cls.FromString(message.body) if cls is not None else None
        tapped = TappedEvent(
            event_type=message.type or "",
            routing_key=message.routing_key or "",
            correlation_id=message.correlation_id or "",
            message_id=message.message_id or "",
            event=event,
            headers=dict(message.headers or {}),
            seen_at=time.perf_counter(),
        )
        async with self._arrived:
            self.events.append(tapped)
            self._arrived.notify_all()

    def matching(self, event_type: type[Message] | None = None, **fields: str) -> list[TappedEvent]:
        """The events of `event_type` (any type when None) whose properties equal `fields`."""
        name = None if event_type is None else event_type.DESCRIPTOR.full_name
        return [
            e
            for e in self.events
            if (name is None or e.event_type == name)
            and all(getattr(e, field) == value for field, value in fields.items())
        ]

    async def wait_for(
        self,
        event_type: type[Message] | None = None,
        *,
        count: int = 1,
        within: float = 20.0,
        **fields: str,
    ) -> list[TappedEvent]:
        """The matching events once there are at least `count` of them (TimeoutError past
        `within` seconds)."""
        async with self._arrived:
            await asyncio.wait_for(
                self._arrived.wait_for(lambda: len(self.matching(event_type, **fields)) >= count),
                within,
            )
        return self.matching(event_type, **fields)
