"""The saga timeout, swept by two real `service-order` processes on one database: every order
still PENDING past SAGA_TIMEOUT_SECONDS becomes CANCELLED (TIMEOUT) with exactly one
`order.cancelled`, whichever process got to it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import grpc
import pytest

from chassis.settings import AmqpSettings
from chassis.testing.plugin import AmqpIsolation, CreateDatabase
from chassis.testing.process import ServiceProcess, free_port
from ecommerce.events.v1 import events_pb2
from ecommerce.order.v1 import order_pb2, order_pb2_grpc

from .conftest import AUTHORITY, PAYMENT_TOKEN, Shop
from .support import Tap, eventually, open_tap
from .test_process import order_process


@dataclass
class Sweepers:
    processes: list[ServiceProcess]
    addresses: list[str]
    db: asyncpg.Pool
    tap: Tap


@pytest.fixture(scope="module")
async def sweepers(
    upstream_values: dict[str, Any],
    create_database: CreateDatabase,
    amqp_url: str,
    amqp_isolation: AmqpIsolation,
) -> AsyncIterator[Sweepers]:
    url = await create_database("orders_sweep")
    messaging = AmqpSettings(
        amqp_url=amqp_url,
        events_exchange=f"{amqp_isolation.queue_prefix}sweep.events",
        queue_prefix=f"{amqp_isolation.queue_prefix}sweep.",
    )
    ports = [free_port(), free_port()]
    processes = [
        order_process(
            {
                **upstream_values,
                "ORDER_GRPC_PORT": port,
                "ORDER_DB_NAME": url.rsplit("/", 1)[1],
                "AMQP_URL": amqp_url,
                "EVENTS_EXCHANGE": messaging.events_exchange,
                "QUEUE_PREFIX": messaging.queue_prefix,
                "SAGA_TIMEOUT_SECONDS": "1",
                "SAGA_SWEEP_INTERVAL_SECONDS": "0.2",
            }
        )
        for port in ports
    ]
    addresses = [f"127.0.0.1:{port}" for port in ports]
    try:
        for process in processes:
            process.start()
        await asyncio.gather(
            *(p.wait_serving(a, timeout_s=60) for p, a in zip(processes, addresses, strict=True))
        )
        async with (
            asyncpg.create_pool(url, min_size=0, max_size=2) as db,
            open_tap(messaging) as tap,
        ):
            yield Sweepers(processes, addresses, db, tap)
    finally:
        await asyncio.gather(*(asyncio.to_thread(p.stop) for p in processes))


async def cancelled_events(db: asyncpg.Pool, order_ids: list[uuid.UUID]) -> dict[str, int]:
    rows = await db.fetch(
        "SELECT correlation_id, count(*) AS events FROM outbox"
        " WHERE event_type = 'ecommerce.events.v1.OrderCancelled'"
        " AND correlation_id = ANY($1::text[])"
        " GROUP BY correlation_id",
        [str(order_id) for order_id in order_ids],
    )
    return {row["correlation_id"]: row["events"] for row in rows}


async def test_a_checked_out_order_left_pending_times_out_with_one_order_cancelled(
    sweepers: Sweepers, shop: Shop, user: str
) -> None:
    await shop.filled_cart(user, 1)
    async with grpc.aio.insecure_channel(sweepers.addresses[0]) as channel:
        stub = order_pb2_grpc.OrderServiceStub(channel)
        metadata = AUTHORITY.metadata(user)
        order = (
            await stub.Checkout(
                order_pb2.CheckoutRequest(user_id=user, payment_token=PAYMENT_TOKEN),
                metadata=metadata,
                timeout=10,
            )
        ).order

        async def timed_out() -> bool:
            request = order_pb2.GetOrderRequest(user_id=user, order_id=order.id)
            reply = await stub.GetOrder(request, metadata=metadata, timeout=5)
            return reply.order.status == order_pb2.ORDER_STATUS_CANCELLED

        await eventually(timed_out)
        final = (
            await stub.GetOrder(
                order_pb2.GetOrderRequest(user_id=user, order_id=order.id),
                metadata=metadata,
                timeout=5,
            )
        ).order

    assert order.status == order_pb2.ORDER_STATUS_PENDING
    assert final.cancel_reason == order_pb2.CANCEL_REASON_TIMEOUT
    assert await cancelled_events(sweepers.db, [uuid.UUID(order.id)]) == {order.id: 1}
    [message] = await sweepers.tap.wait_for(order.id, events_pb2.OrderCancelled)
    event = events_pb2.OrderCancelled.FromString(message.body)
    assert event.reason == events_pb2.ORDER_CANCEL_REASON_TIMEOUT
    assert (event.order_id, event.user_id) == (order.id, user)


async def test_two_sweepers_cancel_every_overdue_order_exactly_once_and_nothing_younger(
    sweepers: Sweepers,
) -> None:
    overdue = [uuid.uuid4() for _ in range(250)]
    future = uuid.uuid4()
    await sweepers.db.execute(
        "INSERT INTO orders (id, user_id, status, total_cents, currency, created_at, updated_at)"
        " SELECT id, gen_random_uuid(), 'PENDING', 100, 'USD', now() - interval '1 hour',"
        " now() - interval '1 hour' FROM unnest($1::uuid[]) AS id",
        overdue,
    )
    await sweepers.db.execute(
        "INSERT INTO orders (id, user_id, status, total_cents, currency, created_at)"
        " VALUES ($1, gen_random_uuid(), 'PENDING', 100, 'USD', now() + interval '1 hour')",
        future,
    )

    async def all_swept() -> bool:
        pending = await sweepers.db.fetchval(
            "SELECT count(*) FROM orders WHERE id = ANY($1::uuid[]) AND status = 'PENDING'",
            overdue,
        )
        return int(pending) == 0

    await eventually(all_swept)

    reasons = await sweepers.db.fetch(
        "SELECT status, cancel_reason, count(*) AS orders FROM orders"
        " WHERE id = ANY($1::uuid[]) GROUP BY status, cancel_reason",
        overdue,
    )
    assert [tuple(r) for r in reasons] == [("CANCELLED", "TIMEOUT", 250)]
    assert await cancelled_events(sweepers.db, overdue) == {str(i): 1 for i in overdue}
    assert await sweepers.db.fetchval("SELECT status FROM orders WHERE id = $1", future) == (
        "PENDING"
    )
    assert await cancelled_events(sweepers.db, [future]) == {}
