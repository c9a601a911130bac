"""The chassis channel factory against a real server (the sample service): every call gets a
deadline even when the caller forgets one, and is counted in the client RED metrics."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from prometheus_client import REGISTRY

from chassis.grpc_client import create_channel
from chassis.testing.process import free_port

SLOW = "/chassis.sample.Sample/Slow"


def handled(code: str) -> float:
    labels = {"method": SLOW, "code": code}
    return REGISTRY.get_sample_value("grpc_client_handled_total", labels) or 0.0


async def test_a_call_without_a_timeout_gets_the_channel_default_deadline(sample_server) -> None:
    channel = create_channel(sample_server.address, default_timeout=0.3)
    before = handled("DEADLINE_EXCEEDED")
    try:
        started = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await channel.unary_unary(SLOW)(b"5000")  # the server would take 5 s
    finally:
        await channel.close()
    assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 4  # the default deadline ended it, not the server
    assert handled("DEADLINE_EXCEEDED") == before + 1


async def test_a_successful_call_is_counted_with_its_code(sample_server) -> None:
    channel = create_channel(sample_server.address, default_timeout=5)
    before = handled("OK")
    try:
        assert await channel.unary_unary(SLOW)(b"1") is not None
    finally:
        await channel.close()
    assert handled("OK") == before + 1


@pytest.mark.slow  # starts the sample service twice
async def test_the_first_idempotent_call_after_the_upstream_restarted_succeeds(
    start_sample,
) -> None:
    """The upstream goes away long enough for the channel's reconnect backoff to grow, comes back
    on the same address, and the very next call succeeds: it waits, within its deadline, for the
    channel to reconnect instead of failing at once in the backoff (service-order's first
    checkout after a restarted service-product was a 503 in CI)."""
    port = free_port()
    address = f"127.0.0.1:{port}"
    first, _ = start_sample(SAMPLE_GRPC_PORT=str(port))
    await first.wait_serving(address, timeout_s=30)
    channel = create_channel(address, default_timeout=5, idempotent_methods=[SLOW])
    try:
        assert await channel.unary_unary(SLOW)(b"1") is not None
        first.stop()
        # Down: a call fails promptly (no replica to wait for), however long its deadline.
        started = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await channel.unary_unary(SLOW)(b"1")
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
        assert time.monotonic() - started < 2.5
        await asyncio.sleep(2.0)  # the channel keeps dialling, its backoff at its bound
        start_sample(SAMPLE_GRPC_PORT=str(port))
        await _listening(port)  # called at once: the channel is still in its backoff
        before = handled("OK")
        assert await channel.unary_unary(SLOW)(b"1") is not None
        assert handled("OK") == before + 1
    finally:
        await channel.close()


async def _listening(port: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            assert time.monotonic() < deadline, f"nothing listens on {port}"
            await asyncio.sleep(0.01)
        else:
            writer.close()
            return
