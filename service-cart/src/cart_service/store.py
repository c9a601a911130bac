"""The `CartStore` contract every cart store keeps, the cart's JSON document, and the store factory.

Every mutation checks the cart rules and writes in ONE atomic step, so concurrent writers never
lose an update; every write refreshes the cart's expiry. The document also holds the chassis inbox
of the events that changed the cart (`DocumentInbox`, field `inbox`): `apply_event` claims an
event and changes the cart in the same atomic step, and every other change keeps that field.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from google.protobuf.message import Message

from cart_service.domain import Cart, CartLine, ClearedOrder
from chassis.messaging import DocumentInbox

if TYPE_CHECKING:
    from cart_service.settings import CartSettings


class CartStore(Protocol):
    """Carts keyed by user id. `stock` is the bound read from service-product just before."""

    async def get(self, user_id: str) -> Cart: ...

    async def add_item(
        self, user_id: str, product_id: str, quantity: int, *, stock: int, currency: str
    ) -> Cart: ...

    async def set_quantity(
        self, user_id: str, product_id: str, quantity: int, *, stock: int, currency: str
    ) -> Cart: ...

    async def remove_item(self, user_id: str, product_id: str) -> Cart: ...

    async def clear(self, user_id: str) -> None: ...

    async def apply_event(
        self, user_id: str, event: Message, change: Callable[[Cart], Cart]
    ) -> bool:
        """Claims `event` in the cart document's inbox and applies `change` to the cart, in one
        atomic step (both or neither); False, with nothing changed, when the event was claimed
        before (a redelivery)."""
        ...

    async def check(self) -> None:
        """Raises when the store cannot serve (readiness)."""
        ...

    async def close(self) -> None: ...


class CartStoreUnavailable(Exception):
    """The store cannot be reached; the message names where it was looked for."""


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def to_document(cart: Cart) -> dict[str, Any]:
    """The cart's fields as stored: the same JSON shape in Redis and in Couchbase."""
    return {
        "user_id": cart.user_id,
        "currency": cart.currency or "",
        "lines": [
            {"product_id": ln.product_id, "quantity": ln.quantity, "added_at_ms": ln.added_at_ms}
            for ln in cart.lines
        ],
        "cleared_orders": {order.order_id: order.cleared_at_ms for order in cart.cleared_orders},
    }


def new_document(user_id: str) -> dict[str, Any]:
    """The document of a user who has no cart yet."""
    return to_document(Cart(user_id))


def with_cart(document: Mapping[str, Any], cart: Cart) -> dict[str, Any]:
    """`document` holding `cart`, every other field (the inbox) kept as it was."""
    return {**document, **to_document(cart)}


def from_document(user_id: str, document: Mapping[str, Any]) -> Cart:
    # Lua's cjson writes an empty array as {}, hence the `or []`.
    return Cart(
        user_id=user_id,
        lines=tuple(
            CartLine(str(ln["product_id"]), int(ln["quantity"]), int(ln["added_at_ms"]))
            for ln in (document.get("lines") or [])
        ),
        currency=document.get("currency") or None,
        # Absent from a document written before orders were remembered; {} either way.
        cleared_orders=tuple(
            ClearedOrder(str(order_id), int(at_ms))
            for order_id, at_ms in (document.get("cleared_orders") or {}).items()
        ),
    )


async def open_store(settings: CartSettings, inbox: DocumentInbox) -> CartStore:
    """The store named by CART_STORE, connected (raises CartStoreUnavailable when unreachable),
    claiming events in `inbox`."""
    if settings.cart_store == "redis":
        from cart_service.redis_store import RedisCartStore

        return await RedisCartStore.connect(
            settings.redis_url,
            settings.redis_key_prefix,
            ttl_days=settings.cart_ttl_days,
            inbox=inbox,
        )
    from cart_service.couchbase_store import CouchbaseCartStore

    return await CouchbaseCartStore.connect(
        settings.couchbase,
        ttl_days=settings.cart_ttl_days,
        inbox=inbox,
        timeout_seconds=settings.couchbase_connect_timeout_seconds,
    )
