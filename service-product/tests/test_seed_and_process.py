"""The `service-product` executable: `seed` loads the same catalogue every time and only once,
and the plain command serves gRPC (health SERVING, metrics exposed) until SIGTERM."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import grpc
import httpx
import pytest

from chassis.testing.plugin import AmqpIsolation
from chassis.testing.process import ServiceProcess, free_port
from ecommerce.product.v1 import product_pb2, product_pb2_grpc
from product_service.seed import CATALOGUE_SIZE, sample_catalogue, seed_catalogue
from product_service.settings import ProductSettings

EXECUTABLE = str(Path(sys.executable).parent / "service-product")


@pytest.fixture(scope="session")
async def seed_db(create_database: Any) -> tuple[str, str]:
    """(name, URL) of a database of its own, so counts are not disturbed by other tests."""
    url = await create_database("products_seeded")
    return urlsplit(url).path.lstrip("/"), url


@pytest.fixture(scope="session")
def process_env(
    postgres_url: str,
    redis_url: str,
    redis_key_prefix: str,
    seed_db: tuple[str, str],
    amqp_url: str,
    amqp_isolation: AmqpIsolation,
) -> Callable[..., dict[str, str]]:
    def env(**overrides: str) -> dict[str, str]:
        return {
            "POSTGRES_URL": postgres_url,
            "PRODUCT_DB_NAME": seed_db[0],
            "REDIS_URL": redis_url,
            "REDIS_KEY_PREFIX": f"{redis_key_prefix}process:",
            "PRODUCT_GRPC_PORT": "0",
            "PRODUCT_METRICS_PORT": "0",
            "GRPC_HOST": "127.0.0.1",
            "AMQP_URL": amqp_url,
            "EVENTS_EXCHANGE": f"{amqp_isolation.queue_prefix}product-process.events",
            "QUEUE_PREFIX": f"{amqp_isolation.queue_prefix}process.",
            **overrides,
        }

    return env


async def run_seed(env: dict[str, str]) -> None:
    process = ServiceProcess([EXECUTABLE, "seed"], env=env, name="seed").start()
    code = await asyncio.to_thread(process.wait, 90)
    assert code == 0, process.output_tail()


async def catalogue_snapshot(url: str) -> tuple[int, list[tuple[str, str, int]]]:
    conn = await asyncpg.connect(url, timeout=10)
    try:
        count = await conn.fetchval("SELECT count(*) FROM products")
        first = await conn.fetch("SELECT sku, name, price_cents FROM products ORDER BY sku LIMIT 5")
    finally:
        await conn.close()
    return count, [tuple(row) for row in first]


def test_sample_catalogue_is_the_same_every_time_with_stable_skus() -> None:
    first, second = sample_catalogue(), sample_catalogue()
    assert first == second
    assert len(first) >= 1000
    assert [p.sku for p in first[:3]] == ["SKU-000001", "SKU-000002", "SKU-000003"]
    assert len({p.sku for p in first}) == len(first)
    assert len({p.name for p in first}) > 500  # varied enough to search and page through


@pytest.mark.slow
async def test_seeding_twice_loads_one_deterministic_catalogue(
    process_env: Callable[..., dict[str, str]], seed_db: tuple[str, str]
) -> None:
    await run_seed(process_env())  # the real `service-product seed` command
    after_first = await catalogue_snapshot(seed_db[1])
    # The second run in-process (same code path, without paying another interpreter start).
    inserted_again = await seed_catalogue(ProductSettings(**process_env()))
    after_second = await catalogue_snapshot(seed_db[1])

    assert inserted_again == 0
    assert after_first == after_second
    count, first_rows = after_first
    assert count == CATALOGUE_SIZE
    expected = [(p.sku, p.name, p.price_cents) for p in sample_catalogue()[:5]]
    assert first_rows == expected


@pytest.mark.slow
async def test_service_product_process_serves_until_sigterm(
    process_env: Callable[..., dict[str, str]],
) -> None:
    # Seeded here too (idempotent): this test must not depend on another having run before it.
    await run_seed(process_env())
    grpc_port, metrics_port = free_port(), free_port()
    env = process_env(PRODUCT_GRPC_PORT=str(grpc_port), PRODUCT_METRICS_PORT=str(metrics_port))
    async with ServiceProcess([EXECUTABLE], env=env, name="service-product") as process:
        address = f"127.0.0.1:{grpc_port}"
        await process.wait_serving(address, timeout_s=60)
        await process.wait_serving(address, service="ecommerce.product.v1.ProductService")
        async with grpc.aio.insecure_channel(address) as channel:
            stub = product_pb2_grpc.ProductServiceStub(channel)
            page = await stub.ListProducts(product_pb2.ListProductsRequest(page_size=5), timeout=5)
            assert len(page.products) == 5
            got = await stub.GetProduct(
                product_pb2.GetProductRequest(id=page.products[0].id), timeout=5
            )
            assert got.product == page.products[0]
        async with httpx.AsyncClient(timeout=5) as http:
            metrics = (await http.get(f"http://127.0.0.1:{metrics_port}/metrics")).text
        assert 'product_cache_requests_total{result="miss"}' in metrics
        assert "product_cache_errors_total" in metrics
        process.terminate()
        assert await asyncio.to_thread(process.wait, 30) == 0
