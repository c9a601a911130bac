"""Orders and their rules: the state machine (statuses, cancel reasons, the transitions that
exist), pricing a cart into an order, and what a valid id, idempotency key and owner are.

Pure: no I/O, no protobuf. Rules raise the chassis' typed errors (INVALID_ARGUMENT naming the
field, FAILED_PRECONDITION, NOT_FOUND, PERMISSION_DENIED).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from chassis.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from chassis.validation import MAX_PRICE_CENTS

IDEMPOTENCY_KEY_MAX = 255
# Visible ASCII (RFC 5234 VCHAR): what an HTTP header carries without quoting or ambiguity.
_IDEMPOTENCY_KEY = re.compile(rf"[\x21-\x7e]{{1,{IDEMPOTENCY_KEY_MAX}}}")


# The statuses and reasons are those of the protos (ecommerce.order.v1.OrderStatus and
# CancelReason, without their prefixes); tests/test_proto_mapping.py holds them together.
class OrderStatus(StrEnum):
    PENDING = "PENDING"
    CONFIRMED = "CONFIRMED"
    CANCELLED = "CANCELLED"


class CancelReason(StrEnum):
    OUT_OF_STOCK = "OUT_OF_STOCK"
    USER_CANCELLED = "USER_CANCELLED"
    TIMEOUT = "TIMEOUT"


@dataclass(frozen=True, slots=True)
class Transition:
    """One move of the state machine: from any status in `sources` to `target` with `reason`."""

    name: str
    sources: frozenset[OrderStatus]
    target: OrderStatus
    reason: CancelReason | None

    def allows(self, status: OrderStatus) -> bool:
        return status in self.sources


PENDING_ONLY = frozenset({OrderStatus.PENDING})
# stock.reserved: the saga succeeded.
CONFIRM = Transition("confirm", PENDING_ONLY, OrderStatus.CONFIRMED, None)
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
TRANSITIONS = (CONFIRM, REJECT_OUT_OF_STOCK, EXPIRE, CANCEL_BY_USER)


def saga_outcome(previous: OrderStatus, transition: Transition) -> str | None:
    """How the saga ended with this transition (`confirmed`, `out_of_stock`, `timeout`,
    `user_cancelled`), or None when it had ended before (a user cancelling a CONFIRMED order)."""
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
