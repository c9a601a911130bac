"""The real `service-user` under a burst of logins: at most ARGON2_MAX_IN_FLIGHT hashes hold their
memory at once, a few more wait, and the rest are refused at once with UNAVAILABLE instead of
queueing past their deadlines; per-client limits on login and register."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import pytest

from chassis.auth import client_metadata
from chassis.errors import retry_delay_of
from chassis.testing.process import ServiceProcess, free_port
from ecommerce.user.v1 import user_pb2, user_pb2_grpc

# Each test starts a service-user process of its own and fills its hashing queue: the slow tier.
pytestmark = pytest.mark.slow
EXECUTABLE = shutil.which("service-user")
MIB = 1024 * 1024
HASH_MEMORY_MIB = 64  # the production default, so the memory bound is the real one
IN_FLIGHT, QUEUED = 2, 2


def memory_kib(pid: int, field: str) -> int:
    """VmRSS (now) or VmHWM (peak so far) of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise LookupError(field)


@pytest.fixture
async def burst_target(
    postgres_url: str, user_db: tuple[str, str], redis_url: str, redis_key_prefix: str
) -> AsyncIterator[tuple[ServiceProcess, user_pb2_grpc.UserServiceStub]]:
    assert EXECUTABLE, "the service-user entry point is not installed"
    port = free_port()
    env = {
        "USER_GRPC_PORT": str(port),
        "USER_METRICS_PORT": "0",
        "GRPC_HOST": "127.0.0.1",
        "POSTGRES_URL": postgres_url,
        "USER_DB_NAME": user_db[0],
        "REDIS_URL": redis_url,
        "REDIS_KEY_PREFIX": f"{redis_key_prefix}burst:",
        "ARGON2_TIME_COST": "1",
        "ARGON2_MEMORY_COST_KIB": str(HASH_MEMORY_MIB * 1024),
        "ARGON2_PARALLELISM": "1",
        "ARGON2_MAX_IN_FLIGHT": str(IN_FLIGHT),
        "ARGON2_MAX_QUEUED": str(QUEUED),
        "LOGIN_RATE_PER_CLIENT": "3",
        "REGISTER_RATE_PER_CLIENT": "2",
        "READINESS_INTERVAL_SECONDS": "0.2",
        "JWT_PRIVATE_KEY": "",
        "JWT_PRIVATE_KEY_FILE": "",
        "ADMIN_EMAIL": "",
        "ADMIN_PASSWORD": "",
    }
    async with ServiceProcess([EXECUTABLE], env=env, name="service-user") as process:
        address = f"127.0.0.1:{port}"
        await process.wait_serving(address, timeout_s=60)
        async with grpc.aio.insecure_channel(address) as channel:
            yield process, user_pb2_grpc.UserServiceStub(channel)


async def code_of(call: Callable[[], object]) -> str:
    try:
        await call()  # type: ignore[misc]
    except grpc.aio.AioRpcError as error:
        return error.code().name
    return "OK"


async def test_a_login_burst_is_refused_at_once_beyond_the_hashing_queue_with_memory_bounded(
    burst_target: tuple[ServiceProcess, user_pb2_grpc.UserServiceStub],
) -> None:
    process, stub = burst_target
    rss_before = memory_kib(process.pid, "VmRSS")

    def login(n: int) -> Callable[[], object]:
        request = user_pb2.LoginRequest(email=f"new-{uuid.uuid4().hex}@example.com", password="x")
        # Each from its own client: the per-client limit is not what refuses them here.
        return lambda: stub.Login(request, metadata=client_metadata(f"10.0.0.{n}"), timeout=30)

    codes = Counter(await asyncio.gather(*(code_of(login(n)) for n in range(30))))
    assert set(codes) <= {"UNAUTHENTICATED", "UNAVAILABLE"}, codes
    # Two hashing and two waiting are answered; most of the burst is turned away untouched.
    assert codes["UNAUTHENTICATED"] >= IN_FLIGHT + QUEUED
    assert codes["UNAVAILABLE"] >= 15, codes
    peak_growth_mib = (memory_kib(process.pid, "VmHWM") - rss_before) / 1024
    # Two hashes of 64 MiB at a time, plus slack for one more and the interpreter (unbounded, the
    # default thread pool ran six at once on two cores: 384 MiB).
    assert peak_growth_mib < (IN_FLIGHT + 1) * HASH_MEMORY_MIB, peak_growth_mib


async def test_one_client_gets_its_quota_of_logins_while_another_still_logs_in(
    burst_target: tuple[ServiceProcess, user_pb2_grpc.UserServiceStub],
) -> None:
    _, stub = burst_target

    def login(client: str) -> Callable[[], object]:
        request = user_pb2.LoginRequest(email=f"u-{uuid.uuid4().hex}@example.com", password="x")
        return lambda: stub.Login(request, metadata=client_metadata(client), timeout=30)

    codes = [await code_of(login("192.0.2.1")) for _ in range(3)]
    assert codes == ["UNAUTHENTICATED"] * 3
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await login("192.0.2.1")()  # type: ignore[misc]
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # Told when its window (CLIENT_RATE_WINDOW_SECONDS, 60) ends.
    retry_after = retry_delay_of(refused.value)
    assert retry_after is not None
    assert 0 < retry_after <= 60
    assert await code_of(login("192.0.2.2")) == "UNAUTHENTICATED"


async def test_one_client_gets_its_quota_of_registrations(
    burst_target: tuple[ServiceProcess, user_pb2_grpc.UserServiceStub],
) -> None:
    _, stub = burst_target

    def register(client: str) -> Callable[[], object]:
        request = user_pb2.RegisterRequest(
            email=f"r-{uuid.uuid4().hex}@example.com", password="long enough", full_name="R"
        )
        return lambda: stub.Register(request, metadata=client_metadata(client), timeout=30)

    codes = [await code_of(register("192.0.2.3")) for _ in range(2)]
    assert codes == ["OK", "OK"]
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await register("192.0.2.3")()  # type: ignore[misc]
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    retry_after = retry_delay_of(refused.value)
    assert retry_after is not None
    assert 0 < retry_after <= 60
    assert await code_of(register("192.0.2.4")) == "OK"
