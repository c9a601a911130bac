"""LoginThrottle and ClientRateLimit against real Redis: counting per email and client, growing
delays for an email attacked from many clients, window expiry, isolation by key prefix."""

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from chassis.errors import ResourceExhausted, Unavailable
from chassis.redis_client import create_redis
from user_service.throttle import ClientRateLimit, LoginThrottle

CLIENT = "198.51.100.7"


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = create_redis(redis_url, timeout_seconds=1.0)
    try:
        yield client
    finally:
        await client.aclose()


def throttle(redis: Redis, prefix: str, *, window_seconds: int = 900) -> LoginThrottle:
    return LoginThrottle(
        redis,
        key_prefix=prefix,
        max_failures=3,
        window_seconds=window_seconds,
        delay_after_failures=4,
        max_delay_seconds=1.0,
        timeout_seconds=1,
    )


async def fail(limiter: LoginThrottle, email: str, client: str = CLIENT) -> None:
    await limiter.begin_attempt(email, client)
    await limiter.attempt_failed(email, client)


async def test_throttle_lifts_once_the_window_has_passed(
    redis: Redis, redis_key_prefix: str
) -> None:
    limiter = throttle(redis, redis_key_prefix, window_seconds=1)
    email = f"{uuid.uuid4().hex}@example.com"
    for _ in range(3):
        await fail(limiter, email)
    with pytest.raises(ResourceExhausted) as refused:
        await limiter.begin_attempt(email, CLIENT)
    retry_after = refused.value.retry_after_seconds
    assert retry_after is not None
    assert 0 < retry_after <= 1
    # Waiting as long as the refusal said is enough.
    await asyncio.sleep(retry_after + 0.05)
    await limiter.begin_attempt(email, CLIENT)


async def test_a_refused_client_is_told_the_time_left_until_its_window_ends_which_never_grows(
    redis: Redis, redis_key_prefix: str
) -> None:
    limiter = throttle(redis, redis_key_prefix, window_seconds=900)
    email = f"{uuid.uuid4().hex}@example.com"
    for _ in range(3):
        await fail(limiter, email)
    delays = []
    for _ in range(3):
        with pytest.raises(ResourceExhausted) as refused:
            await limiter.begin_attempt(email, CLIENT)
        delays.append(refused.value.retry_after_seconds)
    assert all(delay is not None and 890 < delay <= 900 for delay in delays), delays
    # Trying again while refused does not push the moment back.
    assert delays == sorted(delays, reverse=True)


async def test_parallel_attempts_cannot_overtake_the_limit(
    redis: Redis, redis_key_prefix: str
) -> None:
    limiter = throttle(redis, redis_key_prefix)
    email = f"{uuid.uuid4().hex}@example.com"
    results = await asyncio.gather(
        *(limiter.begin_attempt(email, CLIENT) for _ in range(10)), return_exceptions=True
    )
    assert sum(result == 0.0 for result in results) == 3
    assert sum(isinstance(result, ResourceExhausted) for result in results) == 7


async def test_success_clears_the_counter(redis: Redis, redis_key_prefix: str) -> None:
    limiter = throttle(redis, redis_key_prefix)
    email = f"{uuid.uuid4().hex}@example.com"
    for _ in range(2):
        await fail(limiter, email)
    await limiter.begin_attempt(email, CLIENT)
    await limiter.attempt_succeeded(email, CLIENT)
    for _ in range(3):
        await fail(limiter, email)
    with pytest.raises(ResourceExhausted):
        await limiter.begin_attempt(email, CLIENT)


async def test_failure_counter_expires_and_does_not_hold_the_address_in_clear(
    redis: Redis, redis_key_prefix: str
) -> None:
    limiter = throttle(redis, f"{redis_key_prefix}clear:")
    email = f"{uuid.uuid4().hex}@example.com"
    await fail(limiter, email)
    keys = [key.decode() async for key in redis.scan_iter(match=f"{redis_key_prefix}clear:*")]
    assert len(keys) == 2  # this client's failures for the email, and the email's from all
    for key in keys:
        assert email not in key
        assert CLIENT not in key
        assert 0 < await redis.ttl(key) <= 900


async def test_counters_of_different_prefixes_do_not_mix(
    redis: Redis, redis_key_prefix: str
) -> None:
    email = f"{uuid.uuid4().hex}@example.com"
    first = throttle(redis, f"{redis_key_prefix}a:")
    second = throttle(redis, f"{redis_key_prefix}b:")
    for _ in range(3):
        await fail(first, email)
    with pytest.raises(ResourceExhausted):
        await first.begin_attempt(email, CLIENT)
    await second.begin_attempt(email, CLIENT)


async def test_a_client_throttled_for_an_email_leaves_the_owner_on_another_client_alone(
    redis: Redis, redis_key_prefix: str
) -> None:
    limiter = throttle(redis, redis_key_prefix)
    email = f"{uuid.uuid4().hex}@example.com"
    for _ in range(3):
        await fail(limiter, email, "attacker")
    with pytest.raises(ResourceExhausted):
        await limiter.begin_attempt(email, "attacker")
    assert await limiter.begin_attempt(email, "owner") == 0.0


async def test_an_email_attacked_from_many_clients_gets_growing_delays_never_a_lock(
    redis: Redis, redis_key_prefix: str
) -> None:
    limiter = throttle(redis, redis_key_prefix)  # delays from 4 failures on, at most 1 s
    email = f"{uuid.uuid4().hex}@example.com"
    delays = []
    for attacker in range(6):
        for _ in range(3):
            await fail(limiter, email, f"attacker-{attacker}")
        delays.append(await limiter.begin_attempt(email, f"owner-{attacker}"))
        await limiter.attempt_succeeded(email, f"owner-{attacker}")
    # 3, 6, 9, ... failures: none below the threshold, then 0.1 s doubling per failure, capped.
    assert delays == [0.0, 0.4, 1.0, 1.0, 1.0, 1.0]
    assert [limiter.delay_for(n) for n in range(3, 9)] == [0.0, 0.1, 0.2, 0.4, 0.8, 1.0]


def rate_limit(redis: Redis, prefix: str, *, fail_open: bool = False) -> ClientRateLimit:
    return ClientRateLimit(
        redis,
        key_prefix=prefix,
        action="login",
        limit=2,
        window_seconds=60,
        timeout_seconds=1,
        fail_open=fail_open,
    )


async def test_a_client_gets_its_quota_of_requests_per_window_and_others_theirs(
    redis: Redis, redis_key_prefix: str
) -> None:
    limit = rate_limit(redis, redis_key_prefix)
    client = f"client-{uuid.uuid4().hex}"
    await limit.take(client)
    await limit.take(client)
    with pytest.raises(ResourceExhausted, match="too many login requests from this client") as over:
        await limit.take(client)
    # Told when the fixed window ends (60 s from the first request).
    retry_after = over.value.retry_after_seconds
    assert retry_after is not None
    assert 50 < retry_after <= 60
    await limit.take(f"other-{uuid.uuid4().hex}")


async def test_without_redis_the_rate_limit_fails_open_only_when_told(
    redis_key_prefix: str,
) -> None:
    dead = create_redis("redis://127.0.0.1:1/0", timeout_seconds=0.3)
    try:
        await rate_limit(dead, redis_key_prefix, fail_open=True).take("anyone")
        with pytest.raises(Unavailable):
            await rate_limit(dead, redis_key_prefix).take("anyone")
    finally:
        await dead.aclose()
