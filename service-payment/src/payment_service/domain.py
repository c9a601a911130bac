"""Payments and their rules: the states, what each saga event changes in what a payment knows,
and the pure decision of what to do next (nothing, a change without the provider, or one call to
the provider), plus where a provider's answer moves a payment.

Pure: no I/O, no protobuf. The store persists what these functions return; the handlers and the
worker call them under the row's lock (handlers) or with a guard on the state (worker).
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum

from chassis.errors import InvalidArgument, NotFound


# The states are those of the protos (ecommerce.payment.v1.PaymentState without its prefix);
# tests/test_domain.py holds them together.
class PaymentState(StrEnum):
    PENDING = "PENDING"
    AUTHORIZING = "AUTHORIZING"
    AUTHORIZED = "AUTHORIZED"
    CAPTURED = "CAPTURED"
    DECLINED = "DECLINED"
    VOIDED = "VOIDED"
    REFUNDED = "REFUNDED"


# Nothing moves a payment out of these.
FINAL_STATES = frozenset({PaymentState.DECLINED, PaymentState.VOIDED, PaymentState.REFUNDED})


class Operation(StrEnum):
    """A call to the provider (the `operation` label of the metrics)."""

    AUTHORIZE = "authorize"
    CAPTURE = "capture"
    VOID = "void"
    REFUND = "refund"


class PaymentEvent(StrEnum):
    """The event a move publishes (one per outcome; a capture publishes none)."""

    AUTHORIZED = "payment.authorized"
    DECLINED = "payment.declined"
    VOIDED = "payment.voided"
    REFUNDED = "payment.refunded"


@dataclass(frozen=True, slots=True)
class Payment:
    """One order's payment as stored. Until `intent_known` (its `order.created` with a payment
    token arrived) the row only remembers saga facts that came early; user, amount, currency and
    token are then None."""

    order_id: uuid.UUID
    user_id: uuid.UUID | None
    amount_cents: int | None
    currency: str | None
    payment_token: str | None
    state: PaymentState
    intent_known: bool = False
    stock_reserved: bool = False
    confirmed: bool = False
    cancel_requested: bool = False
    cancelled_after_confirmation: bool = False
    provider_attempts: int = 0
    consecutive_failures: int = 0
    decline_reason: str | None = None
    next_attempt_at: datetime | None = None
    wanted_since: datetime | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    # The trace (W3C context as JSON) of the event that last made the payment due.
    trace_context: str | None = None


def new_payment(order_id: uuid.UUID) -> Payment:
    """The row an event makes for an order seen for the first time (nothing known yet)."""
    return Payment(
        order_id=order_id,
        user_id=None,
        amount_cents=None,
        currency=None,
        payment_token=None,
        state=PaymentState.PENDING,
    )


# What the saga's events tell a payment. Each is idempotent (applying it twice is applying it
# once) and commutes with the others, so events may come in any order and more than once.
def with_intent(
    payment: Payment,
    *,
    user_id: uuid.UUID,
    amount_cents: int,
    currency: str,
    payment_token: str,
) -> Payment:
    """`order.created` with a payment token: what to charge. The first intent stays."""
    if payment.intent_known:
        return payment
    return replace(
        payment,
        intent_known=True,
        user_id=user_id,
        amount_cents=amount_cents,
        currency=currency,
        payment_token=payment_token,
    )


def with_stock_reserved(payment: Payment) -> Payment:
    """`stock.reserved`: the order can be paid for."""
    return replace(payment, stock_reserved=True)


def with_reservation_failed(payment: Payment) -> Payment:
    """`stock.reservation_failed`: the order will be cancelled; nothing is to be charged."""
    return replace(payment, cancel_requested=True)


def with_confirmed(payment: Payment) -> Payment:
    """`order.confirmed`: the authorisation is to be captured."""
    return replace(payment, confirmed=True)


def with_cancelled(payment: Payment, *, was_confirmed: bool) -> Payment:
    """`order.cancelled`: void what is not captured, refund what is (or was confirmed)."""
    return replace(
        payment,
        cancel_requested=True,
        cancelled_after_confirmation=payment.cancelled_after_confirmation or was_confirmed,
    )


@dataclass(frozen=True, slots=True)
class Wait:
    """Nothing to do until another event comes."""


@dataclass(frozen=True, slots=True)
class Move:
    """A change made at once, in the transaction that decided it (no provider involved)."""

    target: PaymentState
    event: PaymentEvent | None


@dataclass(frozen=True, slots=True)
class Call:
    """One provider operation, made by the worker outside any transaction."""

    operation: Operation


Step = Wait | Move | Call

# PENDING -> AUTHORIZING: the authorisation is wanted (the worker then calls the provider).
START_AUTHORIZING = Move(PaymentState.AUTHORIZING, None)
# PENDING -> VOIDED: cancelled before anything reached the provider.
CLOSE = Move(PaymentState.VOIDED, PaymentEvent.VOIDED)


def next_step(payment: Payment) -> Step:
    """What the payment needs next, from its state and what the saga told it.

    | state | condition | step |
    | --- | --- | --- |
    | any | intent unknown | wait |
    | PENDING | cancel wanted (a cancellation or a failed reservation) | VOIDED, payment.voided |
    | PENDING | stock reserved | AUTHORIZING (then authorize) |
    | AUTHORIZING | cancel wanted | void (an order is confirmed only once authorised) |
    | AUTHORIZING | otherwise | authorize (retried) |
    | AUTHORIZED | cancel wanted | void, or refund if the order was confirmed (the provider |
    |  |  | releases an uncaptured authorisation and reports it refunded) |
    | AUTHORIZED | confirmed | capture |
    | CAPTURED | cancel wanted | refund |
    """
    if not payment.intent_known:
        return Wait()
    state = payment.state
    cancel = payment.cancel_requested
    if state is PaymentState.PENDING:
        if cancel:
            return CLOSE
        if payment.stock_reserved:
            return START_AUTHORIZING
        return Wait()
    if state is PaymentState.AUTHORIZING:
        # A void also stops an authorisation still on its way (the provider refuses it after).
        return Call(Operation.VOID if cancel else Operation.AUTHORIZE)
    if state is PaymentState.AUTHORIZED:
        if cancel:
            refund = payment.cancelled_after_confirmation or payment.confirmed
            return Call(Operation.REFUND if refund else Operation.VOID)
        if payment.confirmed:
            return Call(Operation.CAPTURE)
        return Wait()
    if state is PaymentState.CAPTURED and cancel:
        return Call(Operation.REFUND)
    return Wait()


class Answer(StrEnum):
    """What the provider answered to an operation (transport failures are not answers)."""

    AUTHORIZED = "authorized"
    DECLINED = "declined"
    CAPTURED = "captured"
    VOIDED = "voided"
    REFUNDED = "refunded"


# Where an answer moves a payment, by the operation asked and the answer got; a pair missing
# here (a 409 that says the operation no longer applies) moves nothing: the payment is decided
# again from what it is by then.
OUTCOMES: dict[tuple[Operation, Answer], Move] = {
    (Operation.AUTHORIZE, Answer.AUTHORIZED): Move(
        PaymentState.AUTHORIZED, PaymentEvent.AUTHORIZED
    ),
    (Operation.AUTHORIZE, Answer.DECLINED): Move(PaymentState.DECLINED, PaymentEvent.DECLINED),
    # The key was voided before this authorisation reached the provider: it will never charge.
    (Operation.AUTHORIZE, Answer.VOIDED): Move(PaymentState.VOIDED, PaymentEvent.VOIDED),
    (Operation.CAPTURE, Answer.CAPTURED): Move(PaymentState.CAPTURED, None),
    (Operation.VOID, Answer.VOIDED): Move(PaymentState.VOIDED, PaymentEvent.VOIDED),
    (Operation.REFUND, Answer.REFUNDED): Move(PaymentState.REFUNDED, PaymentEvent.REFUNDED),
}


def outcome(operation: Operation, answer: Answer) -> Move | None:
    return OUTCOMES.get((operation, answer))


_JITTER = random.Random()


def retry_delay(
    failures: int, *, base_seconds: float, max_seconds: float, rng: random.Random | None = None
) -> float:
    """Exponential backoff with jitter after `failures` consecutive transient failures (1 for
    the first): base x 2^(failures-1), capped, then a uniformly drawn half to all of it."""
    exponent = max(failures - 1, 0)
    ceiling = min(max_seconds, base_seconds * float(2 ** min(exponent, 32)))
    draw = (rng or _JITTER).uniform(0.5, 1.0)
    return ceiling * draw


def parse_id(raw: str, *, field: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except (ValueError, AttributeError, TypeError):
        raise InvalidArgument(f"{field} must be a UUID, got {raw!r}", field=field) from None


class PaymentNotFound(NotFound):
    pass


def payment_not_found(order_id: uuid.UUID) -> PaymentNotFound:
    return PaymentNotFound(f"no payment for order {order_id}", field="order_id")


def check_reader(
    order_id: uuid.UUID, payment: Payment | None, *, caller_id: str, is_admin: bool
) -> Payment:
    """The buyer or an admin may read a payment; anyone else learns nothing (NOT_FOUND, as for
    an order without one, or one whose `order.created` has not come yet)."""
    if payment is None or not payment.intent_known:
        raise payment_not_found(order_id)
    if not is_admin and str(payment.user_id) != caller_id:
        raise payment_not_found(order_id)
    return payment
