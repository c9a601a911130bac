"""The saga events service-order consumes on its queue, each handler wrapped by the inbox so a
redelivered event is acknowledged with no effect."""

from __future__ import annotations

from collections.abc import Callable

from chassis.messaging import Subscription
from chassis.unit_of_work import handled_once
from ecommerce.events.v1 import events_pb2
from order_service import handlers
from order_service.store import OrderUnitOfWork

QUEUE = "service-order"
# The inbox's consumer name: the event ids this service has handled.
CONSUMER = "service-order"


def subscriptions(new_unit_of_work: Callable[[], OrderUnitOfWork]) -> list[Subscription]:
    return [
        Subscription(
            "stock.reserved",
            events_pb2.StockReserved,
            handled_once(new_unit_of_work, handlers.on_stock_reserved),
        ),
        Subscription(
            "stock.reservation_failed",
            events_pb2.StockReservationFailed,
            handled_once(new_unit_of_work, handlers.on_stock_reservation_failed),
        ),
        Subscription(
            "stock.released",
            events_pb2.StockReleased,
            handled_once(new_unit_of_work, handlers.on_stock_released),
        ),
    ]
