"""The events service-product consumes: one line per event type, each handler running in the
unit of work that claims its event in the inbox first."""

from __future__ import annotations

from chassis.messaging import Subscription
from chassis.unit_of_work import HandledOnce
from ecommerce.events.v1 import events_pb2
from product_service.handlers import NewUnitOfWork, Stock

QUEUE = "service-product"


def subscriptions(new_unit_of_work: NewUnitOfWork, stock: Stock) -> list[Subscription]:
    once = HandledOnce(new_unit_of_work)
    return [
        Subscription.of(events_pb2.OrderCreated, once(stock.on_order_created)),
        Subscription.of(events_pb2.OrderCancelled, once(stock.on_order_cancelled)),
    ]
