"""One function per cart use case (validate, read the product, change the store, price) and per
event, and `subscriptions`, the events the service consumes (one line each)."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

from cart_service import domain
from cart_service.domain import Cart, PricedCart, ProductSnapshot
from cart_service.products import ProductCatalog
from cart_service.store import CartStore, now_ms
from chassis.errors import InvalidArgument, Unavailable
from chassis.messaging import Outcome, PoisonMessage, Subscription
from ecommerce.events.v1 import events_pb2

# The service's queue, and the inbox's consumer name (the events handled, claimed in each cart).
QUEUE = "service-cart"
CONSUMER = "service-cart"


@dataclass
class Carts:
    """What the handlers work with; the store is attached once it is reachable (startup hook)."""

    products: ProductCatalog
    _store: CartStore | None = field(default=None)

    def attach(self, store: CartStore) -> None:
        self._store = store

    @property
    def store(self) -> CartStore:
        if self._store is None:
            raise Unavailable("the cart store is not connected yet")
        return self._store

    @property
    def attached(self) -> CartStore | None:
        return self._store


async def _priced(carts: Carts, cart: Cart, *, known: ProductSnapshot | None = None) -> PricedCart:
    """The cart with its products' current names and prices; `known`: a product this request
    has just read (the one added or changed), not asked for twice."""
    have = {} if known is None else {known.product_id: known}
    missing = [product_id for product_id in cart.product_ids if product_id not in have]
    fetched = await carts.products.batch_get(missing) if missing else {}
    return domain.priced(cart, {**have, **fetched})


async def get_cart(carts: Carts, *, user_id: str, lines_only: bool = False) -> PricedCart:
    """The cart priced now; with `lines_only`, its lines as they are (no product read)."""
    user_id = domain.parse_id(user_id, "user_id")
    cart = await carts.store.get(user_id)
    return domain.unpriced(cart) if lines_only else await _priced(carts, cart)


async def add_item(carts: Carts, *, user_id: str, product_id: str, quantity: int) -> PricedCart:
    user_id = domain.parse_id(user_id, "user_id")
    product_id = domain.parse_id(product_id, "product_id")
    domain.check_requested_quantity(quantity, allow_zero=False)
    product = await carts.products.get(product_id)
    domain.check_sellable(product)
    cart = await carts.store.add_item(
        user_id, product_id, quantity, stock=product.stock, currency=product.currency
    )
    return await _priced(carts, cart, known=product)


async def set_item_quantity(
    carts: Carts, *, user_id: str, product_id: str, quantity: int
) -> PricedCart:
    user_id = domain.parse_id(user_id, "user_id")
    product_id = domain.parse_id(product_id, "product_id")
    domain.check_requested_quantity(quantity, allow_zero=True)
    if quantity == 0:
        # Removing needs no product: a line whose product vanished can still be taken out.
        cart = await carts.store.remove_item(user_id, product_id)
    else:
        product = await carts.products.get(product_id)
        domain.check_sellable(product)
        cart = await carts.store.set_quantity(
            user_id, product_id, quantity, stock=product.stock, currency=product.currency
        )
        return await _priced(carts, cart, known=product)
    return await _priced(carts, cart)


async def remove_item(carts: Carts, *, user_id: str, product_id: str) -> PricedCart:
    user_id = domain.parse_id(user_id, "user_id")
    product_id = domain.parse_id(product_id, "product_id")
    return await _priced(carts, await carts.store.remove_item(user_id, product_id))


async def clear_cart(carts: Carts, *, user_id: str) -> None:
    await carts.store.clear(domain.parse_id(user_id, "user_id"))


async def on_order_confirmed(carts: Carts, event: events_pb2.OrderConfirmed) -> Outcome:
    """The saga's last step: the confirmed order's lines leave the buyer's cart, once (the store
    claims the event in the cart document's inbox in the same atomic step), and the cart
    remembers the order as cleared (GetCart tells a checkout); lines added since stay. A
    malformed event is poison."""
    ordered: dict[str, int] = {}
    for line in event.lines:
        ordered[line.product_id] = ordered.get(line.product_id, 0) + line.quantity
    try:
        user_id = domain.parse_id(event.user_id, "user_id")
        order_id = domain.parse_id(event.order_id, "order_id")
        quantities = domain.parse_ordered_quantities(ordered)
    except InvalidArgument as error:
        raise PoisonMessage(f"order.confirmed {event.order_id!r}: {error.message}") from error
    removed = await carts.store.apply_event(
        user_id,
        event,
        lambda cart: domain.remove_ordered_lines(
            cart, quantities, order_id=order_id, now_ms=now_ms()
        ),
    )
    return Outcome.PROCESSED if removed else Outcome.DUPLICATE


def subscriptions(carts: Carts) -> list[Subscription]:
    """The events service-cart consumes, one line each (the queue's bindings, decoding and the
    metrics follow from the type; the inbox is the cart document's, claimed by the store)."""
    return [
        Subscription.of(events_pb2.OrderConfirmed, functools.partial(on_order_confirmed, carts)),
    ]
