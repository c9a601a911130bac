"""The `CartStore` contract every cart store keeps, the cart's JSON document, and the store factory.

Every mutation checks the cart rules and writes in ONE atomic step, so concurrent writers never
lose an update; every write refreshes the cart's expiry.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from cart_service.domain import Cart, CartLine

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

    async def remove_ordered_lines(
        self, user_id: str, order_id: str, lines: Mapping[str, int]
    ) -> bool:
        """Subtracts an order's quantities once per order id; False when already done."""
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
    """The cart as stored: the same JSON shape in Redis and in Couchbase."""
    return {
        "user_id": cart.user_id,
        "currency": cart.currency or "",
        "lines": [
            {"product_id": ln.product_id, "quantity": ln.quantity, "added_at_ms": ln.added_at_ms}
            for ln in cart.lines
        ],
        "removed_orders": list(cart.removed_orders),
    }


def from_document(user_id: str, document: Mapping[str, Any]) -> Cart:
    # Lua's cjson writes an empty array as {}, hence the `or []`.
    return Cart(
        user_id=user_id,
        lines=tuple(
            CartLine(str(ln["product_id"]), int(ln["quantity"]), int(ln["added_at_ms"]))
            for ln in (document.get("lines") or [])
        ),
        currency=document.get("currency") or None,
        removed_orders=tuple(document.get("removed_orders") or []),
    )


async def open_store(settings: CartSettings) -> CartStore:
    """The store named by CART_STORE, connected (raises CartStoreUnavailable when unreachable)."""
    if settings.cart_store == "redis":
        from cart_service.redis_store import RedisCartStore

        return await RedisCartStore.connect(
            settings.redis_url, settings.redis_key_prefix, ttl_days=settings.cart_ttl_days
        )
    from cart_service.couchbase_store import CouchbaseCartStore

    return await CouchbaseCartStore.connect(
        settings.couchbase,
        ttl_days=settings.cart_ttl_days,
        timeout_seconds=settings.couchbase_connect_timeout_seconds,
    )
