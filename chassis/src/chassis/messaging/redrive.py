"""Moving messages between queues: re-driving the events nobody was bound to (the unrouted queue
behind the alternate exchange), dead-lettering a message explicitly, and re-driving a dead-letter
queue back to its service queue after the cause is fixed.

Every move publishes a copy with a confirm first and acknowledges the original only then, so a
crash in between duplicates a message (consumers dedupe) but never loses one. Every call to the
broker is bounded (`Broker.rpc_timeout`, the publish deadline, `topology.close_bounded`).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage
from prometheus_client import Counter

from chassis.logging import get_logger
from chassis.messaging import topology
from chassis.messaging.broker import Broker

UNROUTED_REDRIVEN = Counter(
    "events_unrouted_redriven",
    "Events published before any queue was bound to them, re-published once a consumer bound",
    registry=None,
)

# Headers the chassis sets on a dead-lettered copy; the re-drive reads the first one back.
ORIGINAL_ROUTING_KEY = "x-original-routing-key"
DEAD_LETTER_REASON = "x-dead-letter-reason"
DEAD_LETTER_ERROR = "x-dead-letter-error"
DEAD_LETTER_QUEUE = "x-dead-letter-queue"
DEAD_LETTERED_AT = "x-dead-lettered-at"
# Set by the broker on redelivery; a re-driven copy starts afresh.
_BROKER_HEADERS = ("x-delivery-count", "x-death", "x-first-death-exchange",
                   "x-first-death-queue", "x-first-death-reason")  # fmt: skip

_log = get_logger(__name__)


def original_routing_key(message: AbstractIncomingMessage) -> str:
    """The routing key the event was published with, also for a re-driven or dead-lettered copy
    (which travels with the queue's name as its routing key)."""
    headers = message.headers or {}
    stored = headers.get(ORIGINAL_ROUTING_KEY)
    if isinstance(stored, bytes):
        stored = stored.decode()
    if isinstance(stored, str) and stored:
        return stored
    deaths = headers.get("x-death")
    if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict):
        keys = deaths[0].get("routing-keys")
        if isinstance(keys, list) and keys:
            key = keys[0]
            return key.decode() if isinstance(key, bytes) else str(key)
    return message.routing_key or ""


def copy_of(message: AbstractIncomingMessage, **extra_headers: Any) -> aio_pika.Message:
    """A new message with the same body and properties, minus the broker's redelivery headers."""
    headers = {k: v for k, v in (message.headers or {}).items() if k not in _BROKER_HEADERS}
    headers.update(extra_headers)
    return aio_pika.Message(
        message.body,
        headers=headers,
        content_type=message.content_type,
        content_encoding=message.content_encoding,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        correlation_id=message.correlation_id,
        message_id=message.message_id,
        timestamp=message.timestamp,
        type=message.type,
        app_id=message.app_id,
    )


async def dead_letter(
    broker: Broker, message: AbstractIncomingMessage, *, queue: str, reason: str, error: str
) -> None:
    """Copy `message` to the dead-letter queue of `queue` (full name) with why, then ack it."""
    copy = copy_of(
        message,
        **{
            ORIGINAL_ROUTING_KEY: original_routing_key(message),
            DEAD_LETTER_REASON: reason,
            DEAD_LETTER_ERROR: error[:500],
            DEAD_LETTER_QUEUE: queue,
            DEAD_LETTERED_AT: datetime.now(UTC).isoformat(),
        },
    )
    await broker.publish_message(
        copy, routing_key=queue, exchange=topology.dead_letter_exchange_name(broker.settings)
    )
    async with asyncio.timeout(broker.rpc_timeout):
        await message.ack()


async def redrive_unrouted(broker: Broker) -> int:
    """Re-publish every event waiting in the unrouted queue to the events exchange (once each:
    one still without a queue goes back there). Returns how many were re-published."""
    name = topology.unrouted_name(broker.settings)
    timeout = broker.rpc_timeout
    channel = await broker.channel()
    try:
        async with asyncio.timeout(timeout):
            queue = await topology.passive_queue(channel, name)
        waiting = int(queue.declaration_result.message_count or 0)
        moved = 0
        for _ in range(waiting):
            message = await queue.get(no_ack=False, fail=False, timeout=timeout)
            if message is None:
                break
            await broker.publish_message(copy_of(message), routing_key=message.routing_key or "")
            async with asyncio.timeout(timeout):
                await message.ack()
            moved += 1
    finally:
        await topology.close_bounded(channel)
    if moved:
        UNROUTED_REDRIVEN.inc(moved)
        _log.info("unrouted_events_redriven", count=moved, queue=name)
    return moved


async def redrive_dead_letters(broker: Broker, queue: str, *, limit: int | None = None) -> int:
    """Move the messages of `queue`'s dead-letter queue (full queue name) back to `queue` itself,
    through the dead-letter exchange's binding to that queue alone (see `topology`), so that no
    other service receives them again and the service's broker user needs no other right. The
    consumer dispatches them by their original routing key and its inbox drops any that already
    had their effect. Returns how many were moved."""
    timeout = broker.rpc_timeout
    channel = await broker.channel()
    try:
        async with asyncio.timeout(timeout):
            dlq = await topology.passive_queue(channel, f"{queue}.dlq")
        waiting = int(dlq.declaration_result.message_count or 0)
        if limit is not None:
            waiting = min(waiting, limit)
        moved = 0
        for _ in range(waiting):
            message = await dlq.get(no_ack=False, fail=False, timeout=timeout)
            if message is None:
                break
            copy = copy_of(message, **{ORIGINAL_ROUTING_KEY: original_routing_key(message)})
            await broker.publish_message(
                copy,
                routing_key=topology.redrive_routing_key(queue),
                exchange=topology.dead_letter_exchange_name(broker.settings),
            )
            async with asyncio.timeout(timeout):
                await message.ack()
            moved += 1
    finally:
        await topology.close_bounded(channel)
    _log.info("dead_letters_redriven", count=moved, queue=queue)
    return moved
