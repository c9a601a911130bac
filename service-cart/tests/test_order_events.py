"""service-cart in the checkout saga: `order.confirmed`, delivered by the real broker to the real
service, takes exactly the ordered quantities out of the buyer's cart, once per event (service-order
publishes one `order.confirmed` per order: its PENDING -> CONFIRMED move happens once)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from chassis.messaging import Broker
from chassis.settings import AmqpSettings
from chassis.testing.waiting import eventually
from ecommerce.cart.v1 import cart_pb2
from ecommerce.events.v1 import events_pb2

from .conftest import RUN_BROKER, Platform
from .test_cart_api import add, new_user


@pytest.fixture
async def broker(platform: Platform) -> AsyncIterator[Broker]:
    settings = AmqpSettings(
        amqp_url=RUN_BROKER["AMQP_URL"],
        events_exchange=RUN_BROKER["EVENTS_EXCHANGE"],
        queue_prefix=RUN_BROKER["QUEUE_PREFIX"],
    )
    broker = Broker(settings, "cart-tests", connection_name=f"cart-tests-{uuid.uuid4()}")
    await broker.connect()
    yield broker
    await broker.close()


def order_confirmed(user: str, order_id: str, *lines: tuple[str, int]) -> events_pb2.OrderConfirmed:
    return events_pb2.OrderConfirmed(
        order_id=order_id,
        user_id=user,
        lines=[events_pb2.OrderLine(product_id=p, quantity=q) for p, q in lines],
    )


async def quantities(platform: Platform, user: str) -> dict[str, int]:
    reply = await platform.carts.GetCart(cart_pb2.GetCartRequest(user_id=user), timeout=5)
    return {item.product_id: item.quantity for item in reply.cart.items}


async def test_a_confirmed_order_leaves_the_cart_once_and_later_lines_stay(
    platform: Platform, broker: Broker
) -> None:
    user = new_user()
    kettle, mug, tea = [await platform.create_product(stock=20) for _ in range(3)]
    await add(platform, user, kettle.id, 2)
    await add(platform, user, mug.id, 3)
    order_id = str(uuid.uuid4())
    # After checkout the buyer goes on shopping: one more mug and some tea.
    await add(platform, user, mug.id, 1)
    await add(platform, user, tea.id, 5)
    confirmed = order_confirmed(user, order_id, (kettle.id, 2), (mug.id, 3))
    for _ in range(3):  # a duplicated event, twice over
        await broker.publish(confirmed)

    async def taken_out() -> bool:
        return kettle.id not in await quantities(platform, user)

    await eventually(taken_out)
    await asyncio.sleep(0.5)
    assert await quantities(platform, user) == {mug.id: 1, tea.id: 5}
    # What a checkout reads: this order's lines are no longer in the cart, once.
    reply = await platform.carts.GetCart(cart_pb2.GetCartRequest(user_id=user), timeout=5)
    assert list(reply.cleared_order_ids) == [order_id]


async def test_a_malformed_confirmation_goes_to_the_dead_letter_queue(broker: Broker) -> None:
    dlq = f"{broker.settings.queue_prefix}service-cart.dlq"
    before = await broker.queue_depth(dlq)
    await broker.publish(order_confirmed("not-a-user", str(uuid.uuid4()), (str(uuid.uuid4()), 1)))

    async def dead_lettered() -> bool:
        return await broker.queue_depth(dlq) == before + 1

    await eventually(dead_lettered)
