"""One function per use case: the five saga events, GetPayment, and `advance`, which takes a
payment as far as it goes without the provider; and `subscriptions`, the events the service
consumes (one line each).

Every handler runs in a unit of work that claims the event in the inbox first (a redelivered
event changes nothing), holds the payment's row lock, applies what the event says (pure, in
`domain`), and advances the payment: a move that needs no provider (PENDING -> AUTHORIZING, or
PENDING -> VOIDED with `payment.voided`) happens in that same transaction, in the one statement
that writes what the event said; a provider call is only marked due (leased to this process's
worker, see `Handoff`), and the worker makes it after the commit (never inside a transaction).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
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
from payment_service.store import Lease, PaymentStore, PaymentUnitOfWork

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


@dataclass(frozen=True, slots=True)
class Handoff:
    """How a unit of work passes a payment that needs the provider to a worker. With
    `lease_seconds`, the statement that makes it due leases it to this process's worker, which
    is given the lease after the commit and calls at once: no round trip of its own to find it,
    and no other replica takes it while the lease lasts (if this process dies first, the lease
    runs out and any worker takes it). Without, it is made due now for whichever worker looks
    next, and `give(None)` after the commit wakes this process's."""

    lease_seconds: float | None
    give: Callable[[Lease | None], Awaitable[None]]


async def advance(
    uow: PaymentUnitOfWork,
    payment: Payment,
    handoff: Handoff,
    *,
    facts: Payment | None = None,
) -> Payment:
    """Take `payment` (locked by this transaction, or just moved by it) as far as it goes
    without the provider, publishing the event of each move, and hand it to a worker when the
    provider is needed next. `facts`: the payment as an event changed it, not written yet. Each
    step is one statement: the facts, the move and the lease together. Returns the payment as
    it ends."""
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
            lease_seconds=handoff.lease_seconds,
        )
        if written is None:
            raise RuntimeError(f"payment {payment.order_id} moved while this transaction held it")
        if move is not None:
            if move.event is not None:
                uow.publish(payment_event(written.payment, move.event))
            uow.after_commit(partial(reporting.payment_moved, written.payment, payment.state))
        if due:
            handed = written if handoff.lease_seconds is not None else None
            uow.after_commit(partial(handoff.give, handed))
            return written.payment
        if move is None or not isinstance(domain.next_step(written.payment), Move):
            return written.payment
        payment, facts = written.payment, None


async def _apply(
    uow: PaymentUnitOfWork,
    event: SagaEvent,
    change: Callable[[Payment], Payment],
    handoff: Handoff,
) -> None:
    order_id = _order_id(event)
    before = await uow.payments.lock(order_id)
    after = change(before)
    if after == before:
        _log.info(
            "saga_event_without_effect",
            order_id=str(order_id),
            event_type=event.DESCRIPTOR.full_name,
            state=before.state.value,
        )
        return
    await advance(uow, before, handoff, facts=after)


async def on_order_created(
    uow: PaymentUnitOfWork, event: events_pb2.OrderCreated, *, handoff: Handoff
) -> None:
    """Record the payment intent: the order's total, currency, buyer and payment token. An
    order placed without a token (before the payment step existed) has nothing to charge."""
    if not event.payment_token:
        _log.info("order_without_payment", order_id=event.order_id)
        return
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
    await _apply(uow, event, change, handoff)


async def on_stock_reserved(
    uow: PaymentUnitOfWork, event: events_pb2.StockReserved, *, handoff: Handoff
) -> None:
    """Stock is held: authorise (once the intent is known)."""
    await _apply(uow, event, domain.with_stock_reserved, handoff)


async def on_stock_reservation_failed(
    uow: PaymentUnitOfWork, event: events_pb2.StockReservationFailed, *, handoff: Handoff
) -> None:
    """Nothing to charge: the intent is closed (VOIDED, with `payment.voided`)."""
    await _apply(uow, event, domain.with_reservation_failed, handoff)


async def on_order_confirmed(
    uow: PaymentUnitOfWork, event: events_pb2.OrderConfirmed, *, handoff: Handoff
) -> None:
    """Capture the authorisation."""
    await _apply(uow, event, domain.with_confirmed, handoff)


async def on_order_cancelled(
    uow: PaymentUnitOfWork, event: events_pb2.OrderCancelled, *, handoff: Handoff
) -> None:
    """Void what is not captured, refund what is (or what a confirmed order held); an intent
    never sent to the provider is closed at once. Remembered when it comes first."""
    change = partial(domain.with_cancelled, was_confirmed=event.was_confirmed)
    await _apply(uow, event, change, handoff)


async def get_payment(store: PaymentStore, *, caller: Principal, order_id: uuid.UUID) -> Payment:
    payment = await store.get(order_id)
    return check_reader(order_id, payment, caller_id=caller.user_id, is_admin=caller.is_admin)


def subscriptions(
    new_unit_of_work: Callable[[], PaymentUnitOfWork], handoff: Handoff
) -> list[Subscription]:
    """The saga events service-payment consumes, one line each (the queue's bindings, decoding,
    the inbox and the metrics follow from the type), each handler in a unit of work that claims
    the event in the inbox first: a redelivered event is acknowledged with no effect."""
    once = HandledOnce(new_unit_of_work)

    def handled(effect: Callable[..., Awaitable[None]]) -> Callable[[Any], Awaitable[Outcome]]:
        return once(partial(effect, handoff=handoff))

    return [
        Subscription.of(events_pb2.OrderCreated, handled(on_order_created)),
        Subscription.of(events_pb2.StockReserved, handled(on_stock_reserved)),
        Subscription.of(events_pb2.StockReservationFailed, handled(on_stock_reservation_failed)),
        Subscription.of(events_pb2.OrderConfirmed, handled(on_order_confirmed)),
        Subscription.of(events_pb2.OrderCancelled, handled(on_order_cancelled)),
    ]
