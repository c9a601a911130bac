"""LoginThrottle against real Redis: counting window, expiry, and isolation by key prefix."""

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from chassis.errors import ResourceExhausted
from user_service.throttle import LoginThrottle, create_redis


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = create_redis(redis_url, timeout_seconds=1.0)
    try:
        yield client
    finally:
        await client.aclose()


def throttle(redis: Redis, prefix: str, *, window_seconds: int = 900) -> LoginThrottle:
    return LoginThrottle(
        redis, key_prefix=prefix, max_failures=3, window_seconds=window_seconds, timeout_seconds=1
    )


async def test_throttle_lifts_once_the_window_has_passed(
    redis: Redis, redis_key_prefix: str
) -> None:
    limiter = throttle(redis, redis_key_prefix, window_seconds=1)
    email = f"{uuid.uuid4().hex}@example.com"
    for _ in range(3):
        await limiter.ensure_allowed(email)
        await limiter.record_failure(email)
    with pytest.raises(ResourceExhausted):
        await limiter.ensure_allowed(email)
    await asyncio.sleep(1.2)
    await limiter.ensure_allowed(email)


async def test_failure_counter_expires_and_does_not_hold_the_address_in_clear(
    redis: Redis, redis_key_prefix: str
) -> None:
    limiter = throttle(redis, redis_key_prefix)
    email = f"{uuid.uuid4().hex}@example.com"
    await limiter.record_failure(email)
    keys = [key.decode() async for key in redis.scan_iter(match=f"{redis_key_prefix}*")]
    assert keys
    assert not any(email in key for key in keys)
    ttls = [await redis.ttl(key) for key in keys]
    assert all(0 < ttl <= 900 for ttl in ttls)


async def test_counters_of_different_prefixes_do_not_mix(
    redis: Redis, redis_key_prefix: str
) -> None:
    email = f"{uuid.uuid4().hex}@example.com"
    first = throttle(redis, f"{redis_key_prefix}a:")
    second = throttle(redis, f"{redis_key_prefix}b:")
    for _ in range(3):
        await first.record_failure(email)
    with pytest.raises(ResourceExhausted):
        await first.ensure_allowed(email)
    await second.ensure_allowed(email)
