"""LoginThrottle against real Redis: counting, window expiry, and isolation by key prefix."""

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from chassis.errors import ResourceExhausted
from chassis.redis_client import create_redis
from user_service.throttle import LoginThrottle


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


async def fail(limiter: LoginThrottle, email: str) -> None:
    await limiter.begin_attempt(email)
    await limiter.attempt_failed(email)


async def test_throttle_lifts_once_the_window_has_passed(
    redis: Redis, redis_key_prefix: str
) -> None:
    limiter = throttle(redis, redis_key_prefix, window_seconds=1)
    email = f"{uuid.uuid4().hex}@example.com"
    for _ in range(3):
        await fail(limiter, email)
    with pytest.raises(ResourceExhausted):
        await limiter.begin_attempt(email)
    await asyncio.sleep(1.2)
    await limiter.begin_attempt(email)


async def test_parallel_attempts_cannot_overtake_the_limit(
    redis: Redis, redis_key_prefix: str
) -> None:
    limiter = throttle(redis, redis_key_prefix)
    email = f"{uuid.uuid4().hex}@example.com"
    results = await asyncio.gather(
        *(limiter.begin_attempt(email) for _ in range(10)), return_exceptions=True
    )
    assert sum(result is None for result in results) == 3
    assert sum(isinstance(result, ResourceExhausted) for result in results) == 7


async def test_success_clears_the_counter(redis: Redis, redis_key_prefix: str) -> None:
    limiter = throttle(redis, redis_key_prefix)
    email = f"{uuid.uuid4().hex}@example.com"
    for _ in range(2):
        await fail(limiter, email)
    await limiter.begin_attempt(email)
    await limiter.attempt_succeeded(email)
    for _ in range(3):
        await fail(limiter, email)
    with pytest.raises(ResourceExhausted):
        await limiter.begin_attempt(email)


async def test_failure_counter_expires_and_does_not_hold_the_address_in_clear(
    redis: Redis, redis_key_prefix: str
) -> None:
    limiter = throttle(redis, f"{redis_key_prefix}clear:")
    email = f"{uuid.uuid4().hex}@example.com"
    await fail(limiter, email)
    keys = [key.decode() async for key in redis.scan_iter(match=f"{redis_key_prefix}clear:*")]
    assert len(keys) == 1
    assert email not in keys[0]
    assert 0 < await redis.ttl(keys[0]) <= 900


async def test_counters_of_different_prefixes_do_not_mix(
    redis: Redis, redis_key_prefix: str
) -> None:
    email = f"{uuid.uuid4().hex}@example.com"
    first = throttle(redis, f"{redis_key_prefix}a:")
    second = throttle(redis, f"{redis_key_prefix}b:")
    for _ in range(3):
        await fail(first, email)
    with pytest.raises(ResourceExhausted):
        await first.begin_attempt(email)
    await second.begin_attempt(email)
