"""Payments to protobuf: the GetPayment message and the events a move publishes (business fields
only: the chassis derives the routing key and correlation id, and stamps the id and time)."""

from __future__ import annotations

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from chassis.proto_enums import ProtoEnumNames
from ecommerce.events.v1 import events_pb2
from ecommerce.payment.v1 import payment_pb2
from payment_service.domain import Payment, PaymentEvent, PaymentState

STATES = ProtoEnumNames(payment_pb2.PaymentState, prefix="PAYMENT_STATE_")


def _timestamp(payment: Payment, field: str) -> Timestamp | None:
    value = getattr(payment, field)
    if value is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


def payment_to_proto(payment: Payment) -> payment_pb2.Payment:
    return payment_pb2.Payment(
        order_id=str(payment.order_id),
        user_id="" if payment.user_id is None else str(payment.user_id),
        state=STATES.number(payment.state.value),  # type: ignore[arg-type]
        amount_cents=payment.amount_cents or 0,
        currency=payment.currency or "",
        provider_attempts=payment.provider_attempts,
        decline_reason=payment.decline_reason or "",
        created_at=_timestamp(payment, "created_at"),
        updated_at=_timestamp(payment, "updated_at"),
    )


def payment_event(payment: Payment, event: PaymentEvent) -> Message:
    """The event of a move of `payment` (as it is after the move)."""
    order_id = str(payment.order_id)
    if event is PaymentEvent.AUTHORIZED:
        return events_pb2.PaymentAuthorized(
            order_id=order_id,
            amount_cents=payment.amount_cents or 0,
            currency=payment.currency or "",
        )
    if event is PaymentEvent.DECLINED:
        return events_pb2.PaymentDeclined(order_id=order_id, reason=payment.decline_reason or "")
    if event is PaymentEvent.VOIDED:
        return events_pb2.PaymentVoided(order_id=order_id)
    return events_pb2.PaymentRefunded(
        order_id=order_id, amount_cents=payment.amount_cents or 0, currency=payment.currency or ""
    )


# Each state a move ends in, with the event it publishes (checked against the protos in tests).
TERMINAL_EVENTS = {
    PaymentState.AUTHORIZED: PaymentEvent.AUTHORIZED,
    PaymentState.DECLINED: PaymentEvent.DECLINED,
    PaymentState.VOIDED: PaymentEvent.VOIDED,
    PaymentState.REFUNDED: PaymentEvent.REFUNDED,
}
