"""CartService over real gRPC, with a real service-product and the Redis store."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable

import grpc
import pytest

from cart_service import handlers
from cart_service.domain import ProductSnapshot
from cart_service.handlers import Carts
from cart_service.products import ProductCatalog
from cart_service.store import CartStore
from chassis.errors import field_of
from chassis.testing.tokens import OwnerTokenInterceptor
from ecommerce.cart.v1 import cart_pb2, cart_pb2_grpc
from ecommerce.product.v1 import product_pb2

from .conftest import AUTHORITY, Platform, cart_settings, running_cart


def new_user() -> str:
    return str(uuid.uuid4())


async def add(platform: Platform, user: str, product_id: str, quantity: int) -> cart_pb2.Cart:
    response = await platform.carts.AddItem(
        cart_pb2.AddItemRequest(user_id=user, product_id=product_id, quantity=quantity), timeout=5
    )
    return response.cart


async def rpc_error(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    return caught.value


async def test_a_new_user_has_an_empty_cart_in_usd(platform: Platform) -> None:
    user = new_user()

    cart = (await platform.carts.GetCart(cart_pb2.GetCartRequest(user_id=user), timeout=5)).cart

    assert cart == cart_pb2.Cart(user_id=user, currency="USD")


async def test_added_items_come_back_named_and_priced(platform: Platform) -> None:
    user = new_user()
    pen = await platform.create_product(price_cents=150)
    ink = await platform.create_product(price_cents=999)

    await add(platform, user, pen.id, 2)
    cart = await add(platform, user, ink.id, 1)

    assert [(i.product_id, i.name, i.quantity, i.unit_price_cents) for i in cart.items] == [
        (pen.id, pen.name, 2, 150),
        (ink.id, ink.name, 1, 999),
    ]
    assert [i.line_total_cents for i in cart.items] == [300, 999]
    assert cart.total_cents == 1299
    assert cart.currency == "USD"


async def test_adding_an_unknown_product_is_not_found(platform: Platform) -> None:
    error = await rpc_error(add(platform, new_user(), str(uuid.uuid4()), 1))

    assert error.code() == grpc.StatusCode.NOT_FOUND


async def test_adding_more_than_the_stock_is_a_failed_precondition(platform: Platform) -> None:
    user = new_user()
    product = await platform.create_product(stock=3)
    await add(platform, user, product.id, 2)

    error = await rpc_error(add(platform, user, product.id, 2))

    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "only 3 are in stock" in (error.details() or "")


async def test_a_line_over_100_units_is_a_failed_precondition(platform: Platform) -> None:
    user = new_user()
    product = await platform.create_product(stock=500)
    await add(platform, user, product.id, 100)

    error = await rpc_error(add(platform, user, product.id, 1))

    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION


@pytest.mark.parametrize("quantity", [0, -1, 101])
async def test_a_requested_quantity_outside_1_to_100_names_the_field(
    platform: Platform, quantity: int
) -> None:
    product = await platform.create_product()

    error = await rpc_error(add(platform, new_user(), product.id, quantity))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_of(error) == "quantity"


# Fixed, so that every xdist worker collects the same test ids.
WELL_FORMED_ID = "7d4b8f0e-2c55-4f6e-9d0b-3c1a5e9f8a21"


@pytest.mark.parametrize(
    ("user_id", "product_id", "field"),
    [
        ("not-a-uuid", WELL_FORMED_ID, "user_id"),
        (WELL_FORMED_ID, "1234", "product_id"),
        ("", WELL_FORMED_ID, "user_id"),
    ],
)
async def test_a_malformed_id_names_the_field(
    platform: Platform, user_id: str, product_id: str, field: str
) -> None:
    error = await rpc_error(add(platform, user_id, product_id, 1))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_of(error) == field


async def test_a_price_change_shows_in_the_next_cart(platform: Platform) -> None:
    user = new_user()
    product = await platform.create_product(price_cents=500)
    await add(platform, user, product.id, 3)

    await platform.products.UpdateProduct(
        product_pb2.UpdateProductRequest(id=product.id, price_cents=450), timeout=5
    )
    cart = (await platform.carts.GetCart(cart_pb2.GetCartRequest(user_id=user), timeout=5)).cart

    assert cart.items[0].unit_price_cents == 450
    assert cart.total_cents == 1350


async def test_set_quantity_checks_the_current_stock(platform: Platform) -> None:
    user = new_user()
    product = await platform.create_product(stock=5)
    await add(platform, user, product.id, 1)
    await platform.products.UpdateProduct(
        product_pb2.UpdateProductRequest(id=product.id, stock=2), timeout=5
    )

    error = await rpc_error(
        platform.carts.SetItemQuantity(
            cart_pb2.SetItemQuantityRequest(user_id=user, product_id=product.id, quantity=3),
            timeout=5,
        )
    )
    cart = (
        await platform.carts.SetItemQuantity(
            cart_pb2.SetItemQuantityRequest(user_id=user, product_id=product.id, quantity=2),
            timeout=5,
        )
    ).cart

    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert [i.quantity for i in cart.items] == [2]


async def test_set_quantity_zero_removes_the_line(platform: Platform) -> None:
    user = new_user()
    kept, removed = await platform.create_product(), await platform.create_product()
    await add(platform, user, kept.id, 1)
    await add(platform, user, removed.id, 1)

    cart = (
        await platform.carts.SetItemQuantity(
            cart_pb2.SetItemQuantityRequest(user_id=user, product_id=removed.id, quantity=0),
            timeout=5,
        )
    ).cart

    assert [i.product_id for i in cart.items] == [kept.id]


async def test_removing_a_line_not_in_the_cart_is_not_found(platform: Platform) -> None:
    error = await rpc_error(
        platform.carts.RemoveItem(
            cart_pb2.RemoveItemRequest(user_id=new_user(), product_id=str(uuid.uuid4())),
            timeout=5,
        )
    )

    assert error.code() == grpc.StatusCode.NOT_FOUND


async def test_remove_item_then_clear_cart_empty_the_cart(platform: Platform) -> None:
    user = new_user()
    first, second = await platform.create_product(), await platform.create_product()
    await add(platform, user, first.id, 1)
    await add(platform, user, second.id, 1)

    after_remove = (
        await platform.carts.RemoveItem(
            cart_pb2.RemoveItemRequest(user_id=user, product_id=first.id), timeout=5
        )
    ).cart
    await platform.carts.ClearCart(cart_pb2.ClearCartRequest(user_id=user), timeout=5)
    after_clear = (
        await platform.carts.GetCart(cart_pb2.GetCartRequest(user_id=user), timeout=5)
    ).cart

    assert [i.product_id for i in after_remove.items] == [second.id]
    assert list(after_clear.items) == []


async def test_a_product_in_another_currency_is_refused(platform: Platform) -> None:
    user = new_user()
    await add(platform, user, (await platform.create_product(currency="USD")).id, 1)

    error = await rpc_error(
        add(platform, user, (await platform.create_product(currency="EUR")).id, 1)
    )

    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_with_service_product_silent_writes_answer_unavailable_within_the_deadline(
    redis_url: str, redis_key_prefix: str, jwks_address: str
) -> None:
    # A listener that accepts and never speaks HTTP/2: only the deadline ends the call.
    silent = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    settings = cart_settings(
        CART_STORE="redis",
        REDIS_URL=redis_url,
        REDIS_KEY_PREFIX=f"{redis_key_prefix}silent:",
        PRODUCT_SERVICE_ADDR=f"127.0.0.1:{port}",
        PRODUCT_RPC_TIMEOUT_SECONDS=0.5,
        USER_SERVICE_ADDR=jwks_address,
    )
    user = new_user()
    async with (
        silent,
        running_cart(settings) as runtime,
        grpc.aio.insecure_channel(
            f"127.0.0.1:{runtime.bound_port}", interceptors=[OwnerTokenInterceptor(AUTHORITY)]
        ) as channel,
    ):
        carts = cart_pb2_grpc.CartServiceStub(channel)
        error = await rpc_error(
            carts.AddItem(
                cart_pb2.AddItemRequest(user_id=user, product_id=str(uuid.uuid4()), quantity=1),
                timeout=10,
            )
        )
        empty = (await carts.GetCart(cart_pb2.GetCartRequest(user_id=user), timeout=10)).cart
        await carts.ClearCart(cart_pb2.ClearCartRequest(user_id=user), timeout=10)

    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert empty == cart_pb2.Cart(user_id=user, currency="USD")


class CountingCatalog(ProductCatalog):
    """The real client of the test's service-product, counting the calls it makes."""

    def __init__(self, address: str) -> None:
        connected = ProductCatalog.connect(address, timeout_seconds=5)
        super().__init__(connected._channel, timeout_seconds=5)
        self.calls: list[tuple[str, list[str]]] = []

    async def get(self, product_id: str) -> ProductSnapshot:
        self.calls.append(("GetProduct", [product_id]))
        return await super().get(product_id)

    async def batch_get(self, product_ids: Iterable[str]) -> dict[str, ProductSnapshot]:
        ids = list(product_ids)
        self.calls.append(("BatchGetProducts", ids))
        return await super().batch_get(ids)


async def test_an_add_reads_the_added_product_once_and_only_the_other_lines_prices(
    platform: Platform, store: CartStore, user_id: str
) -> None:
    lamp, desk = await platform.create_product(), await platform.create_product()
    catalog = CountingCatalog(platform.product_address)
    carts = Carts(catalog)
    carts.attach(store)
    try:
        first = await handlers.add_item(carts, user_id=user_id, product_id=lamp.id, quantity=1)
        calls_of_the_first = list(catalog.calls)
        catalog.calls.clear()
        second = await handlers.add_item(carts, user_id=user_id, product_id=desk.id, quantity=2)
    finally:
        await catalog.close()

    assert calls_of_the_first == [("GetProduct", [lamp.id])]
    assert catalog.calls == [("GetProduct", [desk.id]), ("BatchGetProducts", [lamp.id])]
    assert [(item.product_id, item.quantity) for item in first.items] == [(lamp.id, 1)]
    assert sorted((item.product_id, item.name, item.quantity) for item in second.items) == sorted(
        [(lamp.id, lamp.name, 1), (desk.id, desk.name, 2)]
    )


async def test_a_cart_read_for_its_lines_only_reads_no_product(
    platform: Platform, store: CartStore, user_id: str
) -> None:
    lamp = await platform.create_product(price_cents=700)
    catalog = CountingCatalog(platform.product_address)
    carts = Carts(catalog)
    carts.attach(store)
    try:
        await handlers.add_item(carts, user_id=user_id, product_id=lamp.id, quantity=3)
        catalog.calls.clear()
        lines = await handlers.get_cart(carts, user_id=user_id, lines_only=True)
        calls_for_the_lines = list(catalog.calls)
        priced = await handlers.get_cart(carts, user_id=user_id)
    finally:
        await catalog.close()

    assert calls_for_the_lines == []
    assert [(item.product_id, item.quantity, item.name) for item in lines.items] == [
        (lamp.id, 3, "")
    ]
    assert [(item.product_id, item.quantity, item.unit_price_cents) for item in priced.items] == [
        (lamp.id, 3, 700)
    ]
    assert catalog.calls == [("BatchGetProducts", [lamp.id])]
