"""Fixtures for the chassis tests: the sample service started as a real subprocess."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

from chassis.testing.process import ServiceProcess, free_port

SAMPLE_SERVICE = Path(__file__).with_name("sample_service.py")
SampleFactory = Callable[..., tuple[ServiceProcess, str]]


def _launch_sample(**env: str | None) -> tuple[ServiceProcess, str]:
    port = free_port()
    base = {
        "SAMPLE_GRPC_PORT": str(port),
        "GRPC_HOST": "127.0.0.1",
        "READINESS_INTERVAL_SECONDS": "0.2",
        "STARTUP_RETRY_MAX_SECONDS": "0.5",
        "LOG_LEVEL": "DEBUG",
    }
    process = ServiceProcess([sys.executable, str(SAMPLE_SERVICE)], name="sample-service")
    for name, value in {**base, **env}.items():
        # None means "unset", even when the test runner's own environment has it.
        if value is None:
            process.env.pop(name, None)
        else:
            process.env[name] = value
    return process.start(), f"127.0.0.1:{port}"


@pytest.fixture
def start_sample() -> Iterator[SampleFactory]:
    """Factory: start sample_service.py with env overrides (None unsets) -> (process, address).
    Every process it started is stopped (SIGTERM, then SIGKILL) after the test."""
    started: list[ServiceProcess] = []

    def start(**env: str | None) -> tuple[ServiceProcess, str]:
        process, address = _launch_sample(**env)
        started.append(process)
        return process, address

    yield start
    for process in started:
        process.stop()


@dataclass
class RunningSample:
    process: ServiceProcess
    address: str
    metrics_url: str


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def sample_server() -> AsyncIterator[RunningSample]:
    """One SERVING sample service (with a metrics endpoint) shared by a test module."""
    metrics_port = free_port()
    process, address = _launch_sample(METRICS_PORT=str(metrics_port))
    try:
        await process.wait_serving(address, timeout_s=30)
        yield RunningSample(process, address, f"http://127.0.0.1:{metrics_port}/metrics")
    finally:
        process.stop()
