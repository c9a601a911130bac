"""Zero trust on the internal port: every cart RPC acts only for the user whose verified token it
carries. And no price, however it got into the catalogue, makes a cart answer 500."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable

import asyncpg
import grpc
import pytest
import redis.asyncio as redis

from chassis.testing.tokens import TokenAuthority
from ecommerce.cart.v1 import cart_pb2, cart_pb2_grpc

from .conftest import Platform


@pytest.fixture
async def bare(platform: Platform) -> AsyncIterator[cart_pb2_grpc.CartServiceStub]:
    """A stub whose calls carry only the metadata each test gives."""
    async with grpc.aio.insecure_channel(platform.cart_address) as channel:
        yield cart_pb2_grpc.CartServiceStub(channel)


async def code_of(call: Awaitable[object]) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    return raised.value.code()


async def test_another_users_cart_is_neither_read_nor_changed_without_their_token(
    platform: Platform, bare: cart_pb2_grpc.CartServiceStub, authority: TokenAuthority
) -> None:
    victim, intruder = str(uuid.uuid4()), str(uuid.uuid4())
    product = await platform.create_product(stock=5)
    await platform.carts.AddItem(
        cart_pb2.AddItemRequest(user_id=victim, product_id=product.id, quantity=2), timeout=5
    )
    read = cart_pb2.GetCartRequest(user_id=victim)
    clear = cart_pb2.ClearCartRequest(user_id=victim)
    forged = TokenAuthority().metadata(victim)  # the victim's id, signed by another key
    as_intruder = authority.metadata(intruder)
    as_admin = authority.metadata(intruder, role="admin")

    assert await code_of(bare.GetCart(read, timeout=5)) == grpc.StatusCode.UNAUTHENTICATED
    assert await code_of(bare.ClearCart(clear, metadata=forged, timeout=5)) == (
        grpc.StatusCode.UNAUTHENTICATED
    )
    for metadata in (as_intruder, as_admin):
        assert await code_of(bare.GetCart(read, metadata=metadata, timeout=5)) == (
            grpc.StatusCode.PERMISSION_DENIED
        )
        assert await code_of(bare.ClearCart(clear, metadata=metadata, timeout=5)) == (
            grpc.StatusCode.PERMISSION_DENIED
        )
    cart = (await bare.GetCart(read, metadata=authority.metadata(victim), timeout=5)).cart
    assert [(item.product_id, item.quantity) for item in cart.items] == [(product.id, 2)]


async def test_a_product_priced_past_the_cap_never_makes_a_cart_fail(
    platform: Platform, product_db_url: str, redis_url: str, redis_key_prefix: str
) -> None:
    user = str(uuid.uuid4())
    ordinary = await platform.create_product(stock=200, price_cents=250)
    legacy = await platform.create_product(stock=200, price_cents=100)
    for product in (ordinary, legacy):
        await platform.carts.AddItem(
            cart_pb2.AddItemRequest(user_id=user, product_id=product.id, quantity=100), timeout=5
        )
    # A price stored before the cap existed: written behind the service's back, cache dropped.
    connection = await asyncpg.connect(product_db_url)
    try:
        await connection.execute(
            "UPDATE products SET price_cents = $1 WHERE id = $2", 2**62, uuid.UUID(legacy.id)
        )
    finally:
        await connection.close()
    cache = redis.from_url(redis_url)
    try:
        await cache.delete(f"{redis_key_prefix}product:product:{legacy.id}")
    finally:
        await cache.aclose()

    cart = (await platform.carts.GetCart(cart_pb2.GetCartRequest(user_id=user), timeout=5)).cart
    assert [item.product_id for item in cart.items] == [ordinary.id]
    assert cart.total_cents == 100 * 250
    refused = await code_of(
        platform.carts.SetItemQuantity(
            cart_pb2.SetItemQuantityRequest(user_id=user, product_id=legacy.id, quantity=1),
            timeout=5,
        )
    )
    assert refused == grpc.StatusCode.FAILED_PRECONDITION
