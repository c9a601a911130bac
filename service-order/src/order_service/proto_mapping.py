"""Translation from the domain to protobuf: the Order of the gRPC API and the saga events
service-order publishes (their business fields: the chassis stamps event id and time, and
derives routing key and correlation id from each event's proto declaration)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from google.protobuf.timestamp_pb2 import Timestamp

from chassis.proto_enums import ProtoEnumNames
from ecommerce.events.v1 import events_pb2
from ecommerce.order.v1 import order_pb2
from order_service.domain import CancelReason, Order, OrderLine, OrderStatus, PaymentStatus
from order_service.store import MovedOrder

# The proto enums by name: the domain's StrEnums hold the same names (tests/test_proto_mapping.py
# iterates every proto value), so a translation is a lookup that fails on an unknown value.
STATUS = ProtoEnumNames(order_pb2.OrderStatus, prefix="ORDER_STATUS_")
CANCEL_REASON = ProtoEnumNames(order_pb2.CancelReason, prefix="CANCEL_REASON_")
EVENT_CANCEL_REASON = ProtoEnumNames(events_pb2.OrderCancelReason, prefix="ORDER_CANCEL_REASON_")
PAYMENT_STATUS = ProtoEnumNames(order_pb2.PaymentStatus, prefix="PAYMENT_STATUS_")


def status_to_proto(status: OrderStatus) -> order_pb2.OrderStatus.ValueType:
    return order_pb2.OrderStatus.ValueType(STATUS.number(status.value))


def cancel_reason_to_proto(reason: CancelReason | None) -> order_pb2.CancelReason.ValueType:
    if reason is None:
        return order_pb2.CANCEL_REASON_UNSPECIFIED
    return order_pb2.CancelReason.ValueType(CANCEL_REASON.number(reason.value))


def payment_status_to_proto(
    status: PaymentStatus | None,
) -> order_pb2.PaymentStatus.ValueType:
    """None (an order of saga version 1, placed before payments existed) is UNSPECIFIED."""
    if status is None:
        return order_pb2.PAYMENT_STATUS_UNSPECIFIED
    return order_pb2.PaymentStatus.ValueType(PAYMENT_STATUS.number(status.value))


def event_cancel_reason(reason: CancelReason) -> events_pb2.OrderCancelReason.ValueType:
    return events_pb2.OrderCancelReason.ValueType(EVENT_CANCEL_REASON.number(reason.value))


def timestamp(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def order_to_proto(order: Order) -> order_pb2.Order:
    return order_pb2.Order(
        id=str(order.id),
        user_id=str(order.user_id),
        status=status_to_proto(order.status),
        cancel_reason=cancel_reason_to_proto(order.cancel_reason),
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
        payment_status=payment_status_to_proto(order.payment_status),
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
        payment_token=order.payment_token or "",
    )


def order_confirmed(moved: MovedOrder, lines: Sequence[OrderLine]) -> events_pb2.OrderConfirmed:
    return events_pb2.OrderConfirmed(
        order_id=str(moved.id),
        user_id=str(moved.user_id),
        lines=_event_lines(lines),
    )


def order_cancelled(
    moved: MovedOrder, reason: CancelReason, *, was_confirmed: bool
) -> events_pb2.OrderCancelled:
    """`was_confirmed`: the order was CONFIRMED until this cancel (its payment is refunded,
    not voided)."""
    return events_pb2.OrderCancelled(
        order_id=str(moved.id),
        user_id=str(moved.user_id),
        reason=event_cancel_reason(reason),
        was_confirmed=was_confirmed,
    )
