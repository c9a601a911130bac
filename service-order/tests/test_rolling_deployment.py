"""The payment step rolled out while replicas of the previous release still run: migration 0003
keeps every order that release knows (and every order it still inserts) a saga-version-1 order,
and the schema refuses what its code would get wrong, confirming a version-2 order on
`stock.reserved` without a payment, whatever code writes. That refusal is an ordinary handler
failure for the old replica's consumer (redelivered, then dead-lettered), never a crash."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import grpc
import pytest
from alembic import command
from alembic.config import Config

from chassis.errors import field_of
from chassis.messaging import Broker, EventConsumer, Subscription, topology
from chassis.messaging.consumer import Backoff
from chassis.settings import AmqpSettings
from chassis.testing.plugin import CreateDatabase
from chassis.testing.tokens import OwnerTokenInterceptor
from chassis.unit_of_work import HandledOnce, UnitOfWork
from ecommerce.events.v1 import events_pb2
from ecommerce.order.v1 import order_pb2, order_pb2_grpc
from order_service.store import MIGRATIONS_DIR

from .conftest import AUTHORITY, Shop, messaging_values, order_settings, running_order
from .support import eventually, rpc_error
from .test_saga_events import handled, placed_order, reserved, row, version_1_order

# What the previous release runs, verbatim: its INSERT of an order (it knows no saga version or
# payment) and its confirm on `stock.reserved` (guarded by the status only).
OLD_INSERT = (
    "INSERT INTO orders (id, user_id, status, total_cents, currency)"
    " VALUES ($1, $2, 'PENDING', 1250, 'USD')"
)
OLD_CONFIRM = (
    "UPDATE orders SET status = $2, cancel_reason = $3, updated_at = now(),"
    " confirmed_at = CASE WHEN $2 = 'CONFIRMED' THEN now() ELSE confirmed_at END"
    " WHERE id = $1 AND status = ANY($4::text[])"
    " RETURNING id, user_id, created_at, updated_at"
)


async def old_confirm(db: asyncpg.Connection | asyncpg.Pool, order_id: uuid.UUID) -> None:
    await db.fetchrow(OLD_CONFIRM, order_id, "CONFIRMED", None, ["PENDING"])


def _upgrade(url: str, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["url"] = url
    command.upgrade(config, revision)


async def test_orders_of_the_previous_release_stay_saga_version_1_across_the_migration(
    create_database: CreateDatabase,
) -> None:
    url = await create_database("orders_rollout")
    await asyncio.to_thread(_upgrade, url, "0002_confirmed_at")
    before, after = uuid.uuid4(), uuid.uuid4()
    connection = await asyncpg.connect(url)
    try:
        await connection.execute(OLD_INSERT, before, uuid.uuid4())
        await asyncio.to_thread(_upgrade, url, "head")
        await connection.execute(OLD_INSERT, after, uuid.uuid4())  # an old replica, still up
        rows = await connection.fetch(
            "SELECT id, saga_version, payment_token, payment_status FROM orders"
        )
        # The old replica's confirm still works on its own (version-1) orders.
        await old_confirm(connection, after)
        status = await connection.fetchval("SELECT status FROM orders WHERE id = $1", after)
    finally:
        await connection.close()

    payments = {r["id"]: (r["saga_version"], r["payment_token"], r["payment_status"]) for r in rows}
    assert payments == {before: (1, None, None), after: (1, None, None)}
    assert status == "CONFIRMED"


async def test_no_statement_confirms_a_version_2_order_whose_payment_is_not_authorized(
    shop: Shop, user: str
) -> None:
    order = await placed_order(shop, user, 1)

    with pytest.raises(asyncpg.CheckViolationError, match="orders_confirmed_only_once_paid"):
        await old_confirm(shop.orders_db, uuid.UUID(order.id))
    with pytest.raises(asyncpg.CheckViolationError, match="orders_payment_only_in_saga_version_2"):
        await shop.orders_db.execute(
            "UPDATE orders SET payment_status = NULL WHERE id = $1", uuid.UUID(order.id)
        )

    assert (await row(shop, order.id))["status"] == "PENDING"


async def test_an_old_replica_s_stock_reserved_fails_as_a_handler_error_not_a_crash(
    broker: Broker, shop: Shop, user: str
) -> None:
    async def old_on_stock_reserved(uow: UnitOfWork, event: events_pb2.StockReserved) -> None:
        await old_confirm(uow.connection, uuid.UUID(event.order_id))

    once = HandledOnce(lambda: UnitOfWork(shop.orders_db, consumer="old-release"))
    old_replica = EventConsumer(
        broker,
        f"old-release-{uuid.uuid4().hex[:8]}",
        [Subscription.of(events_pb2.StockReserved, once(old_on_stock_reserved))],
        backoff=Backoff(first=0.05, cap=0.1),
    )
    paid_for = await placed_order(shop, user, 1)
    legacy = await version_1_order(shop, str(uuid.uuid4()), 1)
    paid_for_reserved, legacy_reserved = reserved(paid_for.id), reserved(legacy.id)
    consuming = asyncio.create_task(old_replica.run())
    try:
        await asyncio.wait_for(old_replica.consuming.wait(), 20)
        # Both consume it: this release acknowledges it without effect, the old one fails.
        await handled(broker, shop, paid_for_reserved)

        async def dead_lettered() -> bool:
            return await broker.queue_depth(old_replica.dead_letter_queue_name) == 1

        await eventually(dead_lettered)
        # Still consuming: the next event, for an order of its own kind, it handles.
        await broker.publish(legacy_reserved)

        async def handled_by_the_old_replica() -> bool:
            return await claims(shop, legacy_reserved) == 1

        await eventually(handled_by_the_old_replica)
        assert not consuming.done()
    finally:
        consuming.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await consuming
        async with topology.temporary_channel(broker.connection) as channel:
            await channel.queue_delete(old_replica.queue_name)
            await channel.queue_delete(old_replica.dead_letter_queue_name)

    assert await claims(shop, paid_for_reserved) == 0  # the failure left no claim behind
    assert (await row(shop, paid_for.id))["status"] == "PENDING"
    assert (await row(shop, legacy.id))["status"] == "CONFIRMED"


async def claims(shop: Shop, event: events_pb2.StockReserved) -> int:
    """How many times the old replica's inbox claimed the event."""
    count = await shop.orders_db.fetchval(
        "SELECT count(*) FROM inbox WHERE consumer = 'old-release' AND event_id = $1",
        uuid.UUID(event.event_id),
    )
    return int(count)


async def test_a_replica_set_to_saga_version_1_places_orders_without_payment(
    shop: Shop,
    user: str,
    upstream_values: dict[str, Any],
    orders_db_url: str,
    amqp_settings: AmqpSettings,
) -> None:
    """CHECKOUT_SAGA_VERSION=1, the first step of an upgrade (a replica of the new release
    beside replicas of the previous one, which confirm on `stock.reserved`): a checkout needs no
    payment token, keeps none it is given, and places an order the previous release handles as
    its own; a malformed token is still refused, naming the field."""
    settings = order_settings(
        **upstream_values,
        **messaging_values(amqp_settings),
        ORDER_DB_NAME=urlsplit(orders_db_url).path.lstrip("/"),
        CHECKOUT_SAGA_VERSION="1",
    )
    async with (
        running_order(settings) as upgrading,
        grpc.aio.insecure_channel(
            upgrading.address, interceptors=[OwnerTokenInterceptor(AUTHORITY)]
        ) as channel,
    ):
        orders = order_pb2_grpc.OrderServiceStub(channel)
        placed = []
        for token in ("", "pm_card_ok"):
            await shop.filled_cart(user, 1)
            request = order_pb2.CheckoutRequest(
                user_id=user, idempotency_key=f"v1-{token or 'none'}", payment_token=token
            )
            placed.append((await orders.Checkout(request, timeout=10)).order)
        malformed = order_pb2.CheckoutRequest(user_id=user, payment_token="4242424242424242")
        await shop.filled_cart(user, 1)
        error = await rpc_error(orders.Checkout(malformed, timeout=10))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_of(error) == "payment_token"
    assert "4242424242424242" not in (error.details() or "")
    for order in placed:
        assert order.payment_status == order_pb2.PAYMENT_STATUS_UNSPECIFIED
        stored = await row(shop, order.id)
        assert (stored["saga_version"], stored["payment_status"]) == (1, None)
        [payload] = await shop.outbox(order.id, events_pb2.OrderCreated)
        assert events_pb2.OrderCreated.FromString(payload).payment_token == ""
    # What the previous release does on `stock.reserved` confirms it (no payment to wait for).
    await old_confirm(shop.orders_db, uuid.UUID(placed[0].id))
    assert (await row(shop, placed[0].id))["status"] == "CONFIRMED"
