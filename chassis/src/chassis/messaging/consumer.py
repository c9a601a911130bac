"""Event consumer: one durable quorum queue per service, a typed handler per routing key, ack after
the handler's transaction committed.

Failures, by kind:
- poison (no type, another type than subscribed, a body that does not parse, no handler, or a
  handler raising `PoisonMessage` for an event it finds malformed): copied to the service's
  dead-letter queue at once, with the reason in its headers;
- a dependency that is down (`is_transient`: the database, Redis or a service unavailable): retried
  in place with a growing delay of at most a second (`transient_backoff`), holding the message, so
  consuming pauses while the outage lasts, no delivery attempt is burnt, and the event is handled
  within a second of the dependency's return (with the 5 s cap of redeliveries, each hop of a
  saga could wait up to 5 s past it, and a saga has several hops within its timeout);
- any other handler error: redelivered after a growing delay; the attempt that reaches
  `DELIVERY_LIMIT` copies it to the dead-letter queue with the error, a log line and a metric.

Ordering: events with the same `correlation_id` (an order's saga) are handled one at a time, in
the order the queue delivered them; events of different orders run concurrently (up to the
prefetch). The queue's order can still differ from the order the events were committed in (two
relays, a redelivery), so every saga handler also tolerates any order (see the chassis README).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Self, TypeVar

import aiormq
import grpc
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustChannel
from google.protobuf.message import Message
from prometheus_client import Counter, Gauge
from structlog.stdlib import BoundLogger

from chassis.errors import Unavailable
from chassis.logging import get_logger
from chassis.messaging import codec, redrive, topology, tracing
from chassis.messaging.broker import Broker, BrokerUnavailable
from chassis.messaging.declaration import declaration_of
from chassis.messaging.inbox import Handler, Outcome
from chassis.metrics import expose
from chassis.postgres import OUTAGE_ERRORS

EVENTS_CONSUMED = Counter(
    "events_consumed",
    "Events taken off a queue, by outcome",
    ["event_type", "outcome"],
    registry=None,
)
EVENTS_DEAD_LETTERED = Counter(
    "events_dead_lettered",
    "Events sent to a dead-letter queue",
    ["queue", "event_type"],
    registry=None,
)
DLQ_DEPTH = Gauge(
    "events_dlq_depth", "Messages waiting in a dead-letter queue", ["queue"], registry=None
)
UNROUTED_DEPTH = Gauge(
    "events_unrouted_depth",
    "Events waiting because no queue was bound to their routing key",
    registry=None,
)

logger = get_logger(__name__)
E = TypeVar("E", bound=Message)
_TRANSIENT_RPC_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


def _redis_down_errors() -> tuple[type[BaseException], ...]:
    """Redis's connection and timeout errors, when this process has loaded redis at all: one
    that never did (service-order, service-payment) cannot meet them, and importing redis here
    only for this check cost every such service about a third of a second at each start."""
    exceptions = sys.modules.get("redis.exceptions")
    if exceptions is None:
        return ()
    return (exceptions.ConnectionError, exceptions.TimeoutError)


def is_transient(error: BaseException) -> bool:
    """Whether `error` says a dependency is down (retry later) rather than the event is bad."""
    dependency_down = (Unavailable, BrokerUnavailable, *_redis_down_errors())
    if isinstance(error, dependency_down + OUTAGE_ERRORS):
        return True
    return isinstance(error, grpc.aio.AioRpcError) and error.code() in _TRANSIENT_RPC_CODES


@dataclass(frozen=True, slots=True)
class Subscription:
    """Events of `message_class` go to `handler`. Everything else follows from the type: the
    queue is bound to its declared routing key, a message is decoded as it (and is poison when
    its AMQP `type` names another), and metrics are labelled with its full name."""

    message_class: type[Message]
    handler: Handler

    def __post_init__(self) -> None:
        declaration_of(self.message_class)  # UndeclaredEvent at once, when the service wires up

    @classmethod
    def of(cls, message_class: type[E], handler: Callable[[E], Awaitable[Outcome | None]]) -> Self:
        """`Subscription.of(OrderCreated, on_order_created)`: one line per event handled."""
        return cls(message_class, handler)

    @property
    def routing_key(self) -> str:
        return declaration_of(self.message_class).routing_key


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delays of the consumer's retries: `first * 2**n`, at most `cap` seconds."""

    first: float = 0.2
    cap: float = 5.0

    def delay(self, attempt: int) -> float:
        return float(min(self.first * 2 ** max(attempt - 1, 0), self.cap))


class EventConsumer:
    """Consumes the service queue `queue` (the name before QUEUE_PREFIX) for `subscriptions`."""

    def __init__(
        self,
        broker: Broker,
        queue: str,
        subscriptions: Iterable[Subscription],
        *,
        prefetch: int = 32,
        handler_timeout: float = 30.0,
        dlq_poll_interval: float = 15.0,
        backoff: Backoff = Backoff(),
        transient_backoff: Backoff = Backoff(first=0.2, cap=1.0),
        transient_retry_window: float = 300.0,
        transient: Callable[[BaseException], bool] = is_transient,
    ) -> None:
        self._subscriptions: dict[str, Subscription] = {}
        for subscription in subscriptions:
            if subscription.routing_key in self._subscriptions:
                raise ValueError(f"{subscription.message_class.__name__} is subscribed twice")
            self._subscriptions[subscription.routing_key] = subscription
        if not self._subscriptions:
            raise ValueError("an EventConsumer needs at least one subscription")
        expose(EVENTS_CONSUMED, EVENTS_DEAD_LETTERED, DLQ_DEPTH, UNROUTED_DEPTH)
        expose(redrive.UNROUTED_REDRIVEN)
        self._broker = broker
        self._prefetch = prefetch
        self._handler_timeout = handler_timeout
        self._dlq_poll_interval = dlq_poll_interval
        self._backoff = backoff
        self._transient_backoff = transient_backoff
        self._transient_window = transient_retry_window
        self._is_transient = transient
        self.queue_name = topology.queue_name(broker.settings, queue)
        self.dead_letter_queue_name = topology.dead_letter_queue_name(broker.settings, queue)
        self._queue = queue
        self._channel: AbstractRobustChannel | None = None
        self._ordering: dict[str, tuple[asyncio.Lock, int]] = {}
        # Set once the queue is declared, bound and consumed (publishers may rely on routing).
        self.consuming = asyncio.Event()

    @property
    def routing_keys(self) -> list[str]:
        return sorted(self._subscriptions)

    async def check(self) -> None:
        """Readiness: raises unless this consumer is consuming right now."""
        await self._broker.check()
        if not self.consuming.is_set() or self._channel is None or self._channel.is_closed:
            raise BrokerUnavailable(f"not consuming {self.queue_name}")

    async def run(self) -> None:
        """Declare and bind the queue, re-drive events published before it was bound, consume
        until cancelled, and refresh the dead-letter gauges meanwhile. Setting up takes at most
        a few of the broker's `rpc_timeout` (a broker that does not answer makes it fail, and
        the runtime starts it again); stopping at most two."""
        connection = self._broker.connection
        timeout = self._broker.rpc_timeout
        async with asyncio.timeout(3 * timeout):
            await topology.declare_service_queue(
                connection, self._broker.settings, self._queue, self._subscriptions
            )
        channel = await self._broker.channel(prefetch=self._prefetch)
        self._channel = channel
        try:
            async with asyncio.timeout(timeout):
                queue = await topology.passive_queue(channel, self.queue_name)
                tag = await queue.consume(self._on_message)
            self.consuming.set()
            logger.info("consuming", queue=self.queue_name, routing_keys=self.routing_keys)
            try:
                # Shielded: a stop that lands mid-RPC would make aiormq close the channel under
                # the broker's feet, and the broker then closes the whole connection
                # (CHANNEL_ERROR), every publisher and consumer of the service on it. A stop
                # leaves these to finish (each has its deadline) and closes nothing half-way.
                await asyncio.shield(self._after_binding())
                while True:
                    await asyncio.shield(self._refresh_depths())
                    await asyncio.sleep(self._dlq_poll_interval)
            finally:
                self.consuming.clear()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(queue.cancel(tag), timeout)
        finally:
            self._channel = None
            await topology.close_bounded(channel, within=timeout)

    async def _after_binding(self) -> None:
        """Events published while no queue was bound wait in the unrouted queue: re-drive them
        now, and once more shortly after (one in flight to it while the first pass ran)."""
        for pause in (0.0, 2.0):
            await asyncio.sleep(pause)
            try:
                # Each of its calls is bounded; however many events wait, none is cut short.
                await redrive.redrive_unrouted(self._broker)
            except Exception as error:  # best effort: the next start or pass tries again
                logger.warning("unrouted_redrive_failed", error=f"{type(error).__name__}: {error}")
        depth = await self._refresh_depths()
        if depth:
            logger.warning(
                "dead_letter_queue_not_empty", queue=self.dead_letter_queue_name, messages=depth
            )

    async def _refresh_depths(self) -> int:
        try:
            depth = await self._broker.queue_depth(self.dead_letter_queue_name)
            unrouted = await self._broker.queue_depth(topology.unrouted_name(self._broker.settings))
        except Exception as exc:  # the gauges are best effort; consuming must go on
            logger.warning(
                "dlq_depth_unavailable", queue=self.dead_letter_queue_name, error=str(exc)
            )
            return 0
        DLQ_DEPTH.labels(queue=self.dead_letter_queue_name).set(depth)
        UNROUTED_DEPTH.set(unrouted)
        return depth

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        key = message.correlation_id or message.message_id or ""
        lock, waiting = self._ordering.get(key) or (asyncio.Lock(), 0)
        self._ordering[key] = (lock, waiting + 1)
        try:
            async with lock:
                await self._traced(message)
        finally:
            lock, waiting = self._ordering[key]
            if waiting == 1:
                del self._ordering[key]
            else:
                self._ordering[key] = (lock, waiting - 1)

    async def _traced(self, message: AbstractIncomingMessage) -> None:
        routing_key = redrive.original_routing_key(message)
        with tracing.processing(
            self._broker.settings, message, queue=self.queue_name, routing_key=routing_key
        ):
            await self._process(message, routing_key)

    async def _process(self, message: AbstractIncomingMessage, routing_key: str) -> None:
        started = time.perf_counter()
        event_type = message.type or "unknown"
        log = logger.bind(
            queue=self.queue_name,
            event_type=event_type,
            message_id=message.message_id,
            correlation_id=message.correlation_id,
        )
        try:
            subscription = self._subscriptions.get(routing_key)
            if subscription is None:
                raise codec.PoisonMessage(f"no handler for routing key {routing_key!r}")
            event = codec.decode(subscription.message_class, message.type, message.body)
        except codec.PoisonMessage as exc:
            await self._dead_letter(message, event_type, "poison", str(exc), log)
            return
        outcome = await self._handle(subscription.handler, event, message, event_type, log)
        if outcome is not None and await _settled(message.ack(), log, self._broker.rpc_timeout):
            EVENTS_CONSUMED.labels(event_type=event_type, outcome=outcome).inc()
            # The event's access line: one per event handled, in the trace it carried.
            elapsed_ms = round((time.perf_counter() - started) * 1000, 3)
            log.info("event_handled", outcome=outcome.value, duration_ms=elapsed_ms)

    async def _handle(
        self,
        handler: Handler,
        event: Message,
        message: AbstractIncomingMessage,
        event_type: str,
        log: BoundLogger,
    ) -> Outcome | None:
        """The handler's outcome, or None when the message was nacked or dead-lettered."""
        started = time.monotonic()
        transient_attempt = 0
        while True:
            try:
                return await asyncio.wait_for(handler(event), self._handler_timeout) or (
                    Outcome.PROCESSED
                )
            except codec.PoisonMessage as exc:
                # The handler found the event itself malformed: no retry can change that.
                await self._dead_letter(message, event_type, "poison", str(exc), log)
                return None
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
                if self._is_transient(exc) and (
                    time.monotonic() - started < self._transient_window
                ):
                    transient_attempt += 1
                    delay = self._transient_backoff.delay(transient_attempt)
                    log.warning(
                        "handler_dependency_unavailable",
                        attempt=transient_attempt,
                        retry_in_s=delay,
                        error=error,
                    )
                    EVENTS_CONSUMED.labels(event_type=event_type, outcome="retried").inc()
                    await asyncio.sleep(delay)
                    continue
                await self._retry_or_dead_letter(message, event_type, exc, log)
                return None

    async def _retry_or_dead_letter(
        self,
        message: AbstractIncomingMessage,
        event_type: str,
        exc: Exception,
        log: BoundLogger,
    ) -> None:
        attempt = _delivery_count(message) + 1
        limit = self._broker.settings.delivery_limit
        error = f"{type(exc).__name__}: {exc}"
        if attempt >= limit:
            log.error(
                "handler_failed_on_last_attempt",
                attempt=attempt,
                delivery_limit=limit,
                error=error,
                exc_info=exc,
            )
            await self._dead_letter(message, event_type, "handler_failed", error, log)
            return
        delay = self._backoff.delay(attempt)
        log.warning(
            "handler_failed_will_retry",
            attempt=attempt,
            delivery_limit=limit,
            retry_in_s=delay,
            error=error,
        )
        EVENTS_CONSUMED.labels(event_type=event_type, outcome="failed").inc()
        await asyncio.sleep(delay)
        await _settled(message.nack(requeue=True), log, self._broker.rpc_timeout)

    async def _dead_letter(
        self,
        message: AbstractIncomingMessage,
        event_type: str,
        reason: str,
        error: str,
        log: BoundLogger,
    ) -> None:
        try:
            await redrive.dead_letter(
                self._broker, message, queue=self.queue_name, reason=reason, error=error
            )
        except Exception as exc:  # not copied: leave it to a redelivery, never lose it
            log.warning("dead_letter_failed", error=f"{type(exc).__name__}: {exc}")
            await _settled(message.nack(requeue=True), log, self._broker.rpc_timeout)
            return
        log.error(
            "event_dead_lettered",
            dead_letter_queue=self.dead_letter_queue_name,
            reason=reason,
            error=error,
        )
        EVENTS_CONSUMED.labels(event_type=event_type, outcome="dead_lettered").inc()
        EVENTS_DEAD_LETTERED.labels(queue=self.queue_name, event_type=event_type).inc()


async def _settled(settling: Awaitable[None], log: BoundLogger, within: float) -> bool:
    """Ack or nack within `within` seconds; False when the channel closed meanwhile or the frame
    could not be written in time (the broker then redelivers the message once the channel is
    gone, and the inbox makes a second delivery of a handled event a no-op)."""
    try:
        async with asyncio.timeout(within):
            await settling
    except (aiormq.exceptions.AMQPError, RuntimeError, ConnectionError, TimeoutError) as error:
        log.warning("message_not_settled", error=f"{type(error).__name__}: {error}")
        return False
    return True


def _delivery_count(message: AbstractIncomingMessage) -> int:
    raw = (message.headers or {}).get("x-delivery-count", 0)
    return int(raw) if isinstance(raw, int | str) and str(raw).isdigit() else 0
