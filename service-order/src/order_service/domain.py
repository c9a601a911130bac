"""Orders and their rules: the state machine (statuses, cancel reasons, the transitions that
exist), the payment status and the steps it takes, the saga versions, pricing a cart into an
order, and what a valid id, idempotency key, payment token and owner are.

Pure: no I/O, no protobuf. Rules raise the chassis' typed errors (INVALID_ARGUMENT naming the
field, FAILED_PRECONDITION, NOT_FOUND, PERMISSION_DENIED).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import IntEnum, StrEnum

from chassis.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from chassis.validation import MAX_PRICE_CENTS

IDEMPOTENCY_KEY_MAX = 255
# Visible ASCII (RFC 5234 VCHAR): what an HTTP header carries without quoting or ambiguity.
_IDEMPOTENCY_KEY = re.compile(rf"[\x21-\x7e]{{1,{IDEMPOTENCY_KEY_MAX}}}")
# A payment provider's token (`pm_card_ok`), never a card number: what the protos promise.
PAYMENT_TOKEN_BODY_MAX = 64
_PAYMENT_TOKEN = re.compile(rf"pm_[A-Za-z0-9_]{{1,{PAYMENT_TOKEN_BODY_MAX}}}")


# The statuses and reasons are those of the protos (ecommerce.order.v1.OrderStatus,
# CancelReason and PaymentStatus, without their prefixes); tests/test_proto_mapping.py holds
# them together.
class OrderStatus(StrEnum):
    PENDING = "PENDING"
    CONFIRMED = "CONFIRMED"
    CANCELLED = "CANCELLED"


class CancelReason(StrEnum):
    OUT_OF_STOCK = "OUT_OF_STOCK"
    USER_CANCELLED = "USER_CANCELLED"
    TIMEOUT = "TIMEOUT"
    PAYMENT_DECLINED = "PAYMENT_DECLINED"


class PaymentStatus(StrEnum):
    """Where an order's payment is, as service-payment last reported it. An order of saga
    version 1 has none (the API's PAYMENT_STATUS_UNSPECIFIED)."""

    PENDING = "PENDING"
    AUTHORIZED = "AUTHORIZED"
    DECLINED = "DECLINED"
    REFUNDED = "REFUNDED"
    VOIDED = "VOIDED"


class SagaVersion(IntEnum):
    """Which checkout saga an order runs, fixed when it is placed (the `saga_version` column)."""

    # Placed before the payment step (or by a release without it): confirmed on
    # `stock.reserved`, nothing charged, no payment status.
    STOCK_ONLY = 1
    # Placed with a payment token: confirmed on `payment.authorized`, which service-payment
    # publishes once the stock is reserved.
    PAYMENT = 2


# What Checkout places now.
CURRENT_SAGA_VERSION = SagaVersion.PAYMENT
EVERY_SAGA_VERSION = frozenset(SagaVersion)


@dataclass(frozen=True, slots=True)
class Transition:
    """One move of the state machine: from any status in `sources` to `target` with `reason`,
    for orders of the saga versions in `saga_versions`."""

    name: str
    sources: frozenset[OrderStatus]
    target: OrderStatus
    reason: CancelReason | None
    saga_versions: frozenset[SagaVersion] = EVERY_SAGA_VERSION

    def allows(self, status: OrderStatus, saga_version: SagaVersion = CURRENT_SAGA_VERSION) -> bool:
        return status in self.sources and saga_version in self.saga_versions


PENDING_ONLY = frozenset({OrderStatus.PENDING})
# stock.reserved, saga version 1: the saga succeeded (nothing to charge).
CONFIRM = Transition(
    "confirm",
    PENDING_ONLY,
    OrderStatus.CONFIRMED,
    None,
    frozenset({SagaVersion.STOCK_ONLY}),
)
# payment.authorized, saga version 2: stock reserved and the total authorised.
CONFIRM_PAID = Transition(
    "confirm_paid",
    PENDING_ONLY,
    OrderStatus.CONFIRMED,
    None,
    frozenset({SagaVersion.PAYMENT}),
)
# payment.declined, saga version 2: the provider refused; the reserved stock goes back.
REJECT_PAYMENT_DECLINED = Transition(
    "payment_declined",
    PENDING_ONLY,
    OrderStatus.CANCELLED,
    CancelReason.PAYMENT_DECLINED,
    frozenset({SagaVersion.PAYMENT}),
)
# stock.reservation_failed: a line could not be reserved, so nothing was.
REJECT_OUT_OF_STOCK = Transition(
    "out_of_stock", PENDING_ONLY, OrderStatus.CANCELLED, CancelReason.OUT_OF_STOCK
)
# The sweeper: the saga did not end within SAGA_TIMEOUT_SECONDS.
EXPIRE = Transition("timeout", PENDING_ONLY, OrderStatus.CANCELLED, CancelReason.TIMEOUT)
# CancelOrder: before or after confirmation (reserved stock then goes back).
CANCEL_BY_USER = Transition(
    "user_cancel",
    frozenset({OrderStatus.PENDING, OrderStatus.CONFIRMED}),
    OrderStatus.CANCELLED,
    CancelReason.USER_CANCELLED,
)
TRANSITIONS = (
    CONFIRM,
    CONFIRM_PAID,
    REJECT_OUT_OF_STOCK,
    REJECT_PAYMENT_DECLINED,
    EXPIRE,
    CANCEL_BY_USER,
)


@dataclass(frozen=True, slots=True)
class PaymentStep:
    """What a payment event reports: the payment status moves from any of `sources` to `target`
    (forward only), and a PENDING order makes `order_transition` with it in the same guarded
    statement. A CANCELLED order only records the step; a CONFIRMED order's payment stays
    AUTHORIZED (the schema's CHECK holds it there), so a report for one has no effect."""

    name: str
    sources: frozenset[PaymentStatus]
    target: PaymentStatus
    order_transition: Transition | None

    def allows(self, payment_status: PaymentStatus | None) -> bool:
        return payment_status in self.sources


# The order statuses at which a payment report changes the payment status alone. PENDING too:
# the events of one order reach service-order in any order (several replicas, redeliveries), so
# a `payment.voided` may come before the `stock.reservation_failed` or `order.cancelled` cause
# that cancels the order; it is recorded, not lost (a replica test saw the payment status of an
# order cancelled OUT_OF_STOCK stay PENDING for good).
RECORDED_ONLY_WHEN = frozenset({OrderStatus.PENDING, OrderStatus.CANCELLED})
# payment.authorized: a PENDING order is confirmed; a cancelled one keeps its reason (the
# authorisation is voided on its order.cancelled).
AUTHORIZE = PaymentStep(
    "authorized", frozenset({PaymentStatus.PENDING}), PaymentStatus.AUTHORIZED, CONFIRM_PAID
)
# payment.declined: a PENDING order is cancelled (PAYMENT_DECLINED).
DECLINE = PaymentStep(
    "declined",
    frozenset({PaymentStatus.PENDING}),
    PaymentStatus.DECLINED,
    REJECT_PAYMENT_DECLINED,
)
# payment.refunded: a cancelled order that had been confirmed got its money back.
REFUND = PaymentStep(
    "refunded", frozenset({PaymentStatus.AUTHORIZED}), PaymentStatus.REFUNDED, None
)
# payment.voided: an order cancelled before confirmation; its authorisation, if any, released.
VOID = PaymentStep(
    "voided",
    frozenset({PaymentStatus.PENDING, PaymentStatus.AUTHORIZED}),
    PaymentStatus.VOIDED,
    None,
)
PAYMENT_STEPS = (AUTHORIZE, DECLINE, REFUND, VOID)


def payment_effect(
    step: PaymentStep,
    status: OrderStatus,
    payment_status: PaymentStatus | None,
    saga_version: SagaVersion,
) -> Transition | PaymentStatus | None:
    """What a payment report does to an order: the transition it makes (a PENDING order), the
    payment status it records alone (a CANCELLED order, or a PENDING one the step does not move:
    a void that came before the cancellation), or None (no effect: a version-1 order, a
    CONFIRMED one, or a payment status the step cannot move from). The store's guarded
    statements apply exactly this rule."""
    if not step.allows(payment_status):
        return None
    transition = step.order_transition
    if transition is not None and transition.allows(status, saga_version):
        return transition
    if status in RECORDED_ONLY_WHEN and saga_version is SagaVersion.PAYMENT:
        return step.target
    return None


def saga_outcome(previous: OrderStatus, transition: Transition) -> str | None:
    """How the saga ended with this transition (`confirmed`, `out_of_stock`, `payment_declined`,
    `timeout`, `user_cancelled`), or None when it had ended before (a user cancelling a
    CONFIRMED order)."""
    if previous is not OrderStatus.PENDING:
        return None
    if transition.reason is None:
        return transition.target.value.lower()
    return transition.reason.value.lower()


@dataclass(frozen=True, slots=True)
class CartLine:
    """What the cart says: a product and how many units; its name and price are not trusted."""

    product_id: uuid.UUID
    quantity: int


@dataclass(frozen=True, slots=True)
class ProductPrice:
    """What service-product says about a product at checkout."""

    product_id: uuid.UUID
    name: str
    price_cents: int
    currency: str


@dataclass(frozen=True, slots=True)
class OrderLine:
    product_id: uuid.UUID
    name: str
    quantity: int
    unit_price_cents: int

    @property
    def line_total_cents(self) -> int:
        return self.quantity * self.unit_price_cents


@dataclass(frozen=True, slots=True)
class PricedCart:
    """The cart's lines priced from service-product, in one currency."""

    lines: tuple[OrderLine, ...]
    currency: str

    @property
    def total_cents(self) -> int:
        return sum(line.line_total_cents for line in self.lines)


@dataclass(frozen=True, slots=True)
class Order:
    id: uuid.UUID
    user_id: uuid.UUID
    status: OrderStatus
    cancel_reason: CancelReason | None
    lines: tuple[OrderLine, ...]
    total_cents: int
    currency: str
    created_at: datetime
    updated_at: datetime
    saga_version: SagaVersion = CURRENT_SAGA_VERSION
    # None on a version-1 order: it has no payment.
    payment_status: PaymentStatus | None = None
    # The checkout's provider token (version 2), sent on in `order.created`.
    payment_token: str | None = None


class OrderNotFound(NotFound):
    """No such order for this user (another user's order is not revealed to exist)."""


def order_not_found(order_id: uuid.UUID) -> OrderNotFound:
    return OrderNotFound(f"order {order_id} does not exist", field="order_id")


# A cart gives up a confirmed order's lines when it handles `order.confirmed`, usually moments
# after the confirmation; until then the lines are still in the cart. A checkout subtracts the
# lines of the buyer's live orders (PENDING, and those confirmed at most this long ago that the
# cart does not list as cleared), at most this many of them: within the cart's own bounds on what
# it remembers (a day, a hundred orders: cart_service.domain.CLEARED_ORDERS_RETENTION_MS).
UNCLEARED_LOOKBACK_SECONDS = 3600
UNCLEARED_LOOKBACK_ORDERS = 50


class AlreadyOrdered(FailedPrecondition):
    """Every line of the cart is in an order the saga has confirmed (409 at the gateway)."""


@dataclass(frozen=True, slots=True)
class CartSnapshot:
    """The cart as one read saw it: its lines, and the orders whose lines it has given up."""

    lines: tuple[CartLine, ...]
    cleared_order_ids: frozenset[uuid.UUID]


@dataclass(frozen=True, slots=True)
class LiveOrder:
    """An order of the buyer whose lines may still be in the cart: PENDING, or CONFIRMED (or
    cancelled after it) recently enough that the cart may not have given its lines up yet."""

    id: uuid.UUID
    status: OrderStatus
    lines: tuple[CartLine, ...]


def not_yet_ordered(snapshot: CartSnapshot, live: Sequence[LiveOrder]) -> list[CartLine]:
    """The cart's lines less what the buyer's live orders already hold (those the cart lists as
    cleared excepted: their lines have left it), in the cart's order, empty lines dropped. A
    second checkout while an order is on its way orders only what was added since, so a cart
    is ordered once."""
    held: dict[uuid.UUID, int] = {}
    for order in live:
        if order.id in snapshot.cleared_order_ids:
            continue
        for line in order.lines:
            held[line.product_id] = held.get(line.product_id, 0) + line.quantity
    remaining = [
        CartLine(line.product_id, line.quantity - held.get(line.product_id, 0))
        for line in merged(snapshot.lines)
    ]
    return [line for line in remaining if line.quantity > 0]


def order_covering_the_cart(snapshot: CartSnapshot, live: Sequence[LiveOrder]) -> uuid.UUID | None:
    """When the cart holds lines but every one is already in live orders, and one of those is
    still PENDING: the newest PENDING one, which a checkout answers with (`live` is newest
    first). None when there is something new to order, or nothing in the cart at all.
    `AlreadyOrdered` when the lines are all in orders the saga has already confirmed (the cart
    gives them up in a moment): a checkout answers 202 with a PENDING order only."""
    if not snapshot.lines or not_yet_ordered(snapshot, live):
        return None
    holding = [order for order in live if order.id not in snapshot.cleared_order_ids]
    pending = [order for order in holding if order.status is OrderStatus.PENDING]
    if pending:
        return pending[0].id
    raise AlreadyOrdered(
        f"everything in the cart is in order {holding[0].id}, already confirmed:"
        " its lines leave the cart in a moment"
    )


def merged(lines: Iterable[CartLine]) -> list[CartLine]:
    """One line per product (quantities added), in the order products first appear."""
    quantities: dict[uuid.UUID, int] = {}
    for line in lines:
        quantities[line.product_id] = quantities.get(line.product_id, 0) + line.quantity
    return [CartLine(product_id, quantity) for product_id, quantity in quantities.items()]


def price_cart(lines: Sequence[CartLine], products: Mapping[uuid.UUID, ProductPrice]) -> PricedCart:
    """Price every cart line at service-product's current price, or refuse the checkout: an empty
    cart, a product that no longer exists (or has no valid price), or products in several
    currencies are FAILED_PRECONDITION saying which."""
    if not lines:
        raise FailedPrecondition("the cart is empty")
    missing = [str(line.product_id) for line in lines if line.product_id not in products]
    if missing:
        if len(missing) == 1:
            message = f"product {missing[0]} no longer exists (remove it from the cart)"
        else:
            message = f"products {', '.join(missing)} no longer exist (remove them from the cart)"
        raise FailedPrecondition(message)
    unpriced = [
        str(line.product_id)
        for line in lines
        if not 0 < products[line.product_id].price_cents <= MAX_PRICE_CENTS
    ]
    if unpriced:
        raise FailedPrecondition(f"product {', '.join(unpriced)} has no valid price")
    currencies = sorted({products[line.product_id].currency for line in lines})
    if len(currencies) > 1:
        raise FailedPrecondition(
            f"the cart mixes currencies {' and '.join(currencies)}: an order has one currency"
        )
    priced = tuple(
        OrderLine(
            product_id=line.product_id,
            name=products[line.product_id].name,
            quantity=line.quantity,
            unit_price_cents=products[line.product_id].price_cents,
        )
        for line in lines
    )
    return PricedCart(lines=priced, currency=currencies[0])


def check_cancellable_by_user(order: Order) -> None:
    if not CANCEL_BY_USER.allows(order.status):
        raise FailedPrecondition(f"order {order.id} is already cancelled")


def parse_id(raw: str, *, field: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except (ValueError, AttributeError, TypeError):
        raise InvalidArgument(f"{field} must be a UUID, got {raw!r}", field=field) from None


def check_owner(caller_id: str, user_id: uuid.UUID) -> None:
    """An order is acted on only for the user whose verified token the request carries."""
    if uuid.UUID(caller_id) != user_id:
        raise PermissionDenied("a token may act only on its own orders")


def idempotency_key(raw: str) -> str | None:
    """The client's key (None when absent): 1 to 255 visible ASCII characters."""
    if not raw:
        return None
    if not _IDEMPOTENCY_KEY.fullmatch(raw):
        raise InvalidArgument(
            f"idempotency_key must be 1 to {IDEMPOTENCY_KEY_MAX} visible ASCII characters"
            " (no spaces or control characters)",
            field="idempotency_key",
        )
    return raw


def payment_token(raw: str, *, required: bool = True) -> str | None:
    """The checkout's payment token: `pm_` then 1 to 64 letters, digits or underscores (a
    provider's token, never a card number). Required unless `required` is False (checkouts
    placing saga version 1 orders during an upgrade): then an absent one is None, and a
    malformed one is still refused."""
    if not raw and not required:
        return None
    if not _PAYMENT_TOKEN.fullmatch(raw):
        what = "is required" if not raw else "is malformed"
        raise InvalidArgument(
            f"payment_token {what}: `pm_` then 1 to {PAYMENT_TOKEN_BODY_MAX} letters, digits"
            " or underscores (for example pm_card_ok)",
            field="payment_token",
        )
    return raw
