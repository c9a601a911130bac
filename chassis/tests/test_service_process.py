"""ServiceProcess never leaves a service behind: not even when its test runner is killed."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from chassis.testing.process import ServiceProcess

# A stand-in for a pytest run: starts a "service" and waits to be killed by a CI timeout.
RUNNER = """
import sys, time
from chassis.testing.process import ServiceProcess
service = ServiceProcess([sys.executable, "-c", "import time; time.sleep(300)"]).start()
print(service.pid, flush=True)
time.sleep(300)
"""


def _is_running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            state = stat.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"  # a zombie is dead, it only waits for its new parent to reap it


async def _gone(pid: int, within: float) -> None:
    async with asyncio.timeout(within):
        while True:
            if not _is_running(pid):
                return
            await asyncio.sleep(0.05)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux")
async def test_a_service_dies_with_the_test_runner_that_started_it(tmp_path: Path) -> None:
    script = tmp_path / "runner.py"
    script.write_text(RUNNER)
    runner = await asyncio.create_subprocess_exec(
        sys.executable, str(script), stdout=asyncio.subprocess.PIPE
    )
    assert runner.stdout is not None
    service_pid = int(await asyncio.wait_for(runner.stdout.readline(), 30))
    try:
        assert _is_running(service_pid)
        runner.kill()  # no teardown, no atexit: what a CI timeout does
        await runner.wait()
        await _gone(service_pid, within=20)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(service_pid, signal.SIGKILL)


def _children_of_this_runner() -> set[int]:
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        if int(fields[1]) == os.getpid() and fields[0] != "Z":
            found.add(int(entry))
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
async def test_a_block_over_a_started_process_runs_exactly_one_and_stops_it() -> None:
    from chassis.testing.process import ServiceProcess

    before = _children_of_this_runner()
    with ServiceProcess([sys.executable, "-c", "import time; time.sleep(300)"]).start() as service:
        assert _children_of_this_runner() - before == {service.pid}
        with pytest.raises(RuntimeError, match="already started"):
            service.start()
    await _gone(service.pid, within=20)
    assert _children_of_this_runner() - before == set()


@pytest.mark.slow
async def test_processes_start_while_the_test_process_has_grpc_calls_in_flight() -> None:
    # grpc/grpc#43055: with gRPC's fork support on, a child forked while channels are busy could
    # abort before exec (about one start in seven here); the plugin turns fork support off.
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    stub = health_pb2_grpc.HealthStub(channel)

    async def keep_calling() -> None:
        while True:
            await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)

    callers = [asyncio.create_task(keep_calling()) for _ in range(4)]
    codes = []
    try:
        for _ in range(40):
            started = ServiceProcess([sys.executable, "-c", "pass"]).start()
            codes.append(await asyncio.to_thread(started.wait, 30))
    finally:
        for caller in callers:
            caller.cancel()
        await asyncio.gather(*callers, return_exceptions=True)
        await channel.close()
        await server.stop(None)

    assert codes == [0] * 40
