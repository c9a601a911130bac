"""The saga events service-order consumes on its queue: one line per event type, each handler
running in a unit of work that claims the event in the inbox first (a redelivered event is
acknowledged with no effect)."""

from __future__ import annotations

from collections.abc import Callable

from chassis.messaging import Subscription
from chassis.unit_of_work import HandledOnce
from ecommerce.events.v1 import events_pb2
from order_service import handlers
from order_service.store import OrderUnitOfWork

QUEUE = "service-order"
# The inbox's consumer name: the event ids this service has handled.
CONSUMER = "service-order"


def subscriptions(new_unit_of_work: Callable[[], OrderUnitOfWork]) -> list[Subscription]:
    once = HandledOnce(new_unit_of_work)
    return [
        Subscription.of(events_pb2.StockReserved, once(handlers.on_stock_reserved)),
        Subscription.of(
            events_pb2.StockReservationFailed, once(handlers.on_stock_reservation_failed)
        ),
        Subscription.of(events_pb2.StockReleased, once(handlers.on_stock_released)),
    ]
