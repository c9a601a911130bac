"""The gateway's product micro-cache on its own: hits within the TTL, single-flight misses,
eviction by the writer, failures never cached, bounded size."""

from __future__ import annotations

import asyncio

import pytest

from api_gateway.product_cache import ProductMicroCache


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class CountingLoader:
    """Stands in for the GetProduct call: counts calls, can be held open or made to fail."""

    def __init__(self, body: bytes = b'{"v":1}') -> None:
        self.body = body
        self.calls = 0
        self.release = asyncio.Event()
        self.release.set()
        self.error: Exception | None = None

    async def __call__(self) -> bytes:
        self.calls += 1
        await self.release.wait()
        if self.error is not None:
            raise self.error
        return self.body


async def test_second_read_within_the_ttl_is_served_from_memory() -> None:
    cache, load = ProductMicroCache(ttl_seconds=1.0, clock=FakeClock()), CountingLoader()
    assert await cache.get("p", load) == b'{"v":1}'
    assert await cache.get("p", load) == b'{"v":1}'
    assert load.calls == 1


async def test_entry_expires_after_the_ttl() -> None:
    clock = FakeClock()
    cache, load = ProductMicroCache(ttl_seconds=1.0, clock=clock), CountingLoader()
    await cache.get("p", load)
    clock.now += 1.01
    load.body = b'{"v":2}'
    assert await cache.get("p", load) == b'{"v":2}'
    assert load.calls == 2


async def test_concurrent_misses_share_one_upstream_call() -> None:
    cache, load = ProductMicroCache(ttl_seconds=1.0), CountingLoader()
    load.release.clear()
    readers = [asyncio.create_task(cache.get("p", load)) for _ in range(200)]
    await asyncio.sleep(0)
    load.release.set()
    assert set(await asyncio.gather(*readers)) == {b'{"v":1}'}
    assert load.calls == 1


async def test_eviction_makes_the_next_read_fetch_the_new_value() -> None:
    cache, load = ProductMicroCache(ttl_seconds=60.0), CountingLoader()
    await cache.get("p", load)
    load.body = b'{"v":2}'
    cache.evict("p")
    assert await cache.get("p", load) == b'{"v":2}'


async def test_a_load_that_started_before_an_eviction_is_not_cached() -> None:
    cache, stale = ProductMicroCache(ttl_seconds=60.0), CountingLoader(b'{"v":"old"}')
    stale.release.clear()
    in_flight = asyncio.create_task(cache.get("p", stale))
    await asyncio.sleep(0)
    cache.evict("p")  # the PATCH committed while the old read was on the wire
    stale.release.set()
    assert await in_flight == b'{"v":"old"}'
    fresh = CountingLoader(b'{"v":"new"}')
    assert await cache.get("p", fresh) == b'{"v":"new"}'
    assert fresh.calls == 1


async def test_failures_reach_every_waiter_and_are_not_cached() -> None:
    cache, load = ProductMicroCache(ttl_seconds=60.0), CountingLoader()
    load.release.clear()
    load.error = LookupError("not found")
    readers = [asyncio.create_task(cache.get("p", load)) for _ in range(5)]
    await asyncio.sleep(0)
    load.release.set()
    results = await asyncio.gather(*readers, return_exceptions=True)
    assert all(isinstance(result, LookupError) for result in results)
    load.error = None
    assert await cache.get("p", load) == b'{"v":1}'
    assert load.calls == 2


async def test_a_cancelled_reader_does_not_cancel_the_shared_load() -> None:
    cache, load = ProductMicroCache(ttl_seconds=60.0), CountingLoader()
    load.release.clear()
    leader = asyncio.create_task(cache.get("p", load))
    follower = asyncio.create_task(cache.get("p", load))
    await asyncio.sleep(0)
    leader.cancel()
    load.release.set()
    assert await follower == b'{"v":1}'
    with pytest.raises(asyncio.CancelledError):
        await leader


async def test_size_is_bounded_by_dropping_the_oldest_entries() -> None:
    cache = ProductMicroCache(ttl_seconds=60.0, max_entries=3)
    for key in "abcde":
        await cache.get(key, CountingLoader(key.encode()))
    assert len(cache) == 3
    load = CountingLoader(b"a2")
    assert await cache.get("a", load) == b"a2"
    assert load.calls == 1


async def test_zero_ttl_disables_caching_but_keeps_single_flight() -> None:
    cache, load = ProductMicroCache(ttl_seconds=0.0), CountingLoader()
    load.release.clear()
    readers = [asyncio.create_task(cache.get("p", load)) for _ in range(10)]
    await asyncio.sleep(0)
    load.release.set()
    await asyncio.gather(*readers)
    await cache.get("p", load)
    assert load.calls == 2


async def test_past_half_the_ttl_a_read_is_served_at_once_and_refreshes_in_the_background() -> None:
    clock = FakeClock()
    cache, load = ProductMicroCache(ttl_seconds=1.0, clock=clock), CountingLoader()
    await cache.get("p", load)
    clock.now += 0.4
    assert await cache.get("p", load) == b'{"v":1}'
    assert load.calls == 1  # young: no refresh

    clock.now += 0.2
    load.body = b'{"v":2}'
    load.release.clear()  # the refresh hangs: reads must not wait for it
    assert await asyncio.wait_for(cache.get("p", load), 1) == b'{"v":1}'
    assert await asyncio.wait_for(cache.get("p", load), 1) == b'{"v":1}'
    assert load.calls == 2  # one refresh, however many reads see the entry meanwhile

    load.release.set()
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert await cache.get("p", load) == b'{"v":2}'
    clock.now += 0.9  # the refreshed entry lives a TTL from its refresh
    assert await cache.get("p", load) == b'{"v":2}'
    assert load.calls == 2


async def test_a_failed_refresh_keeps_the_entry_only_until_it_expires() -> None:
    clock = FakeClock()
    cache, load = ProductMicroCache(ttl_seconds=1.0, clock=clock), CountingLoader()
    await cache.get("p", load)
    clock.now += 0.6
    load.error = RuntimeError("upstream down")
    assert await cache.get("p", load) == b'{"v":1}'
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert await cache.get("p", load) == b'{"v":1}'
    clock.now += 0.5  # now past the TTL since the last successful load
    with pytest.raises(RuntimeError, match="upstream down"):
        await cache.get("p", load)


async def test_an_eviction_detaches_a_refresh_in_flight() -> None:
    clock = FakeClock()
    cache, before = ProductMicroCache(ttl_seconds=1.0, clock=clock), CountingLoader()
    await cache.get("p", before)
    clock.now += 0.6
    before.release.clear()
    await cache.get("p", before)  # starts a refresh that will land with the value before the change
    cache.evict("p")
    after = CountingLoader(b'{"v":2}')
    assert await cache.get("p", after) == b'{"v":2}'
    before.release.set()  # the detached refresh lands last
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert await cache.get("p", after) == b'{"v":2}'
    assert (before.calls, after.calls) == (2, 1)
