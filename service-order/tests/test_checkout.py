"""Checkout over real gRPC: the cart read from service-cart with the caller's token, every line
priced by service-product, the order PENDING with exactly one `order.created` in its outbox."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import grpc
import pytest

from chassis.errors import field_of
from chassis.testing.plugin import AmqpIsolation, CreateDatabase
from chassis.testing.tokens import OwnerTokenInterceptor
from ecommerce.cart.v1 import cart_pb2
from ecommerce.events.v1 import events_pb2
from ecommerce.order.v1 import order_pb2, order_pb2_grpc
from ecommerce.product.v1 import product_pb2

from .conftest import AUTHORITY, PAYMENT_TOKEN, Shop, order_settings, running_order
from .support import Tap, rpc_error, sample


async def test_checkout_places_a_pending_order_priced_from_the_catalogue(
    shop: Shop, user: str
) -> None:
    lamp, desk = await shop.filled_cart(user, 2, 1)
    created_before = sample("orders_created_total")

    order = await shop.checkout(user)

    assert order.status == order_pb2.ORDER_STATUS_PENDING
    assert order.cancel_reason == order_pb2.CANCEL_REASON_UNSPECIFIED
    assert order.payment_status == order_pb2.PAYMENT_STATUS_PENDING
    assert order.user_id == user
    assert [(i.product_id, i.name, i.quantity, i.unit_price_cents) for i in order.items] == [
        (lamp.id, lamp.name, 2, lamp.price_cents),
        (desk.id, desk.name, 1, desk.price_cents),
    ]
    assert [i.line_total_cents for i in order.items] == [2 * lamp.price_cents, desk.price_cents]
    assert order.total_cents == 2 * lamp.price_cents + desk.price_cents
    assert order.currency == "USD"
    assert order.created_at == order.updated_at
    assert await shop.get_order(user, order.id) == order
    assert sample("orders_created_total") == created_before + 1
    stored = await shop.orders_db.fetchrow(
        "SELECT saga_version, payment_token, payment_status FROM orders WHERE id = $1",
        uuid.UUID(order.id),
    )
    assert dict(stored) == {
        "saga_version": 2,
        "payment_token": PAYMENT_TOKEN,
        "payment_status": "PENDING",
    }


async def test_checkout_commits_exactly_one_order_created_and_publishes_it(
    shop: Shop, tap: Tap, user: str
) -> None:
    [product] = await shop.filled_cart(user, 3)

    order = await shop.checkout(user, payment_token="pm_card_declined")

    [payload] = await shop.outbox(order.id, events_pb2.OrderCreated)
    event = events_pb2.OrderCreated.FromString(payload)
    assert (event.order_id, event.user_id, event.currency) == (order.id, user, "USD")
    assert event.payment_token == "pm_card_declined"
    assert [(line.product_id, line.quantity, line.unit_price_cents) for line in event.lines] == [
        (product.id, 3, product.price_cents)
    ]
    assert event.total_cents == order.total_cents
    assert event.occurred_at == order.created_at
    uuid.UUID(event.event_id)
    [message] = await tap.wait_for(order.id, events_pb2.OrderCreated)
    assert message.message_id == event.event_id
    assert message.type == "ecommerce.events.v1.OrderCreated"
    assert message.content_type == "application/x-protobuf"
    assert message.correlation_id == order.id
    assert message.timestamp is not None
    assert events_pb2.OrderCreated.FromString(message.body) == event


async def test_an_empty_cart_is_a_failed_precondition(shop: Shop, user: str) -> None:
    error = await rpc_error(shop.checkout(user))

    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error.details() == "the cart is empty"


async def test_prices_come_from_the_catalogue_never_from_the_cart(shop: Shop, user: str) -> None:
    [product] = await shop.filled_cart(user, 2)
    await shop.products.UpdateProduct(
        product_pb2.UpdateProductRequest(id=product.id, price_cents=product.price_cents + 500),
        timeout=5,
    )
    # service-cart prices from a service-product whose cache still holds the old price.
    cart = (await shop.carts.GetCart(cart_pb2.GetCartRequest(user_id=user), timeout=5)).cart

    order = await shop.checkout(user)

    assert [i.unit_price_cents for i in cart.items] == [product.price_cents]
    assert [i.unit_price_cents for i in order.items] == [product.price_cents + 500]
    assert order.total_cents == 2 * (product.price_cents + 500)
    [payload] = await shop.outbox(order.id, events_pb2.OrderCreated)
    assert events_pb2.OrderCreated.FromString(payload).lines[0].unit_price_cents == (
        product.price_cents + 500
    )


async def test_a_product_that_no_longer_exists_is_named_and_nothing_is_placed(
    shop: Shop, user: str
) -> None:
    kept, gone = await shop.filled_cart(user, 1, 1)
    await shop.products_db.execute("DELETE FROM products WHERE id = $1", uuid.UUID(gone.id))
    cart = (await shop.carts.GetCart(cart_pb2.GetCartRequest(user_id=user), timeout=5)).cart

    error = await rpc_error(shop.checkout(user))

    assert [i.product_id for i in cart.items] == [kept.id, gone.id]  # the cart still shows it
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error.details() == f"product {gone.id} no longer exists (remove it from the cart)"
    assert await _orders_of(shop, user) == 0


async def test_lines_in_different_currencies_are_named_and_nothing_is_placed(
    shop: Shop, user: str
) -> None:
    _, second = await shop.filled_cart(user, 1, 1)
    await shop.products_db.execute(
        "UPDATE products SET currency = 'EUR' WHERE id = $1", uuid.UUID(second.id)
    )

    error = await rpc_error(shop.checkout(user))

    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "mixes currencies EUR and USD" in error.details()
    assert await _orders_of(shop, user) == 0


async def _orders_of(shop: Shop, user: str) -> int:
    count = await shop.orders_db.fetchval(
        "SELECT count(*) FROM orders WHERE user_id = $1", uuid.UUID(user)
    )
    return int(count)


async def test_one_key_sent_ten_times_at_once_makes_one_order(shop: Shop, user: str) -> None:
    await shop.filled_cart(user, 1)

    orders = await asyncio.gather(*(shop.checkout(user, key="pay-once") for _ in range(10)))

    assert len({order.id for order in orders}) == 1
    assert all(order == orders[0] for order in orders)
    assert await _orders_of(shop, user) == 1
    assert len(await shop.outbox(orders[0].id, events_pb2.OrderCreated)) == 1


async def test_a_used_key_returns_the_original_order_even_once_the_cart_changed(
    shop: Shop, user: str
) -> None:
    await shop.filled_cart(user, 1)
    first = await shop.checkout(user, key="retry-me")
    (added,) = await shop.filled_cart(user, 4)

    again = await shop.checkout(user, key="retry-me")
    other = await shop.checkout(user, key="another-key")

    assert again == first
    assert other.id != first.id
    # The first order is still PENDING: the other orders only what was added since.
    assert [(item.product_id, item.quantity) for item in other.items] == [(added.id, 4)]
    assert await _orders_of(shop, user) == 2


async def test_the_same_key_from_another_user_is_that_user_s_own_order(shop: Shop) -> None:
    ada, bob = str(uuid.uuid4()), str(uuid.uuid4())
    await shop.filled_cart(ada, 1)
    await shop.filled_cart(bob, 2)

    ada_order = await shop.checkout(ada, key="shared-key")
    bob_order = await shop.checkout(bob, key="shared-key")

    assert ada_order.id != bob_order.id
    assert (ada_order.user_id, bob_order.user_id) == (ada, bob)
    assert [i.quantity for i in bob_order.items] == [2]


async def test_a_malformed_key_is_an_invalid_argument_naming_it(shop: Shop, user: str) -> None:
    await shop.filled_cart(user, 1)

    for key in ("x" * 256, "has space", "caf\u00e9", "line\nbreak"):
        error = await rpc_error(shop.checkout(user, key=key))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, key
        assert field_of(error) == "idempotency_key", key
    assert await _orders_of(shop, user) == 0


async def test_a_missing_or_malformed_payment_token_is_an_invalid_argument_naming_it(
    shop: Shop, user: str
) -> None:
    await shop.filled_cart(user, 1)

    for token in ("", "card_ok", "pm_", "pm_card-ok", "pm_" + "x" * 65, "4111111111111111"):
        error = await rpc_error(shop.checkout(user, payment_token=token))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, token
        assert field_of(error) == "payment_token", token
    assert await _orders_of(shop, user) == 0


async def test_a_repeated_key_returns_its_order_with_the_payment_token_it_was_placed_with(
    shop: Shop, user: str
) -> None:
    await shop.filled_cart(user, 1)
    first = await shop.checkout(user, key="pay-twice", payment_token="pm_card_ok")

    again = await shop.checkout(user, key="pay-twice", payment_token="pm_card_slow")

    assert again == first
    [payload] = await shop.outbox(first.id, events_pb2.OrderCreated)
    assert events_pb2.OrderCreated.FromString(payload).payment_token == "pm_card_ok"


@pytest.mark.slow
async def test_with_the_cart_or_catalogue_silent_checkout_is_unavailable_within_the_deadline(
    shop: Shop,
    user: str,
    upstream_values: dict[str, Any],
    create_database: CreateDatabase,
    amqp_url: str,
    amqp_isolation: AmqpIsolation,
) -> None:
    await shop.filled_cart(user, 1)
    # A listener that accepts and never speaks HTTP/2: only the deadline ends the call.
    silent = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    silent_address = f"127.0.0.1:{silent.sockets[0].getsockname()[1]}"
    database = (await create_database("orders_silent")).rsplit("/", 1)[1]
    base = {
        **upstream_values,
        "ORDER_DB_NAME": database,
        "ORDER_RPC_TIMEOUT_SECONDS": 0.5,
        "AMQP_URL": amqp_url,
        "EVENTS_EXCHANGE": f"{amqp_isolation.queue_prefix}silent.events",
        "QUEUE_PREFIX": f"{amqp_isolation.queue_prefix}silent.",
    }
    codes = []
    async with silent:
        for upstream in ("CART_SERVICE_ADDR", "PRODUCT_SERVICE_ADDR"):
            settings = order_settings(**{**base, upstream: silent_address})
            async with (
                running_order(settings) as running,
                grpc.aio.insecure_channel(
                    running.address, interceptors=[OwnerTokenInterceptor(AUTHORITY)]
                ) as channel,
            ):
                request = order_pb2.CheckoutRequest(user_id=user, payment_token=PAYMENT_TOKEN)
                # The client gives 5 s; service-order must answer first, after its own 0.5 s.
                call = order_pb2_grpc.OrderServiceStub(channel).Checkout(request, timeout=5)
                codes.append((await rpc_error(call)).code())

    assert codes == [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAVAILABLE]
