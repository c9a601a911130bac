"""The chassis channel factory against a real server (the sample service): every call gets a
deadline even when the caller forgets one, and is counted in the client RED metrics."""

from __future__ import annotations

import time

import grpc
import pytest
from prometheus_client import REGISTRY

from chassis.grpc_client import create_channel

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
