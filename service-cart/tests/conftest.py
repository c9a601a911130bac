"""Fixtures of the cart tests: every reachable store behind one `CartStore` fixture."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
import redis.asyncio as redis

from cart_service.couchbase_store import CouchbaseCartStore, CouchbaseLocation
from cart_service.redis_store import RedisCartStore
from cart_service.store import CartStore

TTL_DAYS = 30


@dataclass
class StoreUnderTest:
    """A store plus a way to read a cart's expiry behind its back."""

    store: CartStore
    seconds_to_expiry: Callable[[str], Awaitable[float | None]]


def couchbase_location() -> CouchbaseLocation | None:
    connstr = os.environ.get("COUCHBASE_CONNSTR")
    if not connstr:
        return None
    return CouchbaseLocation(
        connstr=connstr,
        username=os.environ.get("COUCHBASE_USERNAME", "Administrator"),
        password=os.environ.get("COUCHBASE_PASSWORD", "password"),
        bucket=os.environ.get("COUCHBASE_BUCKET", "carts"),
        scope=os.environ.get("COUCHBASE_SCOPE", "_default"),
        collection=os.environ.get("COUCHBASE_COLLECTION", "_default"),
    )


async def _redis_store(url: str, prefix: str) -> AsyncIterator[StoreUnderTest]:
    store = await RedisCartStore.connect(url, prefix, ttl_days=TTL_DAYS)
    probe = redis.from_url(url)

    async def seconds_to_expiry(user_id: str) -> float | None:
        ttl = await probe.ttl(store.key(user_id))
        return float(ttl) if ttl >= 0 else None

    yield StoreUnderTest(store, seconds_to_expiry)
    await store.close()
    await probe.aclose()


async def _couchbase_store(location: CouchbaseLocation) -> AsyncIterator[StoreUnderTest]:
    from couchbase.exceptions import DocumentNotFoundException
    from couchbase.options import GetOptions

    store = await CouchbaseCartStore.connect(location, ttl_days=TTL_DAYS)

    async def seconds_to_expiry(user_id: str) -> float | None:
        try:
            result = await store.collection.get(store.key(user_id), GetOptions(with_expiry=True))
        except DocumentNotFoundException:
            return None
        if result.expiry_time is None:
            return None
        return (result.expiry_time - datetime.now(UTC)).total_seconds()

    yield StoreUnderTest(store, seconds_to_expiry)
    await store.close()


@pytest.fixture(params=["redis", pytest.param("couchbase", marks=pytest.mark.couchbase)])
async def under_test(
    request: pytest.FixtureRequest, redis_url: str, redis_key_prefix: str
) -> AsyncIterator[StoreUnderTest]:
    if request.param == "redis":
        async for item in _redis_store(redis_url, redis_key_prefix):
            yield item
        return
    location = couchbase_location()
    if location is None:
        pytest.skip("COUCHBASE_CONNSTR is not set: no Couchbase cluster for the cart contract")
    async for item in _couchbase_store(location):
        yield item


@pytest.fixture
def store(under_test: StoreUnderTest) -> CartStore:
    return under_test.store


@pytest.fixture
def seconds_to_expiry(under_test: StoreUnderTest) -> Callable[[str], Awaitable[float | None]]:
    """Reads how long a cart has left to live, straight from the store's server."""
    return under_test.seconds_to_expiry


@pytest.fixture
def user_id() -> str:
    return str(uuid.uuid4())


@pytest.fixture(scope="session")
def redis_url() -> str:
    return os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="session")
async def redis_key_prefix(redis_url: str) -> AsyncIterator[str]:
    prefix = f"test-cart-{uuid.uuid4().hex[:8]}:"
    yield prefix
    client = redis.from_url(redis_url)
    keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()
