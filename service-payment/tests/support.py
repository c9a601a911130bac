"""Helpers of the payment specs: waiting for a condition or for SERVING, the simulated provider
as a real process, reading RPC errors and Prometheus samples."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY

from chassis.testing.process import ServiceProcess

PROVIDER_COMMAND = str(Path(sys.executable).with_name("payment-provider"))
SERVICE_COMMAND = str(Path(sys.executable).with_name("service-payment"))


async def eventually(
    condition: Callable[[], Awaitable[bool]], *, within: float = 20.0, every: float = 0.05
) -> None:
    """Wait until `condition` holds (a bound on waiting, not a timing assertion)."""
    async with asyncio.timeout(within):
        while True:
            if await condition():
                return
            await asyncio.sleep(every)


async def wait_serving(address: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    async with grpc.aio.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while True:
            with contextlib.suppress(grpc.aio.AioRpcError):
                reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{address} is not SERVING after {timeout_s} s")
            await asyncio.sleep(0.1)


async def rpc_error(call: Awaitable[object]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


def sample(name: str, **labels: str) -> float:
    """A Prometheus sample of this process (0 when never recorded)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


def provider_process(env: dict[str, Any], name: str = "payment-provider") -> ServiceProcess:
    values = {"LOG_FORMAT": "json", "PAYMENT_PROVIDER_HOST": "127.0.0.1", **env}
    return ServiceProcess([PROVIDER_COMMAND], env={k: str(v) for k, v in values.items()}, name=name)


async def wait_ready(process: ServiceProcess, url: str, timeout_s: float = 30.0) -> None:
    """Until the provider's /readyz answers 200 (raises with its log tail if it dies)."""
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(base_url=url, timeout=1) as client:
        while True:
            if process.returncode is not None:
                raise RuntimeError(f"the provider exited:\n{process.output_tail()}")
            with contextlib.suppress(httpx.TransportError):
                if (await client.get("/readyz")).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"the provider is not ready:\n{process.output_tail()}")
            await asyncio.sleep(0.1)
