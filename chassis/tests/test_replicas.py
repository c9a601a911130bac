"""Replicas behind one channel (chassis.grpc_client + chassis.grpc_server), on real processes:
calls spread round_robin over every replica the target lists, a replica that is still starting
or draining is skipped, and a replica drains on SIGTERM without failing a call or waiting out
its grace for the clients' health watches."""

from __future__ import annotations

import asyncio
import signal
import time

import grpc
import pytest

from chassis.grpc_client import channel_target, create_channel
from chassis.testing.process import ServiceProcess, free_port

from .conftest import SampleFactory

SLOW = "/chassis.sample.Sample/Slow"


def served(process: ServiceProcess) -> int:
    return sum(1 for line in process.logs() if line.get("event") == "slow_started")


async def all_logged(total: int, *processes: ServiceProcess) -> None:
    """Wait (up to 5 s) until the processes' log lines of `total` calls have been read."""
    for _ in range(50):
        if sum(served(process) for process in processes) >= total:
            return
        await asyncio.sleep(0.1)


@pytest.mark.parametrize(
    ("setting", "target"),
    [
        ("127.0.0.1:50052", "127.0.0.1:50052"),
        ("dns:///service-product:50052", "dns:///service-product:50052"),
        ("127.0.0.1:50052,127.0.0.1:50062", "ipv4:127.0.0.1:50052,127.0.0.1:50062"),
        (" 127.0.0.1:1, 127.0.0.1:2 ", "ipv4:127.0.0.1:1,127.0.0.1:2"),
        ("[::1]:1,[::1]:2", "ipv6:[::1]:1,[::1]:2"),
        ("ipv4:127.0.0.1:1,127.0.0.1:2", "ipv4:127.0.0.1:1,127.0.0.1:2"),
    ],
)
def test_a_service_address_may_list_replicas(setting: str, target: str) -> None:
    assert channel_target(setting) == target


@pytest.mark.slow
async def test_calls_are_balanced_over_every_listed_replica(start_sample: SampleFactory) -> None:
    (first, a), (second, b) = start_sample(), start_sample()
    await first.wait_serving(a)
    await second.wait_serving(b)
    channel = create_channel(f"{a},{b}", default_timeout=5)
    try:
        for _ in range(40):
            await channel.unary_unary(SLOW)(b"0")
    finally:
        await channel.close()
    await all_logged(40, first, second)
    # round_robin: both take a fair share (pick_first would send all 40 to one)
    assert served(first) >= 10
    assert served(second) >= 10
    assert served(first) + served(second) == 40


@pytest.mark.slow
async def test_a_replica_still_starting_is_skipped(start_sample: SampleFactory) -> None:
    ready, a = start_sample()
    # Its startup hook cannot finish (no PostgreSQL on that port): it listens, but is not
    # accepting calls yet.
    starting, b = start_sample(SAMPLE_POSTGRES_URL=f"postgresql://127.0.0.1:{free_port()}/none")
    await ready.wait_serving(a)
    starting.wait_for_log("started")
    channel = create_channel(f"{a},{b}", default_timeout=5)
    try:
        replies = [await channel.unary_unary(SLOW)(b"0") for _ in range(20)]
    finally:
        await channel.close()
    assert replies == [b"done"] * 20
    await all_logged(20, ready, starting)
    assert served(starting) == 0
    assert served(ready) == 20


@pytest.mark.slow
async def test_a_draining_replica_fails_no_call_and_stops_before_its_grace(
    start_sample: SampleFactory,
) -> None:
    grace = "20"
    (leaving, a), (staying, b) = (
        start_sample(SHUTDOWN_GRACE_SECONDS=grace),
        start_sample(SHUTDOWN_GRACE_SECONDS=grace),
    )
    await leaving.wait_serving(a)
    await staying.wait_serving(b)
    channel = create_channel(f"{a},{b}", default_timeout=5)
    failures: list[grpc.StatusCode] = []
    done = asyncio.Event()

    async def shopper() -> int:
        calls = 0
        while not done.is_set():
            try:
                await channel.unary_unary(SLOW)(b"20")
            except grpc.aio.AioRpcError as error:
                failures.append(error.code())
            calls += 1
        return calls

    try:
        shoppers = [asyncio.create_task(shopper()) for _ in range(8)]
        await asyncio.sleep(1.0)
        assert served(leaving) > 0  # it did take calls before it was asked to go
        signalled = time.monotonic()
        leaving.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(leaving.wait, 30)
        stopped_after = time.monotonic() - signalled
        await asyncio.sleep(0.5)
        done.set()
        calls = sum(await asyncio.gather(*shoppers))
    finally:
        done.set()
        await channel.close()
    assert code == 0
    assert failures == []
    assert calls > 100
    # The clients' health watches ended with the drain: it did not wait out the 20 s grace.
    assert stopped_after < float(grace) / 2, stopped_after
