"""The service lifecycle: NOT_SERVING until startup hooks succeed and readiness checks pass,
back to NOT_SERVING when a check fails (while `liveness` stays SERVING), and a SIGTERM that lets
in-flight RPCs finish."""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from chassis import grpc_server
from chassis.grpc_server import ACCEPTING_SERVICE, LIVENESS_SERVICE, ServiceRuntime
from chassis.settings import ServiceSettings

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def health_status(address: str, service: str = "") -> int:
    async with grpc.aio.insecure_channel(address) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=2, wait_for_ready=True
        )
        status: int = reply.status
        return status


async def eventually_status(address: str, expected: int, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while (status := await health_status(address)) != expected:
        assert time.monotonic() < deadline, f"health stayed {status}, expected {expected}"
        await asyncio.sleep(0.1)


async def probe_exit_code(address: str, service: str = "") -> int:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "chassis.health_probe", address, service
    )
    return await asyncio.wait_for(process.wait(), 30)


@pytest.mark.slow
async def test_health_follows_the_readiness_check(start_sample, tmp_path: Path) -> None:
    ready_file = tmp_path / "ready"
    process, address = start_sample(SAMPLE_READY_FILE=str(ready_file))
    await asyncio.to_thread(process.wait_for_log, "not_serving", 20)
    assert await health_status(address) == NOT_SERVING
    assert await health_status(address, "chassis.sample.Sample") == NOT_SERVING
    assert await probe_exit_code(address) == 1

    ready_file.touch()
    await eventually_status(address, SERVING)
    assert await health_status(address, "chassis.sample.Sample") == SERVING
    assert await probe_exit_code(address, "chassis.sample.Sample") == 0

    ready_file.unlink()
    await eventually_status(address, NOT_SERVING)


@pytest.mark.slow
async def test_startup_hook_is_retried_until_postgres_is_reachable(
    start_sample, create_database, postgres_url: str, run_id: str
) -> None:
    late_url = f"{postgres_url}/t_{run_id}_late"
    process, address = start_sample(SAMPLE_POSTGRES_URL=late_url)
    first_failure = await asyncio.to_thread(process.wait_for_log, "startup_hook_failed", 20)
    assert first_failure["hook"] == "postgres"
    await asyncio.to_thread(process.wait_for_log, "startup_hook_failed", 20, attempt=2)
    assert await health_status(address) == NOT_SERVING

    assert await create_database("late") == late_url
    await eventually_status(address, SERVING)
    assert process.wait_for_log("startup_hook_done")["hook"] == "postgres"


@pytest.mark.slow
async def test_sigterm_lets_the_in_flight_rpc_finish_then_exits_zero(start_sample) -> None:
    process, address = start_sample(SHUTDOWN_GRACE_SECONDS="10")
    await process.wait_serving(address, timeout_s=30)
    async with grpc.aio.insecure_channel(address) as channel:
        in_flight = asyncio.ensure_future(
            channel.unary_unary("/chassis.sample.Sample/Slow")(b"1500", timeout=20)
        )
        await asyncio.to_thread(process.wait_for_log, "slow_started", 10)
        process.terminate()
        assert await in_flight == b"done"
    assert await asyncio.to_thread(process.wait, 20) == 0
    events = [line["event"] for line in process.logs()]
    assert events.index("stopping") < events.index("stopped")
    slow = process.wait_for_log("rpc", method="/chassis.sample.Sample/Slow")
    assert slow["code"] == "OK"


class InProcessSettings(ServiceSettings):
    service_name = "in-process"


async def test_hooks_run_in_order_background_tasks_stop_and_shutdown_is_reversed() -> None:
    journal: list[str] = []
    runtime = ServiceRuntime(
        InProcessSettings(grpc_host="127.0.0.1", grpc_port=0, shutdown_grace_seconds=1)
    )

    def record(entry: str):
        async def hook() -> None:
            journal.append(entry)

        return hook

    async def worker() -> None:
        journal.append("worker started")
        try:
            await asyncio.Event().wait()
        finally:
            journal.append("worker cancelled")

    runtime.on_startup("first", record("startup 1"))
    runtime.on_startup("second", record("startup 2"))
    runtime.background("worker", worker)
    runtime.on_shutdown("close pool", record("shutdown 1"))
    runtime.on_shutdown("close broker", record("shutdown 2"))
    serving = asyncio.create_task(runtime.run())
    await asyncio.wait_for(runtime.started.wait(), 10)
    assert runtime.bound_port > 0
    await eventually_status(f"127.0.0.1:{runtime.bound_port}", SERVING)

    runtime.stop()
    await asyncio.wait_for(serving, 10)
    assert journal == [
        "startup 1",
        "startup 2",
        "worker started",
        "worker cancelled",
        "shutdown 2",
        "shutdown 1",
    ]


async def test_liveness_stays_serving_while_a_dependency_is_down() -> None:
    runtime = ServiceRuntime(
        InProcessSettings(
            grpc_host="127.0.0.1",
            grpc_port=0,
            shutdown_grace_seconds=1,
            readiness_interval_seconds=0.1,
        )
    )

    async def database_down() -> None:
        raise ConnectionRefusedError("database unreachable")

    runtime.readiness_check("postgres", database_down)
    serving = asyncio.create_task(runtime.run())
    await asyncio.wait_for(runtime.started.wait(), 10)
    address = f"127.0.0.1:{runtime.bound_port}"
    try:
        assert await health_status(address) == NOT_SERVING  # readiness: out of the endpoints
        assert await health_status(address, LIVENESS_SERVICE) == SERVING  # liveness: no restart
        assert await probe_exit_code(address, LIVENESS_SERVICE) == 0
    finally:
        runtime.stop()
        await asyncio.wait_for(serving, 10)


async def test_a_replica_reports_its_readiness_before_it_accepts_calls() -> None:
    """Balancers send calls to a replica once `accepting` is SERVING; by then the overall
    health ("", what a gateway's /readyz asks through its balanced channel) must say what
    readiness found, not the NOT_SERVING the replica started with. Here readiness waits on a
    background task, as a consumer's does, and the readiness interval is long: the replica
    used to accept calls at once and report NOT_SERVING for the whole interval."""
    runtime = ServiceRuntime(
        InProcessSettings(
            grpc_host="127.0.0.1",
            grpc_port=0,
            shutdown_grace_seconds=1,
            readiness_interval_seconds=60,
        )
    )
    go, consuming = asyncio.Event(), asyncio.Event()

    async def consumer() -> None:
        await go.wait()
        consuming.set()
        await asyncio.Event().wait()

    async def consumer_check() -> None:
        if not consuming.is_set():
            raise ConnectionError("not consuming yet")

    runtime.background("consumer", consumer)
    runtime.readiness_check("events", consumer_check)
    serving = asyncio.create_task(runtime.run())
    try:
        for _ in range(1000):
            if runtime.bound_port:
                break
            await asyncio.sleep(0.01)
        address = f"127.0.0.1:{runtime.bound_port}"
        await asyncio.sleep(0.3)  # the startup hooks are long done: readiness holds it back
        assert await health_status(address, ACCEPTING_SERVICE) == NOT_SERVING
        go.set()
        await asyncio.wait_for(runtime.started.wait(), 10)
        assert await health_status(address, ACCEPTING_SERVICE) == SERVING
        assert await health_status(address) == SERVING
    finally:
        runtime.stop()
        await asyncio.wait_for(serving, 10)


async def test_a_stopped_runtime_gives_the_signals_back_to_its_process() -> None:
    before = signal.getsignal(signal.SIGTERM)
    runtime = ServiceRuntime(
        InProcessSettings(grpc_host="127.0.0.1", grpc_port=0, shutdown_grace_seconds=1)
    )
    serving = asyncio.create_task(runtime.run())
    await asyncio.wait_for(runtime.started.wait(), 10)
    assert signal.getsignal(signal.SIGTERM) != before  # the runtime owns SIGTERM while it serves
    runtime.stop()
    await asyncio.wait_for(serving, 10)
    assert signal.getsignal(signal.SIGTERM) == before


@pytest.mark.slow
async def test_a_taken_port_stops_the_service_with_a_clear_error(start_sample) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process, _ = start_sample(SAMPLE_GRPC_PORT=str(port))
        assert await asyncio.to_thread(process.wait, 30) == 1
    failure = process.wait_for_log("bind_failed")
    assert failure["grpc"] == f"127.0.0.1:{port}"
    assert not [line for line in process.stderr_lines if "Traceback" in line]


async def test_the_heap_is_settled_after_the_startup_hooks_and_before_calls_are_accepted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """chassis.heap.settle_heap runs once, when what the process holds for its lifetime exists
    (pools, consumers) and before balancers send it calls (replaced here by a recorder, so this
    test process's own collector is left as it is)."""
    runtime = ServiceRuntime(
        InProcessSettings(grpc_host="127.0.0.1", grpc_port=0, shutdown_grace_seconds=1)
    )
    journal: list[str] = []

    async def pool() -> None:
        journal.append("startup hook")

    def settle_heap() -> None:
        journal.append("accepting" if runtime.started.is_set() else "heap settled")

    monkeypatch.setattr(grpc_server, "settle_heap", settle_heap)
    runtime.on_startup("pool", pool)
    serving = asyncio.create_task(runtime.run())
    try:
        await asyncio.wait_for(runtime.started.wait(), 10)
        assert journal == ["startup hook", "heap settled"]
        assert await health_status(f"127.0.0.1:{runtime.bound_port}", ACCEPTING_SERVICE) == SERVING
    finally:
        runtime.stop()
        await asyncio.wait_for(serving, 10)
