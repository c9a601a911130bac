"""`attach_messaging`: the lines every event-driven service would otherwise repeat, wiring the
broker, the outbox relay, retention and the consumer into a `ServiceRuntime`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

import asyncpg

from chassis.grpc_server import ServiceRuntime
from chassis.messaging.broker import Broker
from chassis.messaging.consumer import EventConsumer, Subscription
from chassis.messaging.outbox import OutboxPublisher, OutboxRelay
from chassis.messaging.retention import MessagingRetention
from chassis.settings import AmqpSettings


@dataclass(frozen=True, slots=True)
class Outbox:
    """Where a service's outbox lives: its database URL (the relay's own connections) and pool,
    and the publisher its units of work hand their committed events to (None: the relay alone,
    woken by the table's NOTIFY trigger)."""

    database_url: str
    pool: asyncpg.Pool
    publisher: OutboxPublisher | None = None


@dataclass(frozen=True, slots=True)
class Messaging:
    broker: Broker
    consumer: EventConsumer | None


def attach_messaging(
    runtime: ServiceRuntime,
    settings: AmqpSettings,
    *,
    queue: str,
    subscriptions: Sequence[Subscription] = (),
    outbox: Outbox | None = None,
) -> Messaging:
    """Connect to the broker at start (readiness follows the connection), relay the outbox and
    purge old outbox/inbox rows when the service has one, and consume `queue` for
    `subscriptions` (readiness then also requires consuming). Everything stops at shutdown."""
    broker = Broker(settings, runtime.service_name)
    runtime.on_startup("broker", broker.connect)
    runtime.readiness_check("broker", broker.check)
    runtime.on_shutdown("broker", broker.close)
    if outbox is not None:
        grace = 0.0
        if outbox.publisher is not None:
            outbox.publisher.attach(broker)
            # Before the broker closes (hooks run in reverse): the last commits' events go out.
            runtime.on_shutdown("outbox_publisher", outbox.publisher.close)
            grace = settings.outbox_relay_grace_seconds
        relay = OutboxRelay(outbox.database_url, broker, grace=grace)
        runtime.background("outbox_relay", relay.run)
        retention = MessagingRetention(
            outbox.pool,
            outbox_retention=timedelta(hours=settings.outbox_retention_hours),
            inbox_retention=timedelta(days=settings.inbox_retention_days),
        )
        runtime.background("messaging_retention", retention.run)
    consumer = None
    if subscriptions:
        consumer = EventConsumer(broker, queue, subscriptions, prefetch=settings.consumer_prefetch)
        runtime.background("events", consumer.run)
        runtime.readiness_check("events", consumer.check)
    return Messaging(broker=broker, consumer=consumer)
