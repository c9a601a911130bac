"""The Redis client every service builds (`chassis.redis_client`): after a Redis restart no command
fails once the server answers again, and no command the caller did not call idempotent is ever
sent twice. The restart is the proxy's (the shared server is never restarted): every pooled
connection dropped, new ones refused for a moment, then accepted again by a server that knows none
of the old ones."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from chassis.redis_client import create_redis, idempotent
from chassis.testing.proxy import TcpProxy

POOL_SIZE = 12


@pytest.fixture
async def proxy(redis_url: str) -> AsyncIterator[TcpProxy]:
    async with TcpProxy.in_front_of(redis_url) as running:
        yield running


@pytest.fixture
async def client(redis_url: str, proxy: TcpProxy) -> AsyncIterator[Redis]:
    redis = create_redis(proxy.url(redis_url), timeout_seconds=2)
    try:
        yield redis
    finally:
        await redis.aclose()


async def answering(url: str, within: float = 10.0) -> None:
    """Wait until the server behind `url` answers a PING (on a client of its own)."""
    probe = create_redis(url, timeout_seconds=0.5)
    deadline = time.monotonic() + within
    try:
        while True:
            try:
                await probe.ping()
                return
            except RedisConnectionError:
                assert time.monotonic() < deadline, "the server never answered"
                await asyncio.sleep(0.05)
    finally:
        await probe.aclose()


async def warm(client: Redis, key: str, proxy: TcpProxy) -> None:
    """Open POOL_SIZE pooled connections: that many commands in flight at once."""
    await asyncio.gather(*(client.blpop([key], timeout=0.3) for _ in range(POOL_SIZE)))
    assert proxy.connections >= POOL_SIZE


@pytest.mark.parametrize("graceful", [False, True], ids=["reset", "closed"])
async def test_after_a_restart_no_command_fails_once_the_server_answers_and_none_runs_twice(
    client: Redis, proxy: TcpProxy, redis_url: str, redis_key_prefix: str, graceful: bool
) -> None:
    """INCR is not idempotent: every pooled connection the restart killed is replaced before a
    command is written to it, so 50 at once all succeed and each counts once."""
    counter = f"{redis_key_prefix}restart:{uuid.uuid4()}"
    await warm(client, counter + ":warm", proxy)

    await proxy.restart(down_for=0.5, graceful=graceful)
    await answering(proxy.url(redis_url))

    results = await asyncio.gather(
        *(client.incr(counter) for _ in range(50)), return_exceptions=True
    )
    assert [r for r in results if isinstance(r, BaseException)] == []
    assert int(await client.get(counter)) == 50


async def test_a_connection_the_server_forgot_is_pinged_after_idling_and_replaced(
    redis_url: str, proxy: TcpProxy, redis_key_prefix: str
) -> None:
    """A connection that died without a FIN or RST reaching us (a host rebooted, a NAT entry
    expired) is only found out by using it. One idle past the health-check interval is PINGed
    before its command, and replaced when the PING fails: the command itself is sent once."""
    counter = f"{redis_key_prefix}forgotten:{uuid.uuid4()}"
    client = create_redis(proxy.url(redis_url), timeout_seconds=2, health_check_seconds=0.2)
    try:
        await warm(client, counter + ":warm", proxy)
        await proxy.forget_connections()
        await asyncio.sleep(0.3)

        results = await asyncio.gather(
            *(client.incr(counter) for _ in range(POOL_SIZE)), return_exceptions=True
        )

        assert [r for r in results if isinstance(r, BaseException)] == []
        assert int(await client.get(counter)) == POOL_SIZE
    finally:
        await client.aclose()


async def test_a_connection_the_server_forgot_fails_a_command_that_is_not_idempotent(
    client: Redis, proxy: TcpProxy, redis_key_prefix: str
) -> None:
    """Used before the health check is due, a forgotten connection is found out by the command
    itself. Whether the server got it cannot be known: an INCR fails rather than risk counting
    twice, and an idempotent read runs again on a fresh connection."""
    counter = f"{redis_key_prefix}forgotten:{uuid.uuid4()}"
    await client.set(counter, 0)
    await proxy.forget_connections()
    with pytest.raises(RedisConnectionError):
        await client.incr(counter)

    await client.get(counter)  # a connection of the new generation in the pool
    await proxy.forget_connections()
    assert await idempotent(lambda: client.get(counter)) == b"0"


async def test_while_the_server_is_down_a_command_fails_at_once(
    client: Redis, proxy: TcpProxy, redis_key_prefix: str
) -> None:
    await client.ping()
    await proxy.cut()
    started = time.monotonic()
    with pytest.raises(RedisConnectionError):
        await idempotent(lambda: client.get(f"{redis_key_prefix}down"))
    assert time.monotonic() - started < 2


async def test_an_idempotent_command_whose_connection_breaks_under_it_runs_once_more(
    client: Redis, proxy: TcpProxy, redis_key_prefix: str
) -> None:
    """The connection breaks while the command waits for its reply: plain, the caller hears of
    it; through `idempotent`, the command runs again on a fresh connection."""
    key = f"{redis_key_prefix}blocked:{uuid.uuid4()}"
    await client.ping()

    plain = asyncio.create_task(client.blpop([key], timeout=1))
    await asyncio.sleep(0.2)
    await proxy.restart()
    with pytest.raises(RedisConnectionError):
        await plain

    retried = asyncio.create_task(idempotent(lambda: client.blpop([key], timeout=1)))
    await asyncio.sleep(0.2)
    await proxy.restart()
    await asyncio.sleep(0.2)
    await client.rpush(key, "after the restart")
    assert await retried == (key.encode(), b"after the restart")


async def test_a_script_the_server_does_not_know_is_loaded_and_run_in_the_same_call(
    client: Redis, redis_key_prefix: str
) -> None:
    """After a Redis restart the script cache is empty (EVALSHA answers NOSCRIPT). The shared
    server's cache is not flushed here: a script no one ever loaded meets the same answer."""
    marker = uuid.uuid4().hex
    script = client.register_script(f"-- {marker}\nreturn redis.call('INCR', KEYS[1])")
    key = f"{redis_key_prefix}script:{marker}"
    assert not (await client.script_exists(script.sha))[0]
    assert await script(keys=[key]) == 1
    assert await script(keys=[key]) == 2


async def test_more_concurrent_commands_than_connections_wait_for_one_instead_of_failing(
    redis_url: str, redis_key_prefix: str
) -> None:
    client = create_redis(redis_url, timeout_seconds=5, max_connections=4)
    try:
        key = f"{redis_key_prefix}pool-bound"
        replies = await asyncio.gather(*(client.incr(key) for _ in range(200)))

        assert sorted(replies) == list(range(1, 201))
        assert len(client.connection_pool._in_use_connections) == 0
    finally:
        await client.aclose()
