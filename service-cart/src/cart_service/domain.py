"""Carts and their rules: lines of (product, quantity), the per-line and per-cart limits.

Pure: no I/O. The stores apply these rules inside their atomic step.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum

from chassis.errors import (
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from chassis.validation import MAX_PRICE_CENTS

MAX_LINE_QUANTITY = 100
MAX_LINES = 50
DEFAULT_CURRENCY = "USD"
# The orders whose lines a cart has given up are remembered this long, at most this many (the
# newest): service-order asks for them at checkout, looking back at most an hour and at most 50
# orders (order_service.domain.UNCLEARED_LOOKBACK), well inside both bounds.
CLEARED_ORDERS_RETENTION_MS = 24 * 3600 * 1000
CLEARED_ORDERS_KEPT = 100


class ProductNotFound(NotFound):
    """The product asked for does not exist."""


class LineNotInCart(NotFound):
    """The cart has no line for that product."""


class CartLimitExceeded(FailedPrecondition):
    """The change would break a line or cart limit (units, lines, stock or currency)."""


class Violation(StrEnum):
    """Why a change was refused; the Redis script reports the same codes."""

    TOO_MANY_UNITS = "too_many_units"
    NOT_ENOUGH_STOCK = "not_enough_stock"
    TOO_MANY_LINES = "too_many_lines"
    CURRENCY_MISMATCH = "currency_mismatch"
    LINE_NOT_FOUND = "line_not_found"


@dataclass(frozen=True)
class CartLine:
    """One product in a cart: the only facts a cart keeps about it."""

    product_id: str
    quantity: int
    added_at_ms: int


@dataclass(frozen=True)
class ClearedOrder:
    """An order whose confirmed lines left this cart, and when (ms since the epoch)."""

    order_id: str
    cleared_at_ms: int


@dataclass(frozen=True)
class Cart:
    """A user's cart: lines in the order they were first added, one currency, and the orders
    whose lines it has already given up (`remove_ordered_lines`)."""

    user_id: str
    lines: tuple[CartLine, ...] = ()
    currency: str | None = None
    cleared_orders: tuple[ClearedOrder, ...] = ()

    def line(self, product_id: str) -> CartLine | None:
        return next((line for line in self.lines if line.product_id == product_id), None)

    @property
    def product_ids(self) -> list[str]:
        return [line.product_id for line in self.lines]


@dataclass(frozen=True)
class ProductSnapshot:
    """What service-product says about a product right now."""

    product_id: str
    name: str
    price_cents: int
    currency: str
    stock: int


@dataclass(frozen=True)
class PricedLine:
    product_id: str
    name: str
    quantity: int
    unit_price_cents: int

    @property
    def line_total_cents(self) -> int:
        return self.quantity * self.unit_price_cents


@dataclass(frozen=True)
class PricedCart:
    """A cart as the user sees it: current names and prices, vanished products left out; and
    the orders whose lines it gave up (for a checkout, never shown to the shopper)."""

    user_id: str
    items: tuple[PricedLine, ...]
    currency: str
    cleared_order_ids: tuple[str, ...] = ()

    @property
    def total_cents(self) -> int:
        return sum(item.line_total_cents for item in self.items)


def sellable(product: ProductSnapshot | None) -> bool:
    """A product a cart may hold: it exists and its price is within the platform's cap (a price
    stored before the cap existed could make a total overflow int64; such a product is not sold)."""
    return product is not None and 0 < product.price_cents <= MAX_PRICE_CENTS


def check_sellable(product: ProductSnapshot) -> None:
    if not sellable(product):
        raise CartLimitExceeded(f"product {product.product_id} has a price outside the valid range")


def check_owner(caller_id: str, user_id: str) -> None:
    """A cart is acted on only for the user whose verified token the request carries."""
    if caller_id != user_id:
        raise PermissionDenied("a token may act only on its own cart")


def priced(cart: Cart, products: Mapping[str, ProductSnapshot]) -> PricedCart:
    """Prices each line at the product's current price; lines whose product vanished (or is not
    sellable) are dropped. With at most 50 lines of 100 units at MAX_PRICE_CENTS each, no line or
    cart total can exceed int64."""
    items = tuple(
        PricedLine(line.product_id, product.name, line.quantity, product.price_cents)
        for line in cart.lines
        if (product := products.get(line.product_id)) is not None and sellable(product)
    )
    currency = cart.currency or next(
        (products[item.product_id].currency for item in items), DEFAULT_CURRENCY
    )
    cleared = tuple(order.order_id for order in cart.cleared_orders)
    return PricedCart(cart.user_id, items, currency, cleared)


def unpriced(cart: Cart) -> PricedCart:
    """The cart's lines as they are, no product read: names empty, prices 0 (for a caller that
    prices the lines itself)."""
    items = tuple(PricedLine(line.product_id, "", line.quantity, 0) for line in cart.lines)
    cleared = tuple(order.order_id for order in cart.cleared_orders)
    return PricedCart(cart.user_id, items, cart.currency or DEFAULT_CURRENCY, cleared)


def parse_id(value: str, field: str) -> str:
    """Canonical form of a UUID argument; INVALID_ARGUMENT naming `field` otherwise."""
    try:
        return str(uuid.UUID(value))
    except (ValueError, AttributeError, TypeError):
        raise InvalidArgument(f"{field} must be a UUID, got {value!r}", field=field) from None


def parse_ordered_quantities(lines: Mapping[str, int]) -> dict[str, int]:
    """An order's quantities by canonical product id; each must be positive, or a malformed event
    could add units to a cart past every limit instead of taking them out."""
    ordered: dict[str, int] = {}
    for product_id, quantity in lines.items():
        if quantity < 1:
            raise InvalidArgument(
                f"ordered quantity must be positive, got {quantity} for {product_id}",
                field="lines",
            )
        ordered[parse_id(product_id, "product_id")] = quantity
    return ordered


def check_requested_quantity(quantity: int, *, allow_zero: bool) -> None:
    """A requested quantity is 1..100 (0..100 where 0 means remove)."""
    low = 0 if allow_zero else 1
    if not low <= quantity <= MAX_LINE_QUANTITY:
        raise InvalidArgument(
            f"quantity must be between {low} and {MAX_LINE_QUANTITY}, got {quantity}",
            field="quantity",
        )


def violation_error(
    violation: Violation, product_id: str, quantity: int = 0, stock: int = 0
) -> DomainError:
    """The typed error for a refused change, worded the same whichever store refused it."""
    if violation is Violation.LINE_NOT_FOUND:
        return LineNotInCart(f"product {product_id} is not in the cart")
    messages = {
        Violation.TOO_MANY_UNITS: (
            f"the line for product {product_id} would hold {quantity} units;"
            f" at most {MAX_LINE_QUANTITY} are allowed"
        ),
        Violation.NOT_ENOUGH_STOCK: (
            f"the line for product {product_id} would hold {quantity} units;"
            f" only {stock} are in stock"
        ),
        Violation.TOO_MANY_LINES: f"a cart holds at most {MAX_LINES} different products",
        Violation.CURRENCY_MISMATCH: (
            f"product {product_id} is priced in another currency than the rest of the cart"
        ),
    }
    return CartLimitExceeded(messages[violation])


def _checked_line(
    cart: Cart, product_id: str, quantity: int, stock: int, currency: str, now_ms: int
) -> Cart:
    existing = cart.line(product_id)
    if quantity > MAX_LINE_QUANTITY:
        raise violation_error(Violation.TOO_MANY_UNITS, product_id, quantity)
    if quantity > stock:
        raise violation_error(Violation.NOT_ENOUGH_STOCK, product_id, quantity, stock)
    if existing is None and len(cart.lines) >= MAX_LINES:
        raise violation_error(Violation.TOO_MANY_LINES, product_id)
    if cart.lines and cart.currency not in (None, currency):
        raise violation_error(Violation.CURRENCY_MISMATCH, product_id)
    if existing is None:
        lines = (*cart.lines, CartLine(product_id, quantity, now_ms))
    else:
        lines = tuple(
            replace(line, quantity=quantity) if line.product_id == product_id else line
            for line in cart.lines
        )
    return replace(cart, lines=lines, currency=currency)


def add_item(
    cart: Cart, product_id: str, quantity: int, *, stock: int, currency: str, now_ms: int
) -> Cart:
    """Adds units to the product's line (creating it); the resulting line must fit every limit."""
    existing = cart.line(product_id)
    total = quantity + (existing.quantity if existing else 0)
    return _checked_line(cart, product_id, total, stock, currency, now_ms)


def set_quantity(
    cart: Cart, product_id: str, quantity: int, *, stock: int, currency: str, now_ms: int
) -> Cart:
    """Sets the product's line to `quantity` units (creating it); 0 is `remove_item`."""
    if quantity == 0:
        return remove_item(cart, product_id)
    return _checked_line(cart, product_id, quantity, stock, currency, now_ms)


def remove_item(cart: Cart, product_id: str) -> Cart:
    """Drops the product's line; NOT_FOUND when the cart has none."""
    if cart.line(product_id) is None:
        raise violation_error(Violation.LINE_NOT_FOUND, product_id)
    return _without_empty_currency(
        replace(cart, lines=tuple(line for line in cart.lines if line.product_id != product_id))
    )


def clear(cart: Cart) -> Cart:
    """Drops every line (the events already handled stay claimed: they live in the cart's
    document, beside the cart, not in it)."""
    return replace(cart, lines=(), currency=None)


def remove_ordered_lines(
    cart: Cart, ordered: Mapping[str, int], *, order_id: str, now_ms: int
) -> Cart:
    """Takes an order's quantities out of the cart and remembers the order as cleared (so a
    checkout no longer subtracts its lines: they are gone). Lines added after checkout stay; a
    line reaching 0 disappears. Applied once per `order.confirmed` by the store's
    `apply_event`."""
    lines = tuple(
        replace(line, quantity=line.quantity - ordered.get(line.product_id, 0))
        for line in cart.lines
    )
    kept = [
        order
        for order in cart.cleared_orders
        if now_ms - order.cleared_at_ms < CLEARED_ORDERS_RETENTION_MS and order.order_id != order_id
    ]
    newest = sorted(kept, key=lambda order: order.cleared_at_ms)[-(CLEARED_ORDERS_KEPT - 1) :]
    # Strictly after every order kept, so the newest are well defined within one millisecond.
    at_ms = max([now_ms, *(order.cleared_at_ms + 1 for order in newest)])
    return _without_empty_currency(
        replace(
            cart,
            lines=tuple(line for line in lines if line.quantity > 0),
            cleared_orders=(*newest, ClearedOrder(order_id, at_ms)),
        )
    )


def _without_empty_currency(cart: Cart) -> Cart:
    return cart if cart.lines else replace(cart, currency=None)
