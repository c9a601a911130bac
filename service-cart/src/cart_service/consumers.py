"""The events service-cart consumes: `order.confirmed` takes the order's lines out of the cart,
once per event (the chassis inbox kept in the cart's document: `CartStore.apply_event`)."""

from __future__ import annotations

import functools

from cart_service.handlers import Carts, on_order_confirmed
from chassis.messaging import Subscription
from ecommerce.events.v1 import events_pb2

QUEUE = "service-cart"
# The inbox's consumer name: the events this service has handled, claimed in each cart document.
CONSUMER = "service-cart"


def subscriptions(carts: Carts) -> list[Subscription]:
    return [
        Subscription.of(events_pb2.OrderConfirmed, functools.partial(on_order_confirmed, carts)),
    ]
