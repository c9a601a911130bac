"""service-product across a restart of each of its stores: once the server answers again, no call
fails. The restarts are proxies' in front of the shared servers (which are never restarted):
every pooled connection dropped, new ones refused for a second, then accepted again by a server
that knows none of the old connections."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest

from chassis.redis_client import create_redis
from chassis.testing.proxy import TcpProxy
from ecommerce.product.v1 import product_pb2

from .conftest import RunningProduct

AFTER_RESTART = 50
CACHE_OPERATIONS = ("mget", "fill", "invalidate", "sweep", "decode")


@pytest.fixture
async def postgres_proxy(postgres_url: str) -> AsyncIterator[TcpProxy]:
    async with TcpProxy.in_front_of(postgres_url) as proxy:
        yield proxy


@pytest.fixture
async def redis_proxy(redis_url: str) -> AsyncIterator[TcpProxy]:
    async with TcpProxy.in_front_of(redis_url) as proxy:
        yield proxy


@pytest.fixture
async def behind_proxies(
    make_settings: Callable[..., Any],
    start_service: Callable[..., Any],
    postgres_url: str,
    redis_url: str,
    redis_key_prefix: str,
    postgres_proxy: TcpProxy,
    redis_proxy: TcpProxy,
) -> AsyncIterator[RunningProduct]:
    """A service-product of its own reaching PostgreSQL and Redis through the proxies. Its Redis
    deadline is generous, so that a slow moment of a shared machine is not counted as a Redis
    failure below."""
    settings = make_settings(
        POSTGRES_URL=postgres_proxy.url(postgres_url),
        REDIS_URL=redis_proxy.url(redis_url),
        REDIS_KEY_PREFIX=f"{redis_key_prefix}restarts:{uuid.uuid4().hex[:8]}:",
        PRODUCT_REDIS_TIMEOUT_SECONDS=2,
    )
    async with start_service(settings) as running:
        yield running


async def until_answering(connect: Callable[[], Awaitable[None]], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while True:
        try:
            await connect()
            return
        except Exception:
            assert time.monotonic() < deadline, "the server never answered again"
            await asyncio.sleep(0.05)


async def redis_answers(url: str) -> None:
    async def ping() -> None:
        client = create_redis(url, timeout_seconds=0.5)
        try:
            await client.ping()
        finally:
            await client.aclose()

    await until_answering(ping)


async def postgres_answers(url: str) -> None:
    async def select_one() -> None:
        connection = await asyncpg.connect(url, timeout=1)
        await connection.close()

    await until_answering(select_one)


async def create(service: RunningProduct, stock: int = 10) -> product_pb2.Product:
    request = product_pb2.CreateProductRequest(
        sku=f"SKU-{uuid.uuid4().hex[:12]}",
        name=f"Restart {uuid.uuid4().hex[:8]}",
        price_cents=500,
        stock=stock,
    )
    return (await service.stub.CreateProduct(request, timeout=5)).product


def every_route(service: RunningProduct, products: list[product_pb2.Product]) -> list[Any]:
    """AFTER_RESTART rounds of every ProductService call, to run at once."""
    stub, calls = service.stub, []
    for index in range(AFTER_RESTART):
        product = products[index % len(products)]
        calls += [
            stub.GetProduct(product_pb2.GetProductRequest(id=product.id), timeout=5),
            stub.BatchGetProducts(
                product_pb2.BatchGetProductsRequest(ids=[p.id for p in products[:5]]), timeout=5
            ),
            stub.ListProducts(product_pb2.ListProductsRequest(page_size=5), timeout=5),
            stub.UpdateProduct(
                product_pb2.UpdateProductRequest(id=product.id, stock=index), timeout=5
            ),
        ]
    calls += [create(service) for _ in range(5)]
    return calls


async def warm(service: RunningProduct, products: list[product_pb2.Product]) -> None:
    """Requests at once, so that every pool holds several connections when the restart comes."""
    stub = service.stub
    await asyncio.gather(
        *(stub.GetProduct(product_pb2.GetProductRequest(id=p.id), timeout=5) for p in products),
        *(stub.ListProducts(product_pb2.ListProductsRequest(page_size=5)) for _ in products),
    )


@pytest.mark.slow
async def test_once_redis_is_back_every_call_succeeds_and_none_falls_back_for_a_failure(
    behind_proxies: RunningProduct,
    redis_proxy: TcpProxy,
    redis_url: str,
    metric: Callable[..., float],
) -> None:
    """The cache would hide a failure (a read falls back to PostgreSQL), so the promise is
    checked where it shows: not one Redis command failed after Redis answered again."""
    products = [await create(behind_proxies) for _ in range(12)]
    await warm(behind_proxies, products)
    assert redis_proxy.connections >= 2, "the Redis pool was not warmed by concurrent requests"

    await redis_proxy.restart(down_for=1.0)
    await redis_answers(redis_proxy.url(redis_url))
    cache_errors = {
        op: metric("product_cache_errors_total", operation=op) for op in CACHE_OPERATIONS
    }

    results = await asyncio.gather(*every_route(behind_proxies, products), return_exceptions=True)

    assert [r for r in results if isinstance(r, BaseException)] == []
    after = {op: metric("product_cache_errors_total", operation=op) for op in CACHE_OPERATIONS}
    assert after == cache_errors


@pytest.mark.slow
async def test_once_postgresql_is_back_every_call_succeeds(
    behind_proxies: RunningProduct,
    postgres_proxy: TcpProxy,
    postgres_url: str,
    products_db_name: str,
) -> None:
    products = [await create(behind_proxies) for _ in range(12)]
    await warm(behind_proxies, products)
    assert postgres_proxy.connections >= 2, "the database pool was not warmed"

    await postgres_proxy.restart(down_for=1.0)
    await postgres_answers(f"{postgres_proxy.url(postgres_url)}/{products_db_name}")

    results = await asyncio.gather(*every_route(behind_proxies, products), return_exceptions=True)

    assert [r for r in results if isinstance(r, BaseException)] == []
