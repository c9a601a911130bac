"""The events service-cart consumes: `order.confirmed` takes the order's lines out of the cart."""

from __future__ import annotations

import functools

from cart_service.handlers import Carts, on_order_confirmed
from chassis.messaging import Subscription
from ecommerce.events.v1 import events_pb2

QUEUE = "service-cart"


def subscriptions(carts: Carts) -> list[Subscription]:
    return [
        Subscription(
            "order.confirmed",
            events_pb2.OrderConfirmed,
            functools.partial(on_order_confirmed, carts),
        )
    ]
