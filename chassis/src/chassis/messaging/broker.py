"""RabbitMQ connection for one service: robust connection, confirmed publishing, topology.

Every event leaves with the same AMQP properties (message_id, type, content_type, timestamp,
correlation_id, persistent delivery) and W3C trace context in its headers.

Every call to the broker has a deadline: a broker that accepts TCP but stops answering (or a
network that stops delivering) costs a caller at most that long. Connecting and opening a
channel take `connect_timeout` (also `rpc_timeout`, what the consumer and the re-drive give each
of their calls); a publish and its confirm `publish_timeout`; closing waits at most
`topology.CLOSE_TIMEOUT`, then leaves the close to finish on its own. A connection that stays
silent is found out by the AMQP heartbeat (`HEARTBEAT_SECONDS`, unless the URL sets `heartbeat`):
after three missed beats it is closed and the robust connection dials a new one.
"""

from __future__ import annotations

import asyncio
import os
import socket
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aio_pika
from aio_pika.abc import (
    AbstractExchange,
    AbstractRobustChannel,
    AbstractRobustConnection,
)
from google.protobuf.message import Message
from opentelemetry import propagate

from chassis.messaging import codec, topology
from chassis.messaging.envelope import occurred_at, stamp, stamp_time
from chassis.settings import AmqpSettings

# Heartbeat asked of the broker: a connection that stays silent for three of them (about 33 s)
# is closed and replaced. The default of RabbitMQ (60 s) left a dead connection 3 minutes.
HEARTBEAT_SECONDS = 10
# Pause between attempts to dial a lost connection again (aio-pika's default is 5 s): once the
# broker answers after a restart, the service is back within about a second.
RECONNECT_SECONDS = 1.0


class BrokerUnavailable(Exception):
    """The broker connection is not open (not connected yet, or reconnecting)."""


class ConfirmTimeout(BrokerUnavailable):
    """The broker did not confirm a publish in time; the event may or may not have arrived."""


@dataclass(frozen=True)
class OutgoingEvent:
    """An event ready for the wire: serialised body plus everything its AMQP properties need."""

    event_id: str
    event_type: str
    routing_key: str
    correlation_id: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    occurred_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @classmethod
    def of(cls, event: Message) -> OutgoingEvent:
        """Stamp and serialise `event`, carrying the current trace context. Published without
        an outbox there is no transaction: an unset `occurred_at` is the wall clock (UTC)."""
        envelope = stamp(event)
        stamp_time(event, datetime.now(UTC))
        headers: dict[str, str] = {}
        propagate.inject(headers)
        return cls(
            event_id=str(envelope.event_id),
            event_type=envelope.event_type,
            routing_key=envelope.routing_key,
            correlation_id=envelope.correlation_id,
            body=event.SerializeToString(),
            headers=headers,
            occurred_at=occurred_at(event),
        )


class Broker:
    """A service's robust AMQP connection, its confirmed publishing channel and events exchange."""

    def __init__(
        self,
        settings: AmqpSettings,
        service_name: str,
        *,
        connection_name: str | None = None,
        connect_timeout: float = 10.0,
        publish_timeout: float = 5.0,
    ) -> None:
        self.settings = settings
        self.service_name = service_name
        # Operators (and tests) find this process's connection by this name in rabbitmqctl.
        self.connection_name = (
            connection_name or f"{service_name}@{socket.gethostname()}:{os.getpid()}"
        )
        self._connect_timeout = connect_timeout
        self._publish_timeout = publish_timeout
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractRobustChannel | None = None
        self._exchange: AbstractExchange | None = None
        # One publishing channel at a time: after a timeout it is replaced once, under this lock,
        # and only if it is still the one that failed (a batch of publishes timing out together
        # must not open one channel each).
        self._channel_lock = asyncio.Lock()
        self._reconnected = asyncio.Event()

    @property
    def rpc_timeout(self) -> float:
        """The deadline of one AMQP call (a declaration, a consume, a get) made on this broker."""
        return self._connect_timeout

    @property
    def connection(self) -> AbstractRobustConnection:
        if self._connection is None:
            raise BrokerUnavailable("broker is not connected")
        return self._connection

    async def connect(self) -> None:
        """Open the connection and publishing channel, declare the events exchange (with its
        alternate exchange, so no event is dropped for want of a bound queue)."""
        url = self.settings.amqp_url
        heartbeat: dict[str, Any] = {} if "heartbeat=" in url else {"heartbeat": HEARTBEAT_SECONDS}
        connection = await aio_pika.connect_robust(
            url,
            timeout=self._connect_timeout,
            client_properties={"connection_name": self.connection_name},
            reconnect_interval=RECONNECT_SECONDS,
            **heartbeat,
        )
        connection.reconnect_callbacks.add(lambda *_: self._reconnected.set())
        try:
            async with asyncio.timeout(self._connect_timeout):
                await topology.declare_events_exchange(connection, self.settings)
            await self._open_publishing_channel(connection)
        except BaseException:
            await topology.close_bounded(connection)
            raise
        self._connection = connection

    async def _open_publishing_channel(
        self, connection: AbstractRobustConnection
    ) -> AbstractExchange:
        async with asyncio.timeout(self._connect_timeout):
            channel = await topology.open_channel(connection, publisher_confirms=True)
            exchange = await topology.get_events_exchange(channel, self.settings)
        self._channel, self._exchange = channel, exchange
        return exchange

    async def _publishing_exchange(self, connection: AbstractRobustConnection) -> AbstractExchange:
        exchange = self._exchange
        if exchange is not None:
            return exchange
        async with self._channel_lock:
            if self._exchange is not None:  # another publish opened it while we waited
                return self._exchange
            return await self._open_publishing_channel(connection)

    async def _drop_publishing_channel(self, failed: AbstractExchange | None) -> None:
        """After a publish that timed out, the next one opens a fresh channel: a channel that
        lost a confirm may never resolve another (aio-pika issue 689). Only the channel that
        failed is dropped, once, however many publishes on it timed out."""
        async with self._channel_lock:
            if failed is None or self._exchange is not failed:
                return
            old, self._channel, self._exchange = self._channel, None, None
        if old is not None:
            # In the background: the broker may not answer (the reason the publish timed out).
            await topology.close_bounded(old, within=0)

    async def reconnected_within(self, seconds: float) -> bool:
        """Wait at most `seconds` for the connection to come back from a loss; whether it did.
        A relay backing off after a broker outage resumes as soon as the broker is back."""
        self._reconnected.clear()
        try:
            async with asyncio.timeout(seconds):
                await self._reconnected.wait()
        except TimeoutError:
            return False
        return True

    @property
    def publishing_channel(self) -> AbstractRobustChannel | None:
        """The channel publishes go through right now (None until the next publish opens one)."""
        return self._channel

    async def close(self) -> None:
        """Close the connection, waiting for the broker at most `topology.CLOSE_TIMEOUT`."""
        if self._connection is not None:
            await topology.close_bounded(self._connection)
        self._connection = None
        self._channel = None
        self._exchange = None

    @property
    def connected(self) -> bool:
        """Whether the connection is open right now."""
        return self._connection is not None and self._connection.connected.is_set()

    async def check(self) -> None:
        """Readiness: raises `BrokerUnavailable` unless the connection is open right now."""
        if not self.connected:
            raise BrokerUnavailable("broker connection is not open")

    async def channel(self, *, prefetch: int = 0) -> AbstractRobustChannel:
        """A new robust channel on the service connection (consumers use one each)."""
        async with asyncio.timeout(self._connect_timeout):
            channel: AbstractRobustChannel = await topology.open_channel(self.connection)
            if prefetch:
                await channel.set_qos(prefetch_count=prefetch)
        return channel

    async def publish(self, event: Message) -> None:
        """Publish `event` now (no outbox: tools and tests), its routing key and correlation id
        derived from its declaration, waiting for the broker's confirm. A confirm that does not
        come is retried once on a fresh channel: delivery is at-least-once, consumers dedupe."""
        outgoing = OutgoingEvent.of(event)
        try:
            await self.publish_outgoing(outgoing)
        except ConfirmTimeout:
            await self.publish_outgoing(outgoing)

    async def publish_outgoing(self, event: OutgoingEvent) -> None:
        """Publish and wait for the confirm; raises on nack, or `ConfirmTimeout` after the publish
        deadline. The deadline is enforced here because aio-pika's own `timeout` bounds the AMQP
        publish and its confirm but not a robust channel's wait for its connection to return."""
        if self._connection is None:
            raise BrokerUnavailable("broker is not connected")
        message = aio_pika.Message(
            event.body,
            message_id=event.event_id,
            type=event.event_type,
            content_type=codec.CONTENT_TYPE,
            timestamp=event.occurred_at,
            correlation_id=event.correlation_id,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            headers=dict(event.headers),
            app_id=self.service_name,
        )
        await self.publish_message(message, routing_key=event.routing_key)

    async def publish_message(
        self, message: aio_pika.Message, *, routing_key: str, exchange: str | None = None
    ) -> None:
        """Publish a prepared message to the events exchange (or the exchange named) and wait
        for its confirm, within the publish deadline (`ConfirmTimeout` past it)."""
        if self._connection is None:
            raise BrokerUnavailable("broker is not connected")
        # An event no queue is bound to yet goes to the alternate exchange (see topology), so
        # the broker is not asked to return it.
        events: AbstractExchange | None = None
        try:
            async with asyncio.timeout(self._publish_timeout):
                events = await self._publishing_exchange(self._connection)
                target = events
                if exchange is not None and exchange != events.name and self._channel:
                    target = (
                        self._channel.default_exchange
                        if exchange == ""
                        else await self._channel.get_exchange(exchange, ensure=False)
                    )
                await target.publish(
                    message, routing_key, mandatory=False, timeout=self._publish_timeout
                )
        except TimeoutError:
            await self._drop_publishing_channel(events)
            raise ConfirmTimeout(
                f"no publisher confirm for {message.message_id} within {self._publish_timeout}s"
            ) from None

    async def queue_depth(self, queue: str) -> int:
        """Messages ready in `queue` (full name), by passive declare on a throwaway channel."""
        async with asyncio.timeout(self._connect_timeout):
            async with topology.temporary_channel(self.connection) as channel:
                declared = await channel.declare_queue(queue, passive=True, robust=False)
                return int(declared.declaration_result.message_count or 0)
