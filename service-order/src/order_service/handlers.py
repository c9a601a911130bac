"""One function per use case: the four RPCs, the saga events (stock and payment) and the timeout
sweep, and `subscriptions`, the events the service consumes (one line each).

Every status change happens in one unit of work with the event it publishes (outbox) and, for
an event, the inbox claim of the event that caused it; metrics and the log line follow the
commit. A saga event that finds its order already moved changes nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from functools import partial

from chassis.auth import Principal
from chassis.logging import get_logger
from chassis.messaging import Outcome, PoisonMessage, Subscription
from chassis.unit_of_work import HandledOnce
from ecommerce.events.v1 import events_pb2
from order_service import proto_mapping, reporting
from order_service.checkout_admission import CheckoutAdmission
from order_service.clients import CartClient, ProductClient
from order_service.domain import (
    AUTHORIZE,
    CANCEL_BY_USER,
    CONFIRM,
    CURRENT_SAGA_VERSION,
    DECLINE,
    EXPIRE,
    REFUND,
    REJECT_OUT_OF_STOCK,
    UNCLEARED_LOOKBACK_ORDERS,
    UNCLEARED_LOOKBACK_SECONDS,
    VOID,
    CartSnapshot,
    Order,
    OrderStatus,
    PaymentStep,
    ProductPrice,
    SagaVersion,
    Transition,
    check_cancellable_by_user,
    merged,
    not_yet_ordered,
    order_covering_the_cart,
    order_not_found,
    price_cart,
)
from order_service.page_tokens import PageRequest, encode_page_token
from order_service.store import IdempotencyKeys, MovedOrder, OrderStore, OrderUnitOfWork

_log = get_logger(__name__)
# The service's queue, and the inbox's consumer name (the event ids this service has handled).
QUEUE = "service-order"
CONSUMER = "service-order"


@dataclass(frozen=True, slots=True)
class Orders:
    """What the RPC handlers work with: transactions, reads on the pool, and the upstreams."""

    new_unit_of_work: Callable[[], OrderUnitOfWork]
    store: OrderStore
    idempotency_keys: IdempotencyKeys
    carts: CartClient
    products: ProductClient
    admission: CheckoutAdmission
    # The saga new orders run (CHECKOUT_SAGA_VERSION; version 1 only during an upgrade).
    saga_version: SagaVersion = CURRENT_SAGA_VERSION


@dataclass(frozen=True, slots=True)
class OrderPage:
    orders: list[Order]
    next_page_token: str


async def _order_of_key(orders: Orders, user_id: uuid.UUID, key: str) -> Order | None:
    order_id = await orders.idempotency_keys.order_of(user_id, key)
    if order_id is None:
        return None
    order = await orders.store.get(order_id, user_id)
    if order is None:
        raise RuntimeError(f"idempotency key of user {user_id} names a missing order {order_id}")
    return order


async def checkout(
    orders: Orders, *, caller: Principal, idempotency_key: str | None, payment_token: str | None
) -> Order:
    """Price the caller's cart from service-product and place the order PENDING with its
    `order.created`, in one unit of work: under saga version 2 with payment PENDING and the
    payment token kept (and carried by the event); under version 1 (`orders.saga_version`,
    during an upgrade) without any payment. A key this user used before returns that order,
    also while new checkouts are refused because the saga is behind.

    A cart is ordered once: the lines of the buyer's live orders (PENDING, or confirmed but not
    yet cleared from the cart) are subtracted, so a second checkout orders only what was added
    since; when nothing was, it answers with the order that already holds the cart."""
    user_id = uuid.UUID(caller.user_id)
    if idempotency_key is not None:
        existing = await _order_of_key(orders, user_id, idempotency_key)
        if existing is not None:
            return existing
    orders.admission.check()
    snapshot = await orders.carts.snapshot(caller)
    products = await orders.products.prices([line.product_id for line in merged(snapshot.lines)])
    placed = await _place(orders, user_id, snapshot, products, idempotency_key, payment_token)
    if placed is not None:
        return placed
    # A concurrent checkout with the same key committed first: its order is the answer.
    winner = (
        None if idempotency_key is None else await _order_of_key(orders, user_id, idempotency_key)
    )
    if winner is None:
        raise RuntimeError("the idempotency key was taken by a transaction that left no order")
    return winner


async def _place(
    orders: Orders,
    user_id: uuid.UUID,
    snapshot: CartSnapshot,
    products: Mapping[uuid.UUID, ProductPrice],
    idempotency_key: str | None,
    payment_token: str | None,
) -> Order | None:
    """Under the user's checkout lock: the PENDING order that already holds the cart, or a new
    one PENDING with what is not yet ordered, its key and `order.created`, in one unit of work
    (`AlreadyOrdered` when the whole cart is in confirmed orders the cart has not cleared yet).
    None when a concurrent checkout took the key first (the key is claimed before the order is
    written, so a concurrent checkout with the same key waits on it until this one ends)."""
    async with orders.new_unit_of_work() as uow:
        await uow.orders.lock_checkouts_of(user_id)
        if idempotency_key is not None and (
            await uow.idempotency_keys.order_of(user_id, idempotency_key) is not None
        ):
            return None  # a checkout with this key committed while this one waited on the lock
        live = await uow.orders.live_orders(
            user_id, lookback_seconds=UNCLEARED_LOOKBACK_SECONDS, limit=UNCLEARED_LOOKBACK_ORDERS
        )
        covering = order_covering_the_cart(snapshot, live)
        if covering is not None:
            if idempotency_key is not None and not await uow.idempotency_keys.claim(
                user_id, idempotency_key, covering
            ):
                return None
            answer = await uow.orders.get(covering, user_id)
            if answer is None:
                raise RuntimeError(f"live order {covering} vanished under the checkout lock")
            _log.info("checkout_answered_with_live_order", order_id=str(covering))
            return answer
        priced = price_cart(not_yet_ordered(snapshot, live), products)
        order_id = uuid.uuid4()
        if idempotency_key is not None and not await uow.idempotency_keys.claim(
            user_id, idempotency_key, order_id
        ):
            return None
        placed = await uow.orders.insert(
            order_id, user_id, priced, orders.saga_version, payment_token
        )
        uow.saw_time(placed.created_at)  # the column's default, now(): the event's time
        uow.publish(proto_mapping.order_created(placed))
        uow.after_commit(partial(reporting.order_placed, placed))
    return placed


async def get_order(orders: Orders, *, user_id: uuid.UUID, order_id: uuid.UUID) -> Order:
    order = await orders.store.get(order_id, user_id)
    if order is None:
        raise order_not_found(order_id)
    return order


async def list_orders(orders: Orders, *, user_id: uuid.UUID, page: PageRequest) -> OrderPage:
    found, cursor = await orders.store.page(user_id, page)
    token = "" if cursor is None else encode_page_token(cursor, user_id=user_id)
    return OrderPage(orders=found, next_page_token=token)


async def cancel_order(orders: Orders, *, user_id: uuid.UUID, order_id: uuid.UUID) -> Order:
    """PENDING or CONFIRMED -> CANCELLED (USER_CANCELLED) with `order.cancelled`."""
    async with orders.new_unit_of_work() as uow:
        order = await uow.orders.get(order_id, user_id, lock=True)
        if order is None:
            raise order_not_found(order_id)
        check_cancellable_by_user(order)
        cancelled = await _cancel_locked(uow, order)
    return cancelled


async def _cancel_locked(uow: OrderUnitOfWork, order: Order) -> Order:
    """Cancel an order this transaction holds locked and found cancellable."""
    moved = await uow.orders.move(order.id, CANCEL_BY_USER)
    if moved is None:
        raise RuntimeError(f"order {order.id} moved while this transaction held its lock")
    _publish_cancelled(uow, moved, previous=order.status, transition=CANCEL_BY_USER)
    return replace(
        order,
        status=CANCEL_BY_USER.target,
        cancel_reason=CANCEL_BY_USER.reason,
        updated_at=moved.moved_at,
    )


def _publish_cancelled(
    uow: OrderUnitOfWork, moved: MovedOrder, *, previous: OrderStatus, transition: Transition
) -> None:
    if transition.reason is None:
        raise ValueError(f"{transition.name} does not cancel")
    # A confirmed order's payment is refunded, a pending one's voided (service-payment).
    was_confirmed = previous is OrderStatus.CONFIRMED
    uow.publish(
        proto_mapping.order_cancelled(moved, transition.reason, was_confirmed=was_confirmed)
    )
    uow.after_commit(partial(reporting.order_moved, moved, previous, transition))


PaymentEvent = (
    events_pb2.PaymentAuthorized
    | events_pb2.PaymentDeclined
    | events_pb2.PaymentRefunded
    | events_pb2.PaymentVoided
)
SagaEvent = (
    events_pb2.StockReserved
    | events_pb2.StockReservationFailed
    | events_pb2.StockReleased
    | PaymentEvent
)


def _order_id(event: SagaEvent) -> uuid.UUID:
    """The event's order id; an event without a valid one goes to the dead-letter queue."""
    try:
        return uuid.UUID(event.order_id)
    except ValueError:
        raise PoisonMessage(
            f"{event.DESCRIPTOR.name}: order_id is not a UUID: {event.order_id!r}"
        ) from None


def _without_effect(order_id: uuid.UUID, event: SagaEvent, why: str) -> None:
    _log.info(
        "saga_event_without_effect",
        order_id=str(order_id),
        event_type=event.DESCRIPTOR.full_name,
        why=why,
    )


def _publish_confirmed(uow: OrderUnitOfWork, moved: MovedOrder, transition: Transition) -> None:
    """`order.confirmed` for an order `transition` just confirmed (moved `with_lines`)."""
    uow.publish(proto_mapping.order_confirmed(moved, moved.lines))
    uow.after_commit(partial(reporting.order_moved, moved, OrderStatus.PENDING, transition))


async def on_stock_reserved(uow: OrderUnitOfWork, event: events_pb2.StockReserved) -> None:
    """Saga version 1: PENDING -> CONFIRMED with `order.confirmed` (see `stock_reserved`)."""
    order_id = _order_id(event)
    moved = await uow.orders.move(order_id, CONFIRM, with_lines=True)
    if moved is not None:
        _publish_confirmed(uow, moved, CONFIRM)
        return
    # Cancelled meanwhile (service-product releases on order.cancelled), or not ours.
    _without_effect(order_id, event, "the order is not PENDING or does not exist")


def stock_reserved(
    store: OrderStore, confirm: Callable[[events_pb2.StockReserved], Awaitable[Outcome]]
) -> Callable[[events_pb2.StockReserved], Awaitable[Outcome]]:
    """The handler of `stock.reserved`. A saga-version-2 order (every order but during an
    upgrade) waits for `payment.authorized`: its `stock.reserved` is answered by one read, with
    no transaction and nothing written, since nothing can ever move it on this event (there is
    no effect to make once, so nothing to claim). Any other (a version-1 order, an unknown id)
    goes to `confirm`: `on_stock_reserved` in a unit of work with its inbox claim."""

    async def handle(event: events_pb2.StockReserved) -> Outcome:
        order_id = _order_id(event)
        state = await store.state(order_id)
        if state is None or state.saga_version is not SagaVersion.PAYMENT:
            return await confirm(event)
        _without_effect(
            order_id, event, "saga version 2: the order is confirmed on payment.authorized"
        )
        return Outcome.PROCESSED

    handle.__qualname__ = "stock_reserved"
    return handle


async def on_stock_reservation_failed(
    uow: OrderUnitOfWork, event: events_pb2.StockReservationFailed
) -> None:
    """PENDING -> CANCELLED (OUT_OF_STOCK) with `order.cancelled`."""
    order_id = _order_id(event)
    moved = await uow.orders.move(order_id, REJECT_OUT_OF_STOCK)
    if moved is None:
        _without_effect(order_id, event, "the order is not PENDING or does not exist")
        return
    _publish_cancelled(uow, moved, previous=OrderStatus.PENDING, transition=REJECT_OUT_OF_STOCK)


async def on_stock_released(uow: OrderUnitOfWork, event: events_pb2.StockReleased) -> None:
    """Record that the cancelled order's stock came back (once; the status does not change)."""
    order_id = _order_id(event)
    status = await uow.orders.mark_stock_released(order_id)
    if status is None:
        _without_effect(order_id, event, "already recorded or no such order")
    elif status is not OrderStatus.CANCELLED:
        _log.warning("stock_released_for_live_order", order_id=str(order_id), status=status.value)


async def _payment_reported(
    uow: OrderUnitOfWork, event: PaymentEvent, step: PaymentStep
) -> Outcome:
    """A payment event (`domain.payment_effect`), claimed in the inbox in the same statement
    as the move: a PENDING order makes the step's transition with it (confirmed, or cancelled
    PAYMENT_DECLINED, with its event); a CANCELLED one records the payment status alone;
    anything else (a version-1 order, a CONFIRMED one, a payment status the step does not move
    forward from, an unknown order) has no effect."""
    order_id = _order_id(event)
    transition = step.order_transition
    confirms = transition is not None and transition.target is OrderStatus.CONFIRMED
    if transition is None:
        if not await uow.inbox.claim(event):
            return Outcome.DUPLICATE
        moved = None
    else:
        claimed, moved = await uow.orders.claim_and_move(
            uow.inbox, event, order_id, transition, payment=step, with_lines=confirms
        )
        if not claimed:
            return Outcome.DUPLICATE
    if transition is not None and moved is not None:
        if confirms:
            _publish_confirmed(uow, moved, transition)
        else:
            _publish_cancelled(uow, moved, previous=OrderStatus.PENDING, transition=transition)
    elif not await uow.orders.record_payment(order_id, step):
        state = await uow.orders.state(order_id)
        why = "no such order" if state is None else f"nothing moves from {state.describe()}"
        _without_effect(order_id, event, why)
        return Outcome.PROCESSED
    uow.after_commit(partial(reporting.payment_recorded, order_id, step))
    return Outcome.PROCESSED


async def on_payment_authorized(
    uow: OrderUnitOfWork, event: events_pb2.PaymentAuthorized
) -> Outcome:
    """PENDING -> CONFIRMED, payment AUTHORIZED, with `order.confirmed` (service-payment
    captures on it, service-cart clears). An order cancelled meanwhile records AUTHORIZED only
    (service-payment voids the authorisation on its `order.cancelled`)."""
    return await _payment_reported(uow, event, AUTHORIZE)


async def on_payment_declined(uow: OrderUnitOfWork, event: events_pb2.PaymentDeclined) -> Outcome:
    """PENDING -> CANCELLED (PAYMENT_DECLINED), payment DECLINED, with `order.cancelled`
    (service-product gives the stock back). A cancelled order records DECLINED only."""
    return await _payment_reported(uow, event, DECLINE)


async def on_payment_refunded(uow: OrderUnitOfWork, event: events_pb2.PaymentRefunded) -> Outcome:
    """A cancelled order that had been confirmed: payment AUTHORIZED -> REFUNDED."""
    return await _payment_reported(uow, event, REFUND)


async def on_payment_voided(uow: OrderUnitOfWork, event: events_pb2.PaymentVoided) -> Outcome:
    """An order cancelled before its confirmation: payment PENDING or AUTHORIZED -> VOIDED."""
    return await _payment_reported(uow, event, VOID)


async def expire_pending_orders(uow: OrderUnitOfWork, *, timeout_seconds: float) -> int:
    """One batch of the saga timeout: PENDING orders older than the timeout become CANCELLED
    (TIMEOUT), each with its `order.cancelled`. Returns how many moved."""
    expired = await uow.orders.expire_pending(timeout_seconds)
    for moved in expired:
        _publish_cancelled(uow, moved, previous=OrderStatus.PENDING, transition=EXPIRE)
    return len(expired)


def subscriptions(
    new_unit_of_work: Callable[[], OrderUnitOfWork], store: OrderStore
) -> list[Subscription]:
    """The saga events service-order consumes, one line each (the queue's bindings, decoding, the
    inbox and the metrics follow from the type), each handler in a unit of work that claims the
    event in the inbox first (the payment events: in the statement that moves the order): a
    redelivered event is acknowledged with no effect."""
    once = HandledOnce(new_unit_of_work)
    return [
        Subscription.of(events_pb2.StockReserved, stock_reserved(store, once(on_stock_reserved))),
        Subscription.of(events_pb2.StockReservationFailed, once(on_stock_reservation_failed)),
        Subscription.of(events_pb2.StockReleased, once(on_stock_released)),
        Subscription.of(events_pb2.PaymentAuthorized, once.claiming(on_payment_authorized)),
        Subscription.of(events_pb2.PaymentDeclined, once.claiming(on_payment_declined)),
        Subscription.of(events_pb2.PaymentRefunded, once.claiming(on_payment_refunded)),
        Subscription.of(events_pb2.PaymentVoided, once.claiming(on_payment_voided)),
    ]
