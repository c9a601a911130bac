"""Event consumer: one durable quorum queue per service, handlers by routing key, ack after commit.

A failing handler nacks with requeue so the quorum queue counts the delivery; past the queue's
delivery limit the broker moves the message to the service's DLQ. Undecodable messages go there
at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping

from aio_pika.abc import AbstractIncomingMessage
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from prometheus_client import Counter, Gauge
from structlog.stdlib import BoundLogger

from chassis.logging import get_logger
from chassis.messaging import codec, topology
from chassis.messaging.broker import Broker
from chassis.messaging.inbox import Handler, Outcome

EVENTS_CONSUMED = Counter(
    "events_consumed", "Events taken off a queue, by outcome", ["event_type", "outcome"]
)
EVENTS_DEAD_LETTERED = Counter(
    "events_dead_lettered", "Events sent to a dead-letter queue", ["queue", "event_type"]
)
DLQ_DEPTH = Gauge("events_dlq_depth", "Messages waiting in a dead-letter queue", ["queue"])

logger = get_logger(__name__)
_tracer = trace.get_tracer("chassis.messaging")


class EventConsumer:
    """Consumes the service queue `queue`, dispatching each event to `handlers[routing_key]`."""

    def __init__(
        self,
        broker: Broker,
        queue: str,
        handlers: Mapping[str, Handler],
        *,
        prefetch: int = 32,
        handler_timeout: float = 30.0,
        dlq_poll_interval: float = 15.0,
    ) -> None:
        if not handlers:
            raise ValueError("an EventConsumer needs at least one handler")
        self._broker = broker
        self._handlers = dict(handlers)
        self._prefetch = prefetch
        self._handler_timeout = handler_timeout
        self._dlq_poll_interval = dlq_poll_interval
        self.queue_name = topology.queue_name(broker.settings, queue)
        self.dead_letter_queue_name = topology.dead_letter_queue_name(broker.settings, queue)
        self._queue = queue
        # Set once the queue is declared, bound and consumed (publishers may rely on routing).
        self.consuming = asyncio.Event()

    async def run(self) -> None:
        """Declare the queue, consume until cancelled, refresh the DLQ depth gauge meanwhile."""
        channel = await self._broker.channel(prefetch=self._prefetch)
        try:
            queue = await topology.declare_service_queue(
                channel, self._broker.settings, self._queue, self._handlers
            )
            tag = await queue.consume(self._on_message)
            self.consuming.set()
            logger.info("consuming", queue=self.queue_name, routing_keys=sorted(self._handlers))
            try:
                while True:
                    await self._refresh_dlq_depth()
                    await asyncio.sleep(self._dlq_poll_interval)
            finally:
                self.consuming.clear()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(queue.cancel(tag), 5)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(channel.close(), 5)

    async def _refresh_dlq_depth(self) -> None:
        try:
            depth = await self._broker.queue_depth(self.dead_letter_queue_name)
        except Exception as exc:  # the gauge is best effort; consuming must go on
            logger.warning(
                "dlq depth unavailable", queue=self.dead_letter_queue_name, error=str(exc)
            )
            return
        DLQ_DEPTH.labels(queue=self.dead_letter_queue_name).set(depth)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        headers = message.headers or {}
        carrier = {key: value for key, value in headers.items() if isinstance(value, str)}
        token = otel_context.attach(propagate.extract(carrier))
        try:
            with _tracer.start_as_current_span(
                f"{message.routing_key} process",
                kind=trace.SpanKind.CONSUMER,
                attributes={
                    "messaging.system": "rabbitmq",
                    "messaging.destination.name": self.queue_name,
                    "messaging.rabbitmq.destination.routing_key": message.routing_key or "",
                    "messaging.message.id": message.message_id or "",
                },
            ):
                await self._process(message)
        finally:
            otel_context.detach(token)

    async def _process(self, message: AbstractIncomingMessage) -> None:
        event_type = message.type or "unknown"
        log = logger.bind(
            queue=self.queue_name,
            event_type=event_type,
            message_id=message.message_id,
            correlation_id=message.correlation_id,
        )
        try:
            event = codec.decode(message.type, message.body)
            handler = self._handlers.get(message.routing_key or "")
            if handler is None:
                raise codec.PoisonMessage(f"no handler for routing key {message.routing_key!r}")
            outcome = await asyncio.wait_for(handler(event), self._handler_timeout)
        except codec.PoisonMessage as exc:
            log.error("poison message, sending it to the dead-letter queue", reason=str(exc))
            self._count_dead_lettered(event_type)
            await message.reject(requeue=False)
            return
        except Exception as exc:
            await self._retry_or_dead_letter(message, event_type, exc, log)
            return
        await message.ack()
        EVENTS_CONSUMED.labels(event_type=event_type, outcome=outcome or Outcome.PROCESSED).inc()

    async def _retry_or_dead_letter(
        self,
        message: AbstractIncomingMessage,
        event_type: str,
        exc: Exception,
        log: BoundLogger,
    ) -> None:
        # x-delivery-count counts earlier failed deliveries; the broker dead-letters a message once
        # that count would exceed the limit, so this is the last attempt when it equals the limit.
        failed_before = _delivery_count(message)
        limit = self._broker.settings.delivery_limit
        if failed_before >= limit:
            log.error(
                "handler failed on its last attempt, message goes to the dead-letter queue",
                dead_letter_queue=self.dead_letter_queue_name,
                attempt=failed_before + 1,
                error=f"{type(exc).__name__}: {exc}",
                exc_info=exc,
            )
            self._count_dead_lettered(event_type)
        else:
            log.warning(
                "handler failed, message will be redelivered",
                attempt=failed_before + 1,
                delivery_limit=limit,
                error=f"{type(exc).__name__}: {exc}",
            )
            EVENTS_CONSUMED.labels(event_type=event_type, outcome="failed").inc()
        await message.nack(requeue=True)

    def _count_dead_lettered(self, event_type: str) -> None:
        EVENTS_CONSUMED.labels(event_type=event_type, outcome="dead_lettered").inc()
        EVENTS_DEAD_LETTERED.labels(queue=self.queue_name, event_type=event_type).inc()


def _delivery_count(message: AbstractIncomingMessage) -> int:
    raw = (message.headers or {}).get("x-delivery-count", 0)
    return int(raw) if isinstance(raw, int | str) and str(raw).isdigit() else 0
