"""The pytest plugin's isolation fixtures hand out names unique to this run, on the real servers."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import aio_pika
import asyncpg
import pytest
import redis.asyncio as redis

from chassis.testing.plugin import AmqpIsolation, _delete_amqp_names


async def test_create_database_gives_a_fresh_database_named_after_the_run(
    create_database, run_id: str
) -> None:
    url = await create_database("Plugin-Check")
    assert url.endswith(f"/t_{run_id}_plugin_check")
    conn = await asyncpg.connect(url, timeout=10)
    try:
        assert (
            await conn.fetchval("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == 0
        )
    finally:
        await conn.close()


async def test_redis_key_prefix_is_private_to_the_run(
    redis_url: str, redis_key_prefix: str, run_id: str
) -> None:
    assert redis_key_prefix == f"test:{run_id}:"
    client = redis.from_url(redis_url, socket_timeout=5)
    try:
        await client.set(f"{redis_key_prefix}probe", "1", ex=60)
        assert await client.get(f"{redis_key_prefix}probe") == b"1"
    finally:
        await client.aclose()


async def test_amqp_isolation_names_an_exchange_and_queues_of_the_run(
    amqp_url: str, amqp_isolation: AmqpIsolation, run_id: str
) -> None:
    assert amqp_isolation.exchange == f"test.{run_id}.events"
    queue_name = amqp_isolation.queue("plugin-check")
    assert queue_name == f"test.{run_id}.plugin-check"
    connection = await aio_pika.connect(amqp_url, timeout=10)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(
            amqp_isolation.exchange, aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue = await channel.declare_queue(queue_name, durable=True)
        await queue.bind(exchange, routing_key="probe")
        await exchange.publish(aio_pika.Message(b"hello"), routing_key="probe")
        message = await queue.get(timeout=5)
        assert message is not None
        assert message.body == b"hello"
        await message.ack()


async def test_amqp_cleanup_deletes_the_rest_when_the_broker_refuses_one_name(
    amqp_url: str, amqp_isolation: AmqpIsolation
) -> None:
    locked, plain = amqp_isolation.queue("held-elsewhere"), amqp_isolation.queue("plain")
    exchange = f"{amqp_isolation.queue_prefix}cleanup-spec"
    holder = await aio_pika.connect(amqp_url, timeout=10)
    async with holder:
        # An exclusive queue another connection still holds: the broker refuses to delete it.
        await (await holder.channel()).declare_queue(locked, exclusive=True)
        setup = await holder.channel()
        await setup.declare_queue(plain, durable=True)
        await setup.declare_exchange(exchange, aio_pika.ExchangeType.TOPIC, durable=True)

        with pytest.raises(RuntimeError, match="held-elsewhere"):
            await _delete_amqp_names(amqp_url, [locked, plain], [exchange])

        probe = await aio_pika.connect(amqp_url, timeout=10)
        async with probe:
            for declare in (
                lambda channel: channel.declare_queue(plain, passive=True),
                lambda channel: channel.get_exchange(exchange, ensure=True),
            ):
                with pytest.raises(aio_pika.exceptions.ChannelNotFoundEntity):
                    await declare(await probe.channel())


def test_an_unset_server_whose_container_cannot_start_stops_the_run_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Where a Docker engine answers but no registry does, pulling an image fails: the run stops
    with one line naming the variable to set, instead of erroring in every test."""
    from chassis.testing import plugin

    @contextlib.contextmanager
    def unpullable() -> Iterator[str]:
        raise RuntimeError("pull access denied for testcontainers/ryuk\nmore detail")
        yield "never"

    monkeypatch.delenv("SOME_SERVER_URL", raising=False)
    monkeypatch.setattr(plugin, "_docker_answers", lambda: True)
    with (
        pytest.raises(pytest.exit.Exception) as stopped,
        plugin._server_url("SOME_SERVER_URL", "proto://127.0.0.1", unpullable),
    ):
        pass
    message = str(stopped.value)
    assert "SOME_SERVER_URL is not set" in message
    assert "pull access denied" in message
    assert "\n" not in message
