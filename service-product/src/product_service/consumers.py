"""The events service-product consumes: routing key -> message type -> handler, each handler in
the unit of work that claims its event in the inbox."""

from __future__ import annotations

from chassis.messaging import Subscription
from chassis.unit_of_work import handled_once
from ecommerce.events.v1 import events_pb2
from product_service.handlers import NewUnitOfWork, Stock

QUEUE = "service-product"


def subscriptions(new_unit_of_work: NewUnitOfWork, stock: Stock) -> list[Subscription]:
    return [
        Subscription(
            "order.created",
            events_pb2.OrderCreated,
            handled_once(new_unit_of_work, stock.on_order_created),
        ),
        Subscription(
            "order.cancelled",
            events_pb2.OrderCancelled,
            handled_once(new_unit_of_work, stock.on_order_cancelled),
        ),
    ]
