"""Three replicas of service-user behind one balanced channel (as the gateway reaches them) refuse
exactly what one replica refuses: the per-client login limit and the per-email-and-client
failure throttle live in Redis, shared by every replica, so the N+1th attempt is refused whichever
replica it lands on."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from chassis.auth import client_metadata
from chassis.grpc_client import create_channel
from ecommerce.user.v1 import user_pb2, user_pb2_grpc

from .conftest import SettingsFactory

LIMITS = {"LOGIN_RATE_PER_CLIENT": 6, "LOGIN_MAX_FAILURES": 3}
REPLICAS = 3


async def outcomes(
    stub: user_pb2_grpc.UserServiceStub, email: str, password: str, client: str, attempts: int
) -> list[str]:
    """The status of each of `attempts` logins in turn, from one client address."""
    seen = []
    for _ in range(attempts):
        try:
            await stub.Login(
                user_pb2.LoginRequest(email=email, password=password),
                metadata=client_metadata(client),
                timeout=10,
            )
            seen.append("OK")
        except grpc.aio.AioRpcError as error:
            seen.append(error.code().name)
    return seen


@pytest.mark.slow
async def test_three_replicas_limit_logins_exactly_as_one_does(
    make_settings: SettingsFactory,
    start_service: Callable[..., Any],
    password: str,
) -> None:
    async with contextlib.AsyncExitStack() as stack:
        settings = make_settings(**LIMITS)
        replicas = [await stack.enter_async_context(start_service(settings)) for _ in range(3)]
        alone = replicas[0].stub
        addresses = ",".join(f"127.0.0.1:{r.runtime.bound_port}" for r in replicas)
        channel = create_channel(addresses, default_timeout=10)
        stack.push_async_callback(channel.close)
        balanced = user_pb2_grpc.UserServiceStub(channel)

        emails = [f"replicas-{uuid.uuid4().hex[:10]}@example.com" for _ in range(4)]
        for email in emails:
            await alone.Register(
                user_pb2.RegisterRequest(email=email, password=password, full_name="R"),
                timeout=10,
            )

        addresses_used = iter(range(1, 250))

        def client() -> str:
            return f"198.51.100.{next(addresses_used)}"

        # Per client: 6 logins a window, the 7th refused, on one replica as on three.
        one = await outcomes(alone, emails[0], password, client(), 9)
        three = await outcomes(balanced, emails[1], password, client(), 9)
        assert one == ["OK"] * 6 + ["RESOURCE_EXHAUSTED"] * 3
        assert three == one

        # Per email and client: after 3 failures the pair is refused, the right password too.
        async def failures_then_right(stub: user_pb2_grpc.UserServiceStub, email: str) -> list[str]:
            address = client()
            seen = await outcomes(stub, email, "wrong password!", address, 4)
            return seen + await outcomes(stub, email, password, address, 1)

        one = await failures_then_right(alone, emails[2])
        three = await failures_then_right(balanced, emails[3])
        assert one[:3] == ["UNAUTHENTICATED"] * 3
        assert one[-1] == "RESOURCE_EXHAUSTED"
        assert three == one
