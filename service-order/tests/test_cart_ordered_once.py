"""A cart is ordered once: a checkout subtracts the lines of the buyer's live orders (PENDING,
or confirmed and not yet given up by the cart), so checking out again while an order is on its
way orders only what was added since, and answers with that order when nothing was (or, when
the orders holding the cart are already confirmed, FAILED_PRECONDITION saying so).

The cart here is a real service-cart on an exchange of its own: it gives an order's lines up
only when a test publishes that order's `order.confirmed` to it (`cart_clears`)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import grpc
import pytest

from chassis.messaging import Broker
from chassis.settings import AmqpSettings
from chassis.testing.plugin import AmqpIsolation
from ecommerce.cart.v1 import cart_pb2
from ecommerce.events.v1 import events_pb2
from ecommerce.order.v1 import order_pb2

from .conftest import Shop
from .support import eventually
from .test_saga_events import authorized, handled


@pytest.fixture(scope="session")
async def cart_broker(amqp_url: str, amqp_isolation: AmqpIsolation) -> AsyncIterator[Broker]:
    """Plays service-order towards the cart: `order.confirmed` to the upstreams' exchange."""
    settings = AmqpSettings(
        amqp_url=amqp_url,
        events_exchange=f"{amqp_isolation.queue_prefix}upstreams.events",
        queue_prefix=f"{amqp_isolation.queue_prefix}upstreams.",
    )
    broker = Broker(settings, "order-tests", connection_name=f"once-cart-{uuid.uuid4()}")
    await broker.connect()
    yield broker
    await broker.close()


def units(order: order_pb2.Order) -> dict[str, int]:
    return {item.product_id: item.quantity for item in order.items}


async def orders_of(shop: Shop, user: str) -> int:
    count = await shop.orders_db.fetchval(
        "SELECT count(*) FROM orders WHERE user_id = $1", uuid.UUID(user)
    )
    return int(count)


async def created_events(shop: Shop, user: str) -> int:
    count = await shop.orders_db.fetchval(
        "SELECT count(*) FROM outbox WHERE event_type = $1 AND correlation_id IN"
        " (SELECT id::text FROM orders WHERE user_id = $2)",
        events_pb2.OrderCreated.DESCRIPTOR.full_name,
        uuid.UUID(user),
    )
    return int(count)


async def cart_clears(cart_broker: Broker, shop: Shop, user: str, order: order_pb2.Order) -> None:
    """The cart handles the order's `order.confirmed`: its lines leave, the order is listed."""
    await cart_broker.publish(
        events_pb2.OrderConfirmed(
            order_id=order.id,
            user_id=user,
            lines=[
                events_pb2.OrderLine(product_id=item.product_id, quantity=item.quantity)
                for item in order.items
            ],
        )
    )

    async def listed() -> bool:
        reply = await shop.carts.GetCart(cart_pb2.GetCartRequest(user_id=user), timeout=5)
        return order.id in reply.cleared_order_ids

    await eventually(listed)


async def test_a_second_checkout_while_the_first_is_pending_answers_with_that_order(
    shop: Shop, user: str
) -> None:
    await shop.filled_cart(user, 1)

    first = await shop.checkout(user)
    again = await shop.checkout(user, key="a-new-key")

    assert again == first
    assert await orders_of(shop, user) == 1
    assert await created_events(shop, user) == 1
    # The key now names that order: sent again, it answers with it whatever the cart holds.
    await shop.filled_cart(user, 3)
    assert await shop.checkout(user, key="a-new-key") == first


async def test_a_checkout_orders_only_what_was_added_since_the_pending_order(
    shop: Shop, user: str
) -> None:
    (kettle,) = await shop.filled_cart(user, 2)
    first = await shop.checkout(user)
    await shop.add_to_cart(user, kettle.id, 1)
    (mug,) = await shop.filled_cart(user, 3)

    second = await shop.checkout(user)

    assert units(first) == {kettle.id: 2}
    assert units(second) == {kettle.id: 1, mug.id: 3}
    assert second.total_cents == 1250 * 4


async def test_checkouts_of_one_cart_sent_at_once_make_one_order(shop: Shop, user: str) -> None:
    await shop.filled_cart(user, 2, 1)

    answers = await asyncio.gather(*(shop.checkout(user) for _ in range(8)))

    assert len({order.id for order in answers}) == 1
    assert await orders_of(shop, user) == 1
    assert await created_events(shop, user) == 1


async def test_a_confirmed_order_counts_until_the_cart_has_given_its_lines_up(
    shop: Shop, user: str, broker: Broker, cart_broker: Broker
) -> None:
    (kettle,) = await shop.filled_cart(user, 2)
    first = await shop.checkout(user)
    await handled(broker, shop, authorized(first.id))
    assert (await shop.get_order(user, first.id)).status == order_pb2.ORDER_STATUS_CONFIRMED

    # Confirmed, but its lines are still in the cart: they are not ordered again, and the
    # answer says why (a 202 carries a PENDING order only).
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await shop.checkout(user)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert f"in order {first.id}, already confirmed" in (refused.value.details() or "")
    # What is added meanwhile is new: only that is ordered.
    (mug,) = await shop.filled_cart(user, 1)
    second = await shop.checkout(user)
    assert units(second) == {mug.id: 1}

    # Once the cart has given the first order's lines up, the same product is new again.
    await cart_clears(cart_broker, shop, user, first)
    await shop.add_to_cart(user, kettle.id, 2)
    third = await shop.checkout(user)
    assert third.id not in (first.id, second.id)
    assert units(third) == {kettle.id: 2}


async def test_a_cancelled_order_that_was_never_confirmed_leaves_its_lines_to_order_again(
    shop: Shop, user: str
) -> None:
    await shop.filled_cart(user, 1)
    first = await shop.checkout(user)
    await shop.orders.CancelOrder(
        order_pb2.CancelOrderRequest(user_id=user, order_id=first.id), timeout=5
    )

    second = await shop.checkout(user)

    assert second.id != first.id
    assert units(second) == units(first)
