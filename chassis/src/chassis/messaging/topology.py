"""Broker topology: the events topic exchange, its alternate exchange for events nobody was bound to
yet, the dead-letter exchange, and per-service quorum queues.

- `<exchange>` (topic) has the alternate exchange `<exchange>.unrouted` (fanout) bound to the quorum
  queue `<exchange>.unrouted`: an event published before any queue is bound to its routing key is
  kept there instead of being dropped, and re-driven when a consumer binds (see `redrive`).
- Each service queue dead-letters into `<exchange>.dlx` (direct) with its own name as routing key,
  so every service has a private `<queue>.dlq`. Dead-lettering is at-least-once (quorum queues
  otherwise drop a message whose dead-lettering fails), which needs `reject-publish` overflow.
  The service queue is bound to the same exchange with `<queue>.redrive`, the way a dead letter
  goes back to its service queue only (not through the default exchange, which reaches any queue).
- `service_resources` names everything a service declares, binds, publishes to or reads: a broker
  user limited to those names runs the service (least privilege, see `chassis.accounts`).
- Queue arguments never depend on a setting: an argument cannot change on an existing queue (the
  broker refuses the declaration), so the configurable `DELIVERY_LIMIT` is applied by the consumer
  and the broker only holds a fixed safety net, `BROKER_DELIVERY_LIMIT`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable
from typing import Any

import aiormq
from aio_pika import ExchangeType
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange, AbstractQueue

from chassis.logging import get_logger
from chassis.settings import AmqpSettings

# Deliveries after which the broker itself dead-letters a message, whatever the consumer does:
# only reached by a message that kills its consumer process every time (the consumer applies the
# configurable, lower DELIVERY_LIMIT to handler failures itself).
BROKER_DELIVERY_LIMIT = 20
# Events nobody subscribes to, kept in the unrouted queue at most this long.
UNROUTED_TTL_MS = 7 * 24 * 3600 * 1000

_log = get_logger(__name__)

# How long a caller waits for a channel to close before leaving it to finish on its own.
CLOSE_TIMEOUT = 5.0

# Channels whose open or close outlived the caller that gave up on it, kept until they finish.
_ABANDONED: set[asyncio.Future[Any]] = set()


async def open_channel(connection: AbstractConnection, *, publisher_confirms: bool = False) -> Any:
    """A new channel on `connection`, whose Channel.Open is never abandoned half-way.

    A caller cancelled (a deadline, a consumer stopping) while Channel.Open is in flight would
    make aiormq close a channel the broker has not finished opening; the broker answers with
    CHANNEL_ERROR and closes the whole connection, every other channel on it included. So the
    open runs shielded: a caller that gives up leaves it to finish, and the channel is closed.
    """
    channel = connection.channel(publisher_confirms=publisher_confirms)

    async def opened() -> Any:
        await channel
        return channel

    opening = asyncio.ensure_future(opened())
    try:
        return await asyncio.shield(opening)
    except asyncio.CancelledError:
        opening.add_done_callback(_close_abandoned)
        raise


def _close_abandoned(opening: asyncio.Future[Any]) -> None:
    if opening.cancelled() or opening.exception() is not None:
        return
    _keep_until_done(asyncio.ensure_future(opening.result().close()))


def _keep_until_done(future: asyncio.Future[Any]) -> None:
    """Hold a reference to `future` until it is done, and take its outcome (a close that failed
    because the connection went first needs no report)."""

    def forget(done: asyncio.Future[Any]) -> None:
        _ABANDONED.discard(done)
        if not done.cancelled():
            done.exception()

    _ABANDONED.add(future)
    future.add_done_callback(forget)


async def close_bounded(closable: Any, *, within: float = CLOSE_TIMEOUT) -> None:
    """Close `closable` (a channel or a connection), waiting at most `within` seconds; never
    raises.

    A broker that stopped answering never holds the caller up (a consumer stopping, a service
    shutting down), and the close is never abandoned half-way either: past `within` it goes on
    in the background and ends when the broker answers or the connection closes. `within=0`
    starts the close and returns at once.
    """
    closing = asyncio.ensure_future(closable.close())
    _keep_until_done(closing)
    if within <= 0:
        return
    with contextlib.suppress(Exception):  # a timeout, or a channel whose connection is gone
        await asyncio.wait_for(asyncio.shield(closing), within)


@contextlib.asynccontextmanager
async def temporary_channel(connection: AbstractConnection) -> AsyncIterator[Any]:
    """A channel for a few declarations, opened with `open_channel` and closed after (see
    `close_bounded`)."""
    channel = await open_channel(connection)
    try:
        yield channel
    finally:
        await close_bounded(channel)


def queue_name(settings: AmqpSettings, queue: str) -> str:
    return f"{settings.queue_prefix}{queue}"


def dead_letter_queue_name(settings: AmqpSettings, queue: str) -> str:
    return f"{queue_name(settings, queue)}.dlq"


def dead_letter_exchange_name(settings: AmqpSettings) -> str:
    return f"{settings.events_exchange}.dlx"


def unrouted_name(settings: AmqpSettings) -> str:
    """Name of both the alternate exchange and the queue behind it."""
    return f"{settings.events_exchange}.unrouted"


def redrive_routing_key(queue: str) -> str:
    """The dead-letter exchange's routing key to the service queue `queue` (full name) itself."""
    return f"{queue}.redrive"


def service_resources(settings: AmqpSettings, queue: str) -> tuple[str, ...]:
    """The exchanges and queues a service consuming `queue` uses, and nothing else: the events
    exchange, its alternate exchange and unrouted queue (every service declares them, every
    consumer re-drives the queue), the dead-letter exchange, the service queue and its DLQ."""
    return (
        settings.events_exchange,
        unrouted_name(settings),
        dead_letter_exchange_name(settings),
        queue_name(settings, queue),
        dead_letter_queue_name(settings, queue),
    )


def service_queue_arguments(settings: AmqpSettings, queue: str) -> dict[str, Any]:
    name = queue_name(settings, queue)
    return {
        "x-queue-type": "quorum",
        "x-delivery-limit": BROKER_DELIVERY_LIMIT,
        "x-dead-letter-exchange": dead_letter_exchange_name(settings),
        "x-dead-letter-routing-key": name,
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }


async def declare_events_exchange(connection: AbstractConnection, settings: AmqpSettings) -> None:
    """Declare the events exchange with its alternate exchange and unrouted queue.

    An events exchange declared by an older version without the alternate exchange cannot be
    changed in place: that is logged as an error (unroutable events would be lost until it is
    re-created) and the exchange is used as it is.
    """
    unrouted = unrouted_name(settings)
    async with temporary_channel(connection) as channel:
        alternate = await channel.declare_exchange(unrouted, ExchangeType.FANOUT, durable=True)
        queue = await channel.declare_queue(
            unrouted,
            durable=True,
            arguments={"x-queue-type": "quorum", "x-message-ttl": UNROUTED_TTL_MS},
        )
        await queue.bind(alternate)
    try:
        async with temporary_channel(connection) as channel:
            await channel.declare_exchange(
                settings.events_exchange,
                ExchangeType.TOPIC,
                durable=True,
                arguments={"alternate-exchange": unrouted},
            )
    except aiormq.exceptions.ChannelPreconditionFailed as error:
        _log.error(
            "events_exchange_without_alternate",
            exchange=settings.events_exchange,
            error=str(error),
            fix="delete the exchange so the next start declares it with its alternate exchange",
        )


async def get_events_exchange(channel: AbstractChannel, settings: AmqpSettings) -> AbstractExchange:
    """The (already declared) events exchange on `channel`, for publishing."""
    return await channel.get_exchange(settings.events_exchange, ensure=True)


async def declare_service_queue(
    connection: AbstractConnection,
    settings: AmqpSettings,
    queue: str,
    routing_keys: Iterable[str],
) -> None:
    """Declare the service's quorum queue and its DLQ, and bind it to `routing_keys`.

    A queue declared by an older version with other arguments is used as it is (with a warning):
    the broker refuses to redeclare it, and refusing to consume would stop the service for good.
    """
    name = queue_name(settings, queue)
    await declare_events_exchange(connection, settings)
    async with temporary_channel(connection) as channel:
        dlx = await channel.declare_exchange(
            dead_letter_exchange_name(settings), ExchangeType.DIRECT, durable=True
        )
        dlq = await channel.declare_queue(
            dead_letter_queue_name(settings, queue),
            durable=True,
            arguments={"x-queue-type": "quorum"},
        )
        await dlq.bind(dlx, routing_key=name)
    try:
        async with temporary_channel(connection) as channel:
            await channel.declare_queue(
                name, durable=True, arguments=service_queue_arguments(settings, queue)
            )
    except aiormq.exceptions.ChannelPreconditionFailed as error:
        _log.warning("service_queue_arguments_differ", queue=name, error=str(error))
    async with temporary_channel(connection) as channel:
        service_queue = await channel.declare_queue(name, passive=True)
        exchange = await get_events_exchange(channel, settings)
        for key in routing_keys:
            await service_queue.bind(exchange, routing_key=key)
        await service_queue.bind(
            dead_letter_exchange_name(settings), routing_key=redrive_routing_key(name)
        )


async def passive_queue(channel: AbstractChannel, name: str) -> AbstractQueue:
    """An existing queue, without (re)declaring its arguments."""
    return await channel.declare_queue(name, passive=True)
