"""The CartStore contract, run against every reachable store (Redis always, Couchbase when set):
the cart rules, atomic changes, expiry, and events applied once (the chassis inbox in the cart
document, claimed in the same atomic step as the change)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta

import pytest
from google.protobuf.message import Message

from cart_service import domain
from cart_service.domain import MAX_LINES, Cart, CartLimitExceeded, LineNotInCart
from cart_service.store import CartStore, now_ms
from ecommerce.events.v1 import events_pb2

from .conftest import inbox

TTL_DAYS = 30  # the stores under test are opened with this expiry


def new_id() -> str:
    return str(uuid.uuid4())


def quantities(cart: Cart) -> dict[str, int]:
    return {line.product_id: line.quantity for line in cart.lines}


async def test_cart_of_a_user_without_one_is_empty(store: CartStore, user_id: str) -> None:
    cart = await store.get(user_id)

    assert cart == Cart(user_id)


async def test_adding_a_product_twice_adds_to_its_line(store: CartStore, user_id: str) -> None:
    product = new_id()
    await store.add_item(user_id, product, 2, stock=10, currency="USD")
    cart = await store.add_item(user_id, product, 3, stock=10, currency="USD")

    assert quantities(cart) == {product: 5}
    assert await store.get(user_id) == cart
    assert cart.currency == "USD"


async def test_lines_keep_the_order_they_were_first_added_in(
    store: CartStore, user_id: str
) -> None:
    first, second = new_id(), new_id()
    await store.add_item(user_id, first, 1, stock=10, currency="USD")
    await store.add_item(user_id, second, 1, stock=10, currency="USD")
    await store.add_item(user_id, first, 1, stock=10, currency="USD")

    cart = await store.get(user_id)

    assert cart.product_ids == [first, second]
    assert cart.lines[0].added_at_ms <= cart.lines[1].added_at_ms


async def test_a_line_over_100_units_is_refused_and_nothing_changes(
    store: CartStore, user_id: str
) -> None:
    product = new_id()
    await store.add_item(user_id, product, 60, stock=1000, currency="USD")

    with pytest.raises(CartLimitExceeded, match="at most 100"):
        await store.add_item(user_id, product, 41, stock=1000, currency="USD")

    assert quantities(await store.get(user_id)) == {product: 60}


async def test_a_line_over_the_stock_is_refused(store: CartStore, user_id: str) -> None:
    product = new_id()
    await store.add_item(user_id, product, 3, stock=4, currency="USD")

    with pytest.raises(CartLimitExceeded, match="only 4 are in stock"):
        await store.add_item(user_id, product, 2, stock=4, currency="USD")

    with pytest.raises(CartLimitExceeded, match="only 4 are in stock"):
        await store.set_quantity(user_id, product, 5, stock=4, currency="USD")
    assert quantities(await store.get(user_id)) == {product: 3}


async def test_a_51st_product_is_refused_but_existing_lines_still_grow(
    store: CartStore, user_id: str
) -> None:
    products = [new_id() for _ in range(MAX_LINES)]
    for product in products:
        await store.add_item(user_id, product, 1, stock=10, currency="USD")

    with pytest.raises(CartLimitExceeded, match=f"at most {MAX_LINES} different products"):
        await store.add_item(user_id, new_id(), 1, stock=10, currency="USD")

    cart = await store.add_item(user_id, products[0], 1, stock=10, currency="USD")
    assert len(cart.lines) == MAX_LINES
    assert cart.lines[0].quantity == 2


async def test_a_product_in_another_currency_is_refused(store: CartStore, user_id: str) -> None:
    await store.add_item(user_id, new_id(), 1, stock=10, currency="USD")

    with pytest.raises(CartLimitExceeded, match="another currency"):
        await store.add_item(user_id, new_id(), 1, stock=10, currency="EUR")


async def test_an_emptied_cart_accepts_any_currency(store: CartStore, user_id: str) -> None:
    product = new_id()
    await store.add_item(user_id, product, 1, stock=10, currency="USD")
    await store.remove_item(user_id, product)

    cart = await store.add_item(user_id, new_id(), 1, stock=10, currency="EUR")

    assert cart.currency == "EUR"


async def test_set_quantity_replaces_the_line_and_creates_a_missing_one(
    store: CartStore, user_id: str
) -> None:
    kept, created = new_id(), new_id()
    await store.add_item(user_id, kept, 5, stock=10, currency="USD")

    await store.set_quantity(user_id, kept, 2, stock=10, currency="USD")
    cart = await store.set_quantity(user_id, created, 7, stock=10, currency="USD")

    assert quantities(cart) == {kept: 2, created: 7}


async def test_set_quantity_zero_removes_the_line(store: CartStore, user_id: str) -> None:
    removed, kept = new_id(), new_id()
    await store.add_item(user_id, removed, 5, stock=10, currency="USD")
    await store.add_item(user_id, kept, 1, stock=10, currency="USD")

    cart = await store.set_quantity(user_id, removed, 0, stock=10, currency="USD")

    assert quantities(cart) == {kept: 1}


async def test_removing_a_line_not_in_the_cart_is_not_found(store: CartStore, user_id: str) -> None:
    await store.add_item(user_id, new_id(), 1, stock=10, currency="USD")
    missing = new_id()

    with pytest.raises(LineNotInCart, match=missing):
        await store.remove_item(user_id, missing)
    with pytest.raises(LineNotInCart):
        await store.set_quantity(user_id, missing, 0, stock=10, currency="USD")


async def test_clear_empties_the_cart(store: CartStore, user_id: str) -> None:
    await store.add_item(user_id, new_id(), 1, stock=10, currency="USD")

    await store.clear(user_id)
    await store.clear(new_id())

    assert (await store.get(user_id)).lines == ()


async def test_every_write_sets_the_cart_expiry(
    store: CartStore,
    seconds_to_expiry: Callable[[str], Awaitable[float | None]],
    user_id: str,
) -> None:
    ttl = timedelta(days=TTL_DAYS).total_seconds()
    product = new_id()
    await store.add_item(user_id, product, 1, stock=10, currency="USD")
    after_add = await seconds_to_expiry(user_id)
    await store.remove_item(user_id, product)
    after_remove = await seconds_to_expiry(user_id)

    assert after_add is not None
    assert ttl - 120 < after_add <= ttl
    assert after_remove is not None
    assert ttl - 120 < after_remove <= ttl


async def test_50_concurrent_adds_of_one_unit_all_count(store: CartStore, user_id: str) -> None:
    product = new_id()

    await asyncio.gather(
        *(store.add_item(user_id, product, 1, stock=100, currency="USD") for _ in range(50))
    )

    assert quantities(await store.get(user_id)) == {product: 50}


async def test_concurrent_adds_never_exceed_the_stock(store: CartStore, user_id: str) -> None:
    product = new_id()

    outcomes = await asyncio.gather(
        *(store.add_item(user_id, product, 1, stock=7, currency="USD") for _ in range(20)),
        return_exceptions=True,
    )

    refused = [o for o in outcomes if isinstance(o, CartLimitExceeded)]
    assert len(refused) == 13
    assert quantities(await store.get(user_id)) == {product: 7}


def confirmed() -> events_pb2.OrderConfirmed:
    """An `order.confirmed` as the consumer receives it (the inbox claims its event id)."""
    return events_pb2.OrderConfirmed(event_id=new_id(), order_id=new_id())


async def remove_ordered(
    store: CartStore, user_id: str, event: Message, ordered: dict[str, int]
) -> bool:
    order_id = getattr(event, "order_id", "") or new_id()
    return await store.apply_event(
        user_id,
        event,
        lambda cart: domain.remove_ordered_lines(cart, ordered, order_id=order_id, now_ms=now_ms()),
    )


async def test_removing_ordered_lines_subtracts_and_keeps_lines_added_after_checkout(
    store: CartStore, user_id: str
) -> None:
    partly, fully, later = new_id(), new_id(), new_id()
    await store.add_item(user_id, partly, 5, stock=10, currency="USD")
    await store.add_item(user_id, fully, 2, stock=10, currency="USD")
    await store.add_item(user_id, later, 1, stock=10, currency="USD")

    applied = await remove_ordered(store, user_id, confirmed(), {partly: 3, fully: 2})

    assert applied is True
    assert quantities(await store.get(user_id)) == {partly: 2, later: 1}


async def test_an_event_applied_twice_changes_the_cart_once(store: CartStore, user_id: str) -> None:
    product, event = new_id(), confirmed()
    await store.add_item(user_id, product, 5, stock=10, currency="USD")

    first = await remove_ordered(store, user_id, event, {product: 2})
    second = await remove_ordered(store, user_id, event, {product: 2})

    assert (first, second) == (True, False)
    assert quantities(await store.get(user_id)) == {product: 3}


async def test_concurrent_deliveries_of_one_event_change_the_cart_once(
    store: CartStore, user_id: str
) -> None:
    product, event = new_id(), confirmed()
    await store.add_item(user_id, product, 10, stock=10, currency="USD")

    results = await asyncio.gather(
        *(remove_ordered(store, user_id, event, {product: 1}) for _ in range(10))
    )

    assert sorted(results) == [False] * 9 + [True]
    assert quantities(await store.get(user_id)) == {product: 9}


async def test_events_and_shopper_changes_racing_on_one_cart_all_take_effect(
    store: CartStore, user_id: str
) -> None:
    product = new_id()
    await store.add_item(user_id, product, 50, stock=100, currency="USD")

    await asyncio.gather(
        *(store.add_item(user_id, product, 1, stock=100, currency="USD") for _ in range(20)),
        *(remove_ordered(store, user_id, confirmed(), {product: 1}) for _ in range(10)),
    )

    assert quantities(await store.get(user_id)) == {product: 60}


async def test_a_change_that_fails_leaves_no_claim_behind(store: CartStore, user_id: str) -> None:
    product, event = new_id(), confirmed()
    await store.add_item(user_id, product, 5, stock=10, currency="USD")

    def broken(_: Cart) -> Cart:
        raise RuntimeError("the change failed half-way")

    with pytest.raises(RuntimeError, match="half-way"):
        await store.apply_event(user_id, event, broken)

    assert await remove_ordered(store, user_id, event, {product: 1}) is True
    assert quantities(await store.get(user_id)) == {product: 4}


async def test_a_claim_and_the_cleared_order_outlive_every_change_the_shopper_makes(
    store: CartStore, user_id: str
) -> None:
    product, other, event = new_id(), new_id(), confirmed()
    await store.add_item(user_id, product, 2, stock=10, currency="USD")
    await remove_ordered(store, user_id, event, {product: 1})
    await store.add_item(user_id, other, 2, stock=10, currency="USD")
    await store.set_quantity(user_id, other, 3, stock=10, currency="USD")
    await store.remove_item(user_id, other)
    await store.clear(user_id)
    await store.add_item(user_id, product, 2, stock=10, currency="USD")

    assert await remove_ordered(store, user_id, event, {product: 1}) is False
    cart = await store.get(user_id)
    assert quantities(cart) == {product: 2}
    assert [order.order_id for order in cart.cleared_orders] == [event.order_id]


async def test_an_event_for_a_user_without_a_cart_is_claimed(
    store: CartStore, user_id: str
) -> None:
    event = confirmed()

    assert await remove_ordered(store, user_id, event, {new_id(): 1}) is True
    assert await remove_ordered(store, user_id, event, {new_id(): 1}) is False
    assert (await store.get(user_id)).lines == ()


async def test_the_claims_a_cart_keeps_are_bounded_the_newest_kept(
    store: CartStore, user_id: str
) -> None:
    capacity = inbox().capacity
    events = [confirmed() for _ in range(capacity + 5)]
    for event in events:
        await remove_ordered(store, user_id, event, {})

    assert await remove_ordered(store, user_id, events[-1], {}) is False
    assert await remove_ordered(store, user_id, events[-capacity + 1], {}) is False
    assert await remove_ordered(store, user_id, events[0], {}) is True
