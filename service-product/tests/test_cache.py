"""The Redis cache in front of product reads: hits and misses, invalidation after a change, the
stale-set race, single-flight, and reads that keep working when Redis is unreachable."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from chassis.testing.proxy import TcpProxy
from ecommerce.product.v1 import product_pb2, product_pb2_grpc
from product_service.cache import TOMBSTONE
from product_service.domain import Product

Stub = product_pb2_grpc.ProductServiceStub
MakeProduct = Callable[..., Awaitable[product_pb2.Product]]
Metric = Callable[..., float]
StoreRead = Callable[[Sequence[uuid.UUID]], Awaitable[dict[uuid.UUID, Product]]]


async def get(stub: Stub, product_id: str) -> Any:
    return await stub.GetProduct(product_pb2.GetProductRequest(id=product_id), timeout=5)


@pytest.fixture
def store_reads(service: Any, monkeypatch: pytest.MonkeyPatch) -> list[list[uuid.UUID]]:
    """Every ProductStore.get_many call the cache makes during the test, with its ids."""
    calls: list[list[uuid.UUID]] = []
    real: StoreRead = service.app.store.get_many

    async def counting(ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Product]:
        calls.append(list(ids))
        return await real(ids)

    monkeypatch.setattr(service.app.store, "get_many", counting)
    return calls


async def test_first_read_misses_and_fills_then_next_read_hits(
    service: Any, make_product: MakeProduct, metric: Metric, store_reads: list[Any]
) -> None:
    product = await make_product()
    hits, misses = (
        metric("product_cache_requests_total", result="hit"),
        metric("product_cache_requests_total", result="miss"),
    )

    first = (await get(service.stub, product.id)).product
    cached = await service.app.cache._redis.get(service.app.cache.key(uuid.UUID(product.id)))
    second = (await get(service.stub, product.id)).product

    assert first == second == product
    version, message = cached.removeprefix(b"#").split(b"#", 1)
    assert (product_pb2.Product.FromString(message), int(version)) == (product, 1)
    assert metric("product_cache_requests_total", result="miss") == misses + 1
    assert metric("product_cache_requests_total", result="hit") == hits + 1
    assert store_reads == [[uuid.UUID(product.id)]]


async def test_writer_reads_its_own_update_at_once(service: Any, make_product: MakeProduct) -> None:
    product = await make_product(price_cents=1000, stock=4)
    await get(service.stub, product.id)  # cached with the old values

    await service.stub.UpdateProduct(
        product_pb2.UpdateProductRequest(id=product.id, price_cents=1500, stock=2)
    )
    after = (await get(service.stub, product.id)).product

    assert (after.price_cents, after.stock) == (1500, 2)


async def test_update_replaces_the_cached_value_with_a_tombstone(
    service: Any, make_product: MakeProduct
) -> None:
    product = await make_product()
    await get(service.stub, product.id)
    key = service.app.cache.key(uuid.UUID(product.id))

    await service.stub.UpdateProduct(product_pb2.UpdateProductRequest(id=product.id, stock=1))

    assert await service.app.cache._redis.get(key) == TOMBSTONE
    assert 0 < await service.app.cache._redis.pttl(key) <= 5000


async def test_read_that_began_before_an_update_does_not_put_the_old_value_back(
    service: Any, make_product: MakeProduct, monkeypatch: pytest.MonkeyPatch
) -> None:
    product = await make_product(price_cents=1000)
    real: StoreRead = service.app.store.get_many
    old_row_read, update_done = asyncio.Event(), asyncio.Event()

    async def slow_first_read(ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Product]:
        rows = await real(ids)
        if not old_row_read.is_set():
            old_row_read.set()
            await update_done.wait()  # the update commits between our SELECT and our cache fill
        return rows

    monkeypatch.setattr(service.app.store, "get_many", slow_first_read)
    stale_reader = asyncio.create_task(get(service.stub, product.id))
    await old_row_read.wait()
    await service.stub.UpdateProduct(
        product_pb2.UpdateProductRequest(id=product.id, price_cents=2000)
    )
    update_done.set()
    assert (await stale_reader).product.price_cents == 1000  # it did start before the update

    key = service.app.cache.key(uuid.UUID(product.id))
    assert await service.app.cache._redis.get(key) == TOMBSTONE
    assert (await get(service.stub, product.id)).product.price_cents == 2000


@pytest.mark.slow
async def test_a_refresh_after_a_commit_is_read_from_the_cache_and_never_goes_back(
    service: Any, make_product: MakeProduct, store_reads: list[list[uuid.UUID]]
) -> None:
    """A reservation's commit refreshes the products it changed (reads after it hit the cache
    and see the new stock); a refresh older than what Redis holds changes nothing, whichever
    lands last; a tombstone (a catalogue change) is not overwritten."""
    product = await make_product(stock=5)
    product_id = uuid.UUID(product.id)
    await get(service.stub, product.id)  # cached at version 1
    stored = await service.app.store.get(product_id)
    assert stored is not None
    assert stored.version == 1
    cache = service.app.cache
    reserved, older = replace(stored, stock=4, version=2), replace(stored, stock=9, version=1)
    store_reads.clear()

    await cache.refresh([reserved])
    after_refresh = (await get(service.stub, product.id)).product.stock
    await cache.refresh([older])
    after_older = (await get(service.stub, product.id)).product.stock
    reads_while_cached = list(store_reads)
    await cache.invalidate([product_id])
    await cache.refresh([replace(stored, stock=3, version=3)])
    after_tombstone = await cache._redis.get(cache.key(product_id))

    assert (after_refresh, after_older) == (4, 4)
    assert reads_while_cached == []
    assert after_tombstone == TOMBSTONE


async def test_every_update_of_a_product_bumps_its_version(
    service: Any, make_product: MakeProduct
) -> None:
    """Every update bumps the row's version (the trigger), whoever writes it."""
    product = await make_product(stock=5)
    product_id = uuid.UUID(product.id)
    await service.stub.UpdateProduct(product_pb2.UpdateProductRequest(id=product.id, stock=6))
    await service.stub.UpdateProduct(product_pb2.UpdateProductRequest(id=product.id, stock=7))

    stored = await service.app.store.get(product_id)

    assert stored is not None
    assert (stored.stock, stored.version) == (7, 3)


async def test_concurrent_misses_for_one_product_make_one_database_read(
    service: Any, make_product: MakeProduct, store_reads: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    product = await make_product()
    counting: StoreRead = service.app.store.get_many

    async def slow_read(ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Product]:
        await asyncio.sleep(0.3)  # keep the read in flight while all 200 calls arrive
        return await counting(ids)

    monkeypatch.setattr(service.app.store, "get_many", slow_read)

    responses = await asyncio.gather(*(get(service.stub, product.id) for _ in range(200)))

    assert {r.product.SerializeToString() for r in responses} == {product.SerializeToString()}
    assert store_reads == [[uuid.UUID(product.id)]]


async def test_batch_reads_cached_products_from_redis_and_only_the_rest_from_postgres(
    service: Any, make_product: MakeProduct, store_reads: list[Any]
) -> None:
    a, b, c = [await make_product() for _ in range(3)]
    await get(service.stub, b.id)
    store_reads.clear()

    response = await service.stub.BatchGetProducts(
        product_pb2.BatchGetProductsRequest(ids=[a.id, b.id, c.id])
    )

    assert list(response.products) == [a, b, c]
    assert store_reads == [[uuid.UUID(a.id), uuid.UUID(c.id)]]


async def test_reads_and_writes_succeed_with_redis_unreachable(
    make_settings: Any, start_service: Any, unreachable_redis_url: str, metric: Metric
) -> None:
    errors_before = sum(
        metric("product_cache_errors_total", operation=op)
        for op in ("sweep", "mget", "fill", "invalidate")
    )
    async with start_service(make_settings(REDIS_URL=unreachable_redis_url)) as down:
        created = (
            await down.stub.CreateProduct(
                product_pb2.CreateProductRequest(
                    sku=f"SKU-{uuid.uuid4().hex}", name="Offline Kettle", price_cents=900, stock=2
                )
            )
        ).product
        fetched = (await get(down.stub, created.id)).product
        await down.stub.UpdateProduct(product_pb2.UpdateProductRequest(id=created.id, stock=1))
        batch = await down.stub.BatchGetProducts(
            product_pb2.BatchGetProductsRequest(ids=[created.id])
        )
        health = await health_pb2_grpc.HealthStub(down.channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=5
        )

    assert fetched == created
    assert [p.stock for p in batch.products] == [1]
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    # Every read first tries to sweep what an earlier process cached (see the cache), and reads
    # from Postgres while it cannot.
    assert metric("product_cache_errors_total", operation="sweep") >= 2
    assert metric("product_cache_errors_total", operation="invalidate") >= 1
    errors_after = sum(
        metric("product_cache_errors_total", operation=op)
        for op in ("sweep", "mget", "fill", "invalidate")
    )
    assert errors_after >= errors_before + 4


async def test_an_undecodable_cached_value_is_read_through_from_postgres(
    service: Any, make_product: MakeProduct, metric: Metric
) -> None:
    product = await make_product()
    # Read once first: a process's first read tombstones whatever an earlier process cached.
    await get(service.stub, product.id)
    key = service.app.cache.key(uuid.UUID(product.id))
    await service.app.cache._redis.set(key, b"\xff\xff not a product", ex=60)
    decode_errors = metric("product_cache_errors_total", operation="decode")

    fetched = (await get(service.stub, product.id)).product

    assert fetched == product
    assert metric("product_cache_errors_total", operation="decode") == decode_errors + 1


async def test_a_read_that_saw_the_cache_before_the_tombstone_is_not_joined_by_the_writer(
    service: Any, make_product: MakeProduct, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch read starting while the invalidation is on its way to Redis can still see the old
    cached value; the writer's next read must not join it."""
    changed, slow = await make_product(price_cents=1000), await make_product()
    await get(service.stub, changed.id)  # cached with the old price
    cache = service.app.cache
    real_read: StoreRead = service.app.store.get_many
    slow_id = uuid.UUID(slow.id)
    batch_reading, release_batch = asyncio.Event(), asyncio.Event()

    async def read(ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Product]:
        if slow_id in ids:
            batch_reading.set()
            await release_batch.wait()
        return await real_read(ids)

    real_pipeline = cache._redis.pipeline
    tombstone_held, release_tombstone = asyncio.Event(), asyncio.Event()

    def pipeline(*args: Any, **kwargs: Any) -> Any:
        pipe = real_pipeline(*args, **kwargs)
        real_execute = pipe.execute

        async def execute(*a: Any, **k: Any) -> Any:
            if not release_tombstone.is_set():
                tombstone_held.set()
                await release_tombstone.wait()
            return await real_execute(*a, **k)

        pipe.execute = execute
        return pipe

    monkeypatch.setattr(service.app.store, "get_many", read)
    monkeypatch.setattr(cache._redis, "pipeline", pipeline)

    async def update_price() -> Any:
        request = product_pb2.UpdateProductRequest(id=changed.id, price_cents=2000)
        return await service.stub.UpdateProduct(request, timeout=5)

    async def read_batch() -> Any:
        request = product_pb2.BatchGetProductsRequest(ids=[changed.id, slow.id])
        return await service.stub.BatchGetProducts(request, timeout=5)

    update = asyncio.create_task(update_price())
    await tombstone_held.wait()  # committed; the tombstone is not in Redis yet
    batch = asyncio.create_task(read_batch())
    await batch_reading.wait()  # the batch has read the old cached value and waits on Postgres
    release_tombstone.set()
    await update
    writer_read = asyncio.create_task(get(service.stub, changed.id))
    await asyncio.sleep(0.05)  # the writer's read is under way while the batch is still in flight
    release_batch.set()
    await batch

    assert (await writer_read).product.price_cents == 2000


async def test_a_change_made_while_redis_was_away_is_read_once_redis_is_back(
    make_settings: Any, start_service: Any, redis_url: str
) -> None:
    """The invalidation that fails while Redis is unreachable is not forgotten: the value
    cached before the outage is never served once Redis answers again."""
    target = urlsplit(redis_url)
    async with TcpProxy(target.hostname or "127.0.0.1", target.port or 6379) as proxy:
        through_proxy = urlunsplit(target._replace(netloc=f"127.0.0.1:{proxy.port}"))
        async with start_service(make_settings(REDIS_URL=through_proxy)) as running:
            created = (
                await running.stub.CreateProduct(
                    product_pb2.CreateProductRequest(
                        sku=f"SKU-{uuid.uuid4().hex}", name="Kettle", price_cents=900, stock=10
                    )
                )
            ).product
            await get(running.stub, created.id)  # cached with stock 10
            await proxy.cut()
            await running.stub.UpdateProduct(
                product_pb2.UpdateProductRequest(id=created.id, stock=3)
            )
            await proxy.restore()

            single = (await get(running.stub, created.id)).product
            batch = await running.stub.BatchGetProducts(
                product_pb2.BatchGetProductsRequest(ids=[created.id])
            )
            again = (await get(running.stub, created.id)).product

    assert (single.stock, [p.stock for p in batch.products], again.stock) == (3, [3], 3)


async def test_a_value_an_earlier_process_left_in_the_cache_is_not_served_by_a_new_one(
    service: Any, make_product: MakeProduct, make_settings: Any, start_service: Any
) -> None:
    """A process killed between a commit and its invalidation leaves a value older than the
    database in Redis; the next process cannot know which, so it trusts no value cached
    before it started."""
    product = await make_product()
    key = service.app.cache.key(uuid.UUID(product.id))
    stale = product_pb2.Product()
    stale.CopyFrom(product)
    stale.stock = product.stock + 100
    await service.app.cache._redis.set(key, stale.SerializeToString())

    async with start_service(make_settings()) as restarted:
        read = (await get(restarted.stub, product.id)).product
        again = (await get(restarted.stub, product.id)).product

    assert (read.stock, again.stock) == (product.stock, product.stock)
