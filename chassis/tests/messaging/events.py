"""Sample saga events for the messaging specs."""

from __future__ import annotations

import uuid

from ecommerce.events.v1 import events_pb2


def order_created(order_id: str | None = None, quantity: int = 1) -> events_pb2.OrderCreated:
    event = events_pb2.OrderCreated(
        event_id=str(uuid.uuid4()),
        order_id=order_id or str(uuid.uuid4()),
        user_id=str(uuid.uuid4()),
        lines=[
            events_pb2.OrderLine(
                product_id=str(uuid.uuid4()), quantity=quantity, unit_price_cents=250
            )
        ],
        total_cents=250 * quantity,
        currency="USD",
    )
    event.occurred_at.GetCurrentTime()
    return event


def order_cancelled(order_id: str | None = None) -> events_pb2.OrderCancelled:
    event = events_pb2.OrderCancelled(
        event_id=str(uuid.uuid4()),
        order_id=order_id or str(uuid.uuid4()),
        user_id=str(uuid.uuid4()),
        reason=events_pb2.ORDER_CANCEL_REASON_USER_CANCELLED,
    )
    event.occurred_at.GetCurrentTime()
    return event
