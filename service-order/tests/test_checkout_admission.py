"""Checkout admission: while the saga is behind (orders PENDING for too long, an outbox that is
not being published), a new checkout is refused at once with UNAVAILABLE and retry advice, so
accepted orders do not pile up and end as TIMEOUT cancellations; under the bounds, and once the
backlog is gone, nothing is refused."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import grpc
import pytest

from chassis.errors import retry_after_of
from chassis.testing.plugin import AmqpIsolation, CreateDatabase
from chassis.testing.proxy import TcpProxy
from chassis.testing.tokens import OwnerTokenInterceptor
from ecommerce.order.v1 import order_pb2, order_pb2_grpc
from order_service.checkout_admission import BacklogBounds, BacklogReading, bound_passed

from .conftest import AUTHORITY, PAYMENT_TOKEN, Shop, order_settings, running_order
from .support import eventually, sample

BOUNDS = BacklogBounds(
    stale_after_seconds=10, max_stale_orders=50, max_outbox=1000, max_outbox_age_seconds=10
)


def test_a_backlog_within_every_bound_refuses_nothing() -> None:
    assert bound_passed(BacklogReading(50, 1000, 10.0), BOUNDS) is None
    assert bound_passed(BacklogReading(0, 0, 0.0), BOUNDS) is None


def test_each_bound_passed_is_named() -> None:
    assert bound_passed(BacklogReading(51, 0, 0.0), BOUNDS) == "stale_orders"
    assert bound_passed(BacklogReading(0, 1001, 0.0), BOUNDS) == "outbox"
    assert bound_passed(BacklogReading(0, 1, 10.5), BOUNDS) == "outbox_age"


@contextlib.asynccontextmanager
async def order_service_with(
    name: str,
    create_database: CreateDatabase,
    upstream_values: dict[str, Any],
    amqp_url: str,
    amqp_isolation: AmqpIsolation,
    **bounds: Any,
) -> AsyncIterator[order_pb2_grpc.OrderServiceStub]:
    """A service-order of its own (database, exchange, queues) with the given admission
    settings; nobody plays the saga's other participants, so its orders stay PENDING."""
    database = (await create_database(f"orders_{name}")).rsplit("/", 1)[1]
    settings = order_settings(
        **upstream_values,
        ORDER_DB_NAME=database,
        AMQP_URL=amqp_url,
        EVENTS_EXCHANGE=f"{amqp_isolation.queue_prefix}{name}.events",
        QUEUE_PREFIX=f"{amqp_isolation.queue_prefix}{name}.",
        CHECKOUT_BACKLOG_SAMPLE_SECONDS=0.1,
        **bounds,
    )
    async with (
        running_order(settings) as running,
        grpc.aio.insecure_channel(
            running.address, interceptors=[OwnerTokenInterceptor(AUTHORITY)]
        ) as channel,
    ):
        yield order_pb2_grpc.OrderServiceStub(channel)


async def checkout(
    orders: order_pb2_grpc.OrderServiceStub, user: str, key: str = ""
) -> order_pb2.Order:
    request = order_pb2.CheckoutRequest(
        user_id=user, idempotency_key=key, payment_token=PAYMENT_TOKEN
    )
    return (await orders.Checkout(request, timeout=10)).order


async def first_refusal(
    orders: order_pb2_grpc.OrderServiceStub, user: str, accepted: list[order_pb2.Order]
) -> grpc.aio.AioRpcError:
    """Check out again and again (a bounded wait) until a checkout is refused; the orders
    accepted meanwhile are added to `accepted`."""
    refusals: list[grpc.aio.AioRpcError] = []

    async def refused() -> bool:
        try:
            accepted.append(await checkout(orders, user))
        except grpc.aio.AioRpcError as error:
            refusals.append(error)
        return bool(refusals)

    await eventually(refused, within=20, every=0.2)
    return refusals[0]


@pytest.mark.slow
async def test_checkouts_are_refused_with_retry_advice_while_orders_stay_pending_too_long(
    shop: Shop,
    create_database: CreateDatabase,
    upstream_values: dict[str, Any],
    amqp_url: str,
    amqp_isolation: AmqpIsolation,
) -> None:
    user = str(uuid.uuid4())
    await shop.filled_cart(user, 1)
    async with order_service_with(
        "admission_stale",
        create_database,
        upstream_values,
        amqp_url,
        amqp_isolation,
        CHECKOUT_BACKLOG_STALE_SECONDS=0.3,
        CHECKOUT_BACKLOG_MAX_STALE_ORDERS=1,
    ) as orders:
        # Under the bound (one stale order allowed), checkouts are accepted.
        first = await checkout(orders, user, key="first")
        await shop.filled_cart(user, 1)  # something new, or the pending order is the answer
        second = await checkout(orders, user)
        assert second.id != first.id
        assert first.status == second.status == order_pb2.ORDER_STATUS_PENDING
        refused_before = sample("checkouts_refused_total", bound="stale_orders")

        # Once both orders have aged past 0.3 s and a sample saw them, the next is refused.
        accepted = [first, second]
        error = await first_refusal(orders, user, accepted)
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        assert (
            error.details()
            == "checkouts are paused while earlier orders are processed, retry later"
        )
        assert retry_after_of(error) == 1
        assert sample("checkouts_refused_total", bound="stale_orders") > refused_before
        # A repeat with a key already used still gets its order: it adds nothing to the saga.
        assert (await checkout(orders, user, key="first")).id == first.id

        # The backlog gone (the shopper cancels every order), checkouts are accepted again.
        # (A checkout with nothing new answered with the pending order: each order once.)
        for order_id in sorted({order.id for order in accepted}):
            cancel = order_pb2.CancelOrderRequest(user_id=user, order_id=order_id)
            await orders.CancelOrder(cancel, timeout=5)

        async def accepted() -> bool:
            try:
                await checkout(orders, user)
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.UNAVAILABLE:
                    raise
                return False
            return True

        await eventually(accepted, within=20, every=0.2)


@pytest.mark.slow
async def test_events_waiting_in_the_outbox_past_its_bound_refuse_checkouts(
    shop: Shop,
    create_database: CreateDatabase,
    upstream_values: dict[str, Any],
    amqp_url: str,
    amqp_isolation: AmqpIsolation,
) -> None:
    user = str(uuid.uuid4())
    await shop.filled_cart(user, 1)
    broker = urlsplit(amqp_url)
    async with TcpProxy(broker.hostname or "127.0.0.1", broker.port or 5672) as proxy:
        through_proxy = broker._replace(
            netloc=f"{broker.netloc.rpartition('@')[0]}@127.0.0.1:{proxy.port}"
        )
        async with order_service_with(
            "admission_outbox",
            create_database,
            upstream_values,
            urlunsplit(through_proxy),
            amqp_isolation,
            CHECKOUT_BACKLOG_MAX_OUTBOX=0,
            CHECKOUT_BACKLOG_MAX_OUTBOX_AGE_SECONDS=3600,
        ) as orders:
            await proxy.cut()  # the relay can publish nothing from now on
            await checkout(orders, user)  # nothing waits in the outbox yet: accepted

            error = await first_refusal(orders, user, [])
            assert error.code() == grpc.StatusCode.UNAVAILABLE
            assert retry_after_of(error) == 1
            assert sample("checkouts_refused_total", bound="outbox") >= 1
