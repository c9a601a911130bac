"""One function per use case: the five saga events, GetPayment, and `advance`, which takes a
payment as far as it goes without the provider; and `subscriptions`, the events the service
consumes (one line each).

Every handler runs in a unit of work whose first statement claims the event in the inbox and
takes the payment's row lock together (a redelivered event changes nothing and locks nothing),
applies what the event says (pure, in
`domain`), and advances the payment: a move that needs no provider (PENDING -> AUTHORIZING, or
PENDING -> VOIDED with `payment.voided`) happens in that same transaction, in the one statement
that writes what the event said; a provider call is only marked due, for whichever worker looks
next, and this process's worker is woken after the commit (`Wake`): the provider is never called
inside a transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace
from functools import partial
from typing import Any

from chassis.auth import Principal
from chassis.logging import get_logger
from chassis.messaging import PoisonMessage, Subscription
from chassis.messaging.inbox import Outcome
from chassis.unit_of_work import HandledOnce
from ecommerce.events.v1 import events_pb2
from payment_service import domain, reporting
from payment_service.domain import Call, Move, Payment, check_reader
from payment_service.proto_mapping import payment_event
from payment_service.store import PaymentStore, PaymentUnitOfWork

_log = get_logger(__name__)
# The service's queue, and the inbox's consumer name (the event ids this service has handled).
QUEUE = "service-payment"
CONSUMER = "service-payment"

SagaEvent = (
    events_pb2.OrderCreated
    | events_pb2.OrderConfirmed
    | events_pb2.OrderCancelled
    | events_pb2.StockReserved
    | events_pb2.StockReservationFailed
)


def _order_id(event: SagaEvent) -> uuid.UUID:
    """The event's order id; an event without a valid one goes to the dead-letter queue."""
    try:
        return uuid.UUID(event.order_id)
    except ValueError:
        raise PoisonMessage(
            f"{event.DESCRIPTOR.name}: order_id is not a UUID: {event.order_id!r}"
        ) from None


# Called after a commit that made a payment due: wakes this process's worker. The payment is due
# now for any worker, not leased to this one: a hand-over made after the commit is lost when the
# consumer's task is cancelled in between (a broker connection closing under it), and a lease
# nobody holds would keep the payment from every worker until it ran out, past a saga's timeout.
Wake = Callable[[], Awaitable[None]]


async def advance(
    uow: PaymentUnitOfWork,
    payment: Payment,
    wake: Wake,
    *,
    facts: Payment | None = None,
) -> Payment:
    """Take `payment` (locked by this transaction, or just moved by it) as far as it goes
    without the provider, publishing the event of each move, and hand it to a worker when the
    provider is needed next. `facts`: the payment as an event changed it, not written yet. Each
    step is one statement: the facts, the move and the due mark together. Returns the payment
    as it ends."""
    while True:
        current = facts or payment
        step = domain.next_step(current)
        move = step if isinstance(step, Move) else None
        after = current if move is None else replace(current, state=move.target)
        due = isinstance(step, Call) or (
            move is not None and isinstance(domain.next_step(after), Call)
        )
        if move is None and not due and facts is None:
            return payment  # nothing to write
        written = await uow.payments.write(
            current,
            source=payment.state,
            facts=facts is not None,
            target=None if move is None else move.target,
            start_wanting=move is not None and move.target is domain.PaymentState.AUTHORIZING,
            due=due,
        )
        if written is None:
            raise RuntimeError(f"payment {payment.order_id} moved while this transaction held it")
        if move is not None:
            if move.event is not None:
                uow.publish(payment_event(written.payment, move.event))
            uow.after_commit(partial(reporting.payment_moved, written.payment, payment.state))
        if due:
            uow.after_commit(wake)
            return written.payment
        if move is None or not isinstance(domain.next_step(written.payment), Move):
            return written.payment
        payment, facts = written.payment, None


async def _apply(
    uow: PaymentUnitOfWork,
    event: SagaEvent,
    change: Callable[[Payment], Payment],
    wake: Wake,
) -> Outcome:
    """Claim `event` and lock its payment (one statement), then apply `change` and advance."""
    order_id = _order_id(event)
    before = await uow.payments.claim_and_lock(uow.inbox, event, order_id)
    if before is None:
        return Outcome.DUPLICATE
    after = change(before)
    if after == before:
        _log.info(
            "saga_event_without_effect",
            order_id=str(order_id),
            event_type=event.DESCRIPTOR.full_name,
            state=before.state.value,
        )
        return Outcome.PROCESSED
    await advance(uow, before, wake, facts=after)
    return Outcome.PROCESSED


async def on_order_created(
    uow: PaymentUnitOfWork, event: events_pb2.OrderCreated, *, wake: Wake
) -> Outcome:
    """Record the payment intent: the order's total, currency, buyer and payment token. An
    order placed without a token (before the payment step existed) has nothing to charge."""
    if not event.payment_token:
        if not await uow.inbox.claim(event):
            return Outcome.DUPLICATE
        _log.info("order_without_payment", order_id=event.order_id)
        return Outcome.PROCESSED
    try:
        user_id = uuid.UUID(event.user_id)
    except ValueError:
        raise PoisonMessage(f"OrderCreated: user_id is not a UUID: {event.user_id!r}") from None
    if event.total_cents <= 0 or len(event.currency) != 3 or not event.currency.isupper():
        raise PoisonMessage(
            f"OrderCreated: no payable total: {event.total_cents} {event.currency!r}"
        )
    change = partial(
        domain.with_intent,
        user_id=user_id,
        amount_cents=event.total_cents,
        currency=event.currency,
        payment_token=event.payment_token,
    )
    return await _apply(uow, event, change, wake)


async def on_stock_reserved(
    uow: PaymentUnitOfWork, event: events_pb2.StockReserved, *, wake: Wake
) -> Outcome:
    """Stock is held: authorise (once the intent is known)."""
    return await _apply(uow, event, domain.with_stock_reserved, wake)


async def on_stock_reservation_failed(
    uow: PaymentUnitOfWork, event: events_pb2.StockReservationFailed, *, wake: Wake
) -> Outcome:
    """Nothing to charge: the intent is closed (VOIDED, with `payment.voided`)."""
    return await _apply(uow, event, domain.with_reservation_failed, wake)


async def on_order_confirmed(
    uow: PaymentUnitOfWork, event: events_pb2.OrderConfirmed, *, wake: Wake
) -> Outcome:
    """Capture the authorisation."""
    return await _apply(uow, event, domain.with_confirmed, wake)


async def on_order_cancelled(
    uow: PaymentUnitOfWork, event: events_pb2.OrderCancelled, *, wake: Wake
) -> Outcome:
    """Void what is not captured, refund what is (or what a confirmed order held); an intent
    never sent to the provider is closed at once. Remembered when it comes first."""
    change = partial(domain.with_cancelled, was_confirmed=event.was_confirmed)
    return await _apply(uow, event, change, wake)


async def get_payment(store: PaymentStore, *, caller: Principal, order_id: uuid.UUID) -> Payment:
    payment = await store.get(order_id)
    return check_reader(order_id, payment, caller_id=caller.user_id, is_admin=caller.is_admin)


def subscriptions(
    new_unit_of_work: Callable[[], PaymentUnitOfWork], wake: Wake
) -> list[Subscription]:
    """The saga events service-payment consumes, one line each (the queue's bindings, decoding,
    the inbox and the metrics follow from the type), each handler in a unit of work whose first
    statement claims the event in the inbox: a redelivered event is acknowledged with no
    effect."""

    once = HandledOnce(new_unit_of_work)

    def handled(effect: Callable[..., Awaitable[Outcome]]) -> Callable[[Any], Awaitable[Outcome]]:
        return once.claiming(partial(effect, wake=wake))

    return [
        Subscription.of(events_pb2.OrderCreated, handled(on_order_created)),
        Subscription.of(events_pb2.StockReserved, handled(on_stock_reserved)),
        Subscription.of(events_pb2.StockReservationFailed, handled(on_stock_reservation_failed)),
        Subscription.of(events_pb2.OrderConfirmed, handled(on_order_confirmed)),
        Subscription.of(events_pb2.OrderCancelled, handled(on_order_cancelled)),
    ]
