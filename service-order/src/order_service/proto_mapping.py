"""Translation from the domain to protobuf: the Order of the gRPC API and the saga events
service-order publishes (their business fields: the chassis stamps event id and time, and
derives routing key and correlation id from each event's proto declaration)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from google.protobuf.timestamp_pb2 import Timestamp

from ecommerce.events.v1 import events_pb2
from ecommerce.order.v1 import order_pb2
from order_service.domain import CancelReason, Order, OrderLine, OrderStatus
from order_service.store import MovedOrder

_STATUS = {
    OrderStatus.PENDING: order_pb2.ORDER_STATUS_PENDING,
    OrderStatus.CONFIRMED: order_pb2.ORDER_STATUS_CONFIRMED,
    OrderStatus.CANCELLED: order_pb2.ORDER_STATUS_CANCELLED,
}
_REASON = {
    CancelReason.OUT_OF_STOCK: order_pb2.CANCEL_REASON_OUT_OF_STOCK,
    CancelReason.USER_CANCELLED: order_pb2.CANCEL_REASON_USER_CANCELLED,
    CancelReason.TIMEOUT: order_pb2.CANCEL_REASON_TIMEOUT,
}
_EVENT_REASON = {
    CancelReason.OUT_OF_STOCK: events_pb2.ORDER_CANCEL_REASON_OUT_OF_STOCK,
    CancelReason.USER_CANCELLED: events_pb2.ORDER_CANCEL_REASON_USER_CANCELLED,
    CancelReason.TIMEOUT: events_pb2.ORDER_CANCEL_REASON_TIMEOUT,
}


def timestamp(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def order_to_proto(order: Order) -> order_pb2.Order:
    return order_pb2.Order(
        id=str(order.id),
        user_id=str(order.user_id),
        status=_STATUS[order.status],
        cancel_reason=(
            order_pb2.CANCEL_REASON_UNSPECIFIED
            if order.cancel_reason is None
            else _REASON[order.cancel_reason]
        ),
        items=[
            order_pb2.OrderItem(
                product_id=str(line.product_id),
                name=line.name,
                quantity=line.quantity,
                unit_price_cents=line.unit_price_cents,
                line_total_cents=line.line_total_cents,
            )
            for line in order.lines
        ],
        total_cents=order.total_cents,
        currency=order.currency,
        created_at=timestamp(order.created_at),
        updated_at=timestamp(order.updated_at),
    )


def _event_lines(lines: Sequence[OrderLine]) -> list[events_pb2.OrderLine]:
    return [
        events_pb2.OrderLine(
            product_id=str(line.product_id),
            quantity=line.quantity,
            unit_price_cents=line.unit_price_cents,
        )
        for line in lines
    ]


def order_created(order: Order) -> events_pb2.OrderCreated:
    return events_pb2.OrderCreated(
        order_id=str(order.id),
        user_id=str(order.user_id),
        lines=_event_lines(order.lines),
        total_cents=order.total_cents,
        currency=order.currency,
    )


def order_confirmed(moved: MovedOrder, lines: Sequence[OrderLine]) -> events_pb2.OrderConfirmed:
    return events_pb2.OrderConfirmed(
        order_id=str(moved.id),
        user_id=str(moved.user_id),
        lines=_event_lines(lines),
    )


def order_cancelled(moved: MovedOrder, reason: CancelReason) -> events_pb2.OrderCancelled:
    return events_pb2.OrderCancelled(
        order_id=str(moved.id),
        user_id=str(moved.user_id),
        reason=_EVENT_REASON[reason],
    )
