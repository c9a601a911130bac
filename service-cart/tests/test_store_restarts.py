"""service-cart on Redis across a Redis restart: once Redis answers again, no cart call fails and
none has its effect twice. The restart is a proxy's in front of the shared server (which is never
restarted): every pooled connection dropped, new ones refused for a second, then accepted by a
"server" that knows none of the old connections."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import grpc
import pytest

from cart_service.redis_store import RedisCartStore
from chassis.redis_client import create_redis
from chassis.testing.proxy import TcpProxy
from chassis.testing.tokens import OwnerTokenInterceptor
from ecommerce.cart.v1 import cart_pb2, cart_pb2_grpc

from .conftest import AUTHORITY, Platform, cart_settings, inbox, running_cart

SHOPPERS = 12
AFTER_RESTART = 50


@pytest.fixture
async def redis_proxy(redis_url: str) -> AsyncIterator[TcpProxy]:
    async with TcpProxy.in_front_of(redis_url) as proxy:
        yield proxy


@pytest.fixture
async def carts(
    platform: Platform,
    redis_url: str,
    redis_key_prefix: str,
    jwks_address: str,
    redis_proxy: TcpProxy,
) -> AsyncIterator[cart_pb2_grpc.CartServiceStub]:
    """A service-cart of its own whose Redis is behind `redis_proxy`."""
    settings = cart_settings(
        CART_STORE="redis",
        REDIS_URL=redis_proxy.url(redis_url),
        REDIS_KEY_PREFIX=f"{redis_key_prefix}restart:",
        PRODUCT_SERVICE_ADDR=platform.product_address,
        USER_SERVICE_ADDR=jwks_address,
    )
    async with (
        running_cart(settings) as runtime,
        grpc.aio.insecure_channel(
            f"127.0.0.1:{runtime.bound_port}", interceptors=[OwnerTokenInterceptor(AUTHORITY)]
        ) as channel,
    ):
        yield cart_pb2_grpc.CartServiceStub(channel)


async def redis_answers(url: str, within: float = 10.0) -> None:
    probe = create_redis(url, timeout_seconds=0.5)
    deadline = time.monotonic() + within
    try:
        while True:
            try:
                await probe.ping()
                return
            except Exception:
                assert time.monotonic() < deadline, "Redis never answered again"
                await asyncio.sleep(0.05)
    finally:
        await probe.aclose()


@pytest.mark.slow
async def test_once_redis_is_back_every_cart_call_succeeds_and_adds_count_once(
    platform: Platform,
    carts: cart_pb2_grpc.CartServiceStub,
    redis_proxy: TcpProxy,
    redis_url: str,
) -> None:
    """The issue as a shopper met it: 12 shoppers add at once, Redis restarts, then every route
    is asked 50 times at once. Before, each pooled connection the restart killed failed the
    next request that drew it (503), minutes later if need be."""
    pen = await platform.create_product(stock=100_000)
    ink = await platform.create_product(stock=100_000)
    shoppers = [str(uuid.uuid4()) for _ in range(SHOPPERS)]

    def add(user: str, product_id: str, quantity: int = 1) -> object:
        request = cart_pb2.AddItemRequest(user_id=user, product_id=product_id, quantity=quantity)
        return carts.AddItem(request, timeout=5)

    await asyncio.gather(*(add(user, pen.id) for user in shoppers))
    assert redis_proxy.connections >= 2, "the pool was not warmed by concurrent requests"

    await redis_proxy.restart(down_for=1.0)
    await redis_answers(redis_proxy.url(redis_url))

    # Every route that reaches Redis, at once; each shopper's adds are counted below.
    calls = []
    for index in range(AFTER_RESTART):
        user = shoppers[index % SHOPPERS]
        calls += [
            add(user, ink.id),
            carts.GetCart(cart_pb2.GetCartRequest(user_id=user), timeout=5),
            carts.SetItemQuantity(
                cart_pb2.SetItemQuantityRequest(user_id=user, product_id=pen.id, quantity=3),
                timeout=5,
            ),
        ]
    outsider = str(uuid.uuid4())
    await add(outsider, pen.id)
    calls += [
        carts.RemoveItem(
            cart_pb2.RemoveItemRequest(user_id=outsider, product_id=pen.id), timeout=5
        ),
        carts.ClearCart(cart_pb2.ClearCartRequest(user_id=str(uuid.uuid4())), timeout=5),
    ]
    results = await asyncio.gather(*calls, return_exceptions=True)  # type: ignore[call-overload]

    failures = [r for r in results if isinstance(r, BaseException)]
    assert failures == []
    for index, user in enumerate(shoppers):
        cart = (await carts.GetCart(cart_pb2.GetCartRequest(user_id=user), timeout=5)).cart
        quantities = {item.product_id: item.quantity for item in cart.items}
        adds = len(range(index, AFTER_RESTART, SHOPPERS))
        assert quantities == {pen.id: 3, ink.id: adds}, user


async def test_a_cart_script_redis_does_not_hold_is_loaded_again_and_the_change_made(
    redis_url: str, redis_key_prefix: str
) -> None:
    """After a restart Redis's script cache is empty: EVALSHA answers NOSCRIPT. The shared
    server's cache is not flushed here; the store's script handle is pointed at a sha the server
    does not hold, which is exactly what EVALSHA meets after a restart."""
    store = await RedisCartStore.connect(
        redis_url, f"{redis_key_prefix}noscript:", ttl_days=1, inbox=inbox()
    )
    try:
        user, product = str(uuid.uuid4()), str(uuid.uuid4())
        store._mutate.sha = "0" * 40

        cart = await store.add_item(user, product, 2, stock=10, currency="USD")

        assert [(line.product_id, line.quantity) for line in cart.lines] == [(product, 2)]
        assert store._mutate.sha != "0" * 40
    finally:
        await store.close()
