"""The cart rules, without any store (the Couchbase store applies exactly these)."""

from __future__ import annotations

import uuid
from dataclasses import replace

import pytest

from cart_service import domain
from cart_service.domain import (
    MAX_LINE_QUANTITY,
    MAX_LINES,
    Cart,
    CartLimitExceeded,
    CartLine,
    ClearedOrder,
    LineNotInCart,
    ProductSnapshot,
    priced,
)
from chassis.errors import InvalidArgument
from chassis.validation import MAX_PRICE_CENTS

USER = str(uuid.uuid4())
ORDER = str(uuid.uuid4())
NOW = 1_800_000_000_000  # ms since the epoch


def pid() -> str:
    return str(uuid.uuid4())


def add(cart: Cart, product_id: str, quantity: int, *, stock: int = 100) -> Cart:
    return domain.add_item(cart, product_id, quantity, stock=stock, currency="USD", now_ms=1)


def test_an_id_in_upper_case_is_canonicalised() -> None:
    value = uuid.uuid4()

    assert domain.parse_id(str(value).upper(), "user_id") == str(value)


@pytest.mark.parametrize("value", ["", "nope", "1234", "g" * 32])
def test_a_malformed_id_is_invalid_and_names_the_field(value: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        domain.parse_id(value, "product_id")

    assert caught.value.field == "product_id"


@pytest.mark.parametrize(("quantity", "allow_zero"), [(0, False), (101, False), (-1, True)])
def test_a_requested_quantity_out_of_range_is_invalid(quantity: int, allow_zero: bool) -> None:
    with pytest.raises(InvalidArgument) as caught:
        domain.check_requested_quantity(quantity, allow_zero=allow_zero)

    assert caught.value.field == "quantity"


def test_zero_is_a_valid_quantity_only_where_it_means_remove() -> None:
    domain.check_requested_quantity(0, allow_zero=True)
    domain.check_requested_quantity(100, allow_zero=False)


def test_adding_to_an_existing_line_keeps_its_place_and_time() -> None:
    first, second = pid(), pid()
    cart = add(add(Cart(USER), first, 1), second, 1)

    cart = domain.add_item(cart, first, 2, stock=100, currency="USD", now_ms=99)

    assert cart.lines == (CartLine(first, 3, 1), CartLine(second, 1, 1))


def test_the_unit_limit_applies_to_the_resulting_line() -> None:
    product = pid()
    cart = add(Cart(USER), product, 99, stock=1000)

    with pytest.raises(CartLimitExceeded, match="at most 100"):
        add(cart, product, 2, stock=1000)


def test_the_stock_limit_applies_to_the_resulting_line() -> None:
    product = pid()
    cart = add(Cart(USER), product, 2, stock=3)

    with pytest.raises(CartLimitExceeded, match="only 3 are in stock"):
        add(cart, product, 2, stock=3)


def test_the_line_limit_refuses_only_new_products() -> None:
    cart = Cart(USER)
    for _ in range(MAX_LINES):
        cart = add(cart, pid(), 1)

    with pytest.raises(CartLimitExceeded, match="different products"):
        add(cart, pid(), 1)
    assert add(cart, cart.lines[-1].product_id, 1).lines[-1].quantity == 2


def test_removing_the_last_line_forgets_the_currency() -> None:
    product = pid()
    cart = add(Cart(USER), product, 1)

    assert domain.remove_item(cart, product).currency is None


def test_removing_an_absent_line_is_not_found() -> None:
    with pytest.raises(LineNotInCart):
        domain.remove_item(Cart(USER), pid())


def test_removing_ordered_lines_subtracts_them_and_drops_the_lines_emptied() -> None:
    partly, fully, later = pid(), pid(), pid()
    cart = add(add(add(Cart(USER), partly, 5), fully, 2), later, 1)

    left = domain.remove_ordered_lines(cart, {partly: 3, fully: 2}, order_id=ORDER, now_ms=NOW)

    assert [(line.product_id, line.quantity) for line in left.lines] == [(partly, 2), (later, 1)]
    assert left.currency == "USD"


def test_removing_every_ordered_line_forgets_the_currency() -> None:
    product = pid()

    left = domain.remove_ordered_lines(
        add(Cart(USER), product, 2), {product: 2}, order_id=ORDER, now_ms=NOW
    )

    assert replace(left, cleared_orders=()) == Cart(USER)


def test_a_cleared_order_is_remembered_and_shown_to_a_checkout() -> None:
    product = pid()
    cart = add(Cart(USER), product, 3)

    left = domain.remove_ordered_lines(cart, {product: 1}, order_id=ORDER, now_ms=NOW)

    assert left.cleared_orders == (ClearedOrder(ORDER, NOW),)
    assert domain.priced(left, {}).cleared_order_ids == (ORDER,)


def test_cleared_orders_are_kept_a_day_and_at_most_a_hundred() -> None:
    product, cart = pid(), Cart(USER)
    day = domain.CLEARED_ORDERS_RETENTION_MS
    cart = domain.remove_ordered_lines(cart, {product: 1}, order_id="old", now_ms=NOW - day)
    for n in range(domain.CLEARED_ORDERS_KEPT + 5):
        cart = domain.remove_ordered_lines(cart, {product: 1}, order_id=f"o{n}", now_ms=NOW + n)

    kept = [order.order_id for order in cart.cleared_orders]
    assert len(kept) == domain.CLEARED_ORDERS_KEPT
    assert "old" not in kept  # past the retention
    assert kept[-1] == f"o{domain.CLEARED_ORDERS_KEPT + 4}"  # the newest always stays
    assert "o4" not in kept  # the oldest beyond the bound went first
    assert "o5" in kept


def test_a_priced_cart_drops_lines_whose_product_vanished() -> None:
    kept, vanished = pid(), pid()
    cart = add(add(Cart(USER), kept, 2), vanished, 1)
    products = {kept: ProductSnapshot(kept, "Pen", 125, "USD", stock=10)}

    view = domain.priced(cart, products)

    assert [(i.product_id, i.line_total_cents) for i in view.items] == [(kept, 250)]
    assert view.total_cents == 250
    assert view.currency == "USD"


def test_an_empty_cart_is_priced_in_the_default_currency() -> None:
    assert domain.priced(Cart(USER), {}).currency == "USD"


@pytest.mark.parametrize("quantity", [0, -3])
def test_ordered_quantities_must_be_positive(quantity: int) -> None:
    with pytest.raises(InvalidArgument) as caught:
        domain.parse_ordered_quantities({pid(): 2, pid(): quantity})
    assert caught.value.field == "lines"


def test_ordered_quantities_are_keyed_by_canonical_product_id() -> None:
    product = pid()
    assert domain.parse_ordered_quantities({product.upper(): 2}) == {product: 2}


def test_the_fullest_cart_at_the_highest_price_totals_within_int64() -> None:
    lines = tuple(CartLine(str(uuid.uuid4()), MAX_LINE_QUANTITY, 0) for _ in range(MAX_LINES))
    products = {
        line.product_id: ProductSnapshot(line.product_id, "p", MAX_PRICE_CENTS, "USD", 100)
        for line in lines
    }
    cart = priced(Cart("u", lines, "USD"), products)
    assert len(cart.items) == MAX_LINES
    assert cart.total_cents < 2**63


def test_a_line_priced_past_the_cap_is_left_out_of_the_priced_cart() -> None:
    lines = (CartLine("a", 1, 0), CartLine("b", 2, 0))
    products = {
        "a": ProductSnapshot("a", "cheap", 100, "USD", 5),
        "b": ProductSnapshot("b", "legacy", 2**62, "USD", 5),
    }
    cart = priced(Cart("u", lines, "USD"), products)
    assert [item.product_id for item in cart.items] == ["a"]
    assert cart.total_cents == 100
