"""What `/readyz` makes of an upstream with several replicas: real gRPC servers on sockets, one
serving and one that accepts a health Check but does not answer it in time (a replica just
restarted on a saturated machine)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

from api_gateway.config import GatewaySettings
from api_gateway.upstreams import Upstreams
from chassis.grpc_server import ACCEPTING_SERVICE
from chassis.testing.process import free_port

DEADLINE = 1.0


class Unanswering(health_aio.HealthServicer):
    """A replica that accepts calls (its `accepting` health, which the channel watches, is
    SERVING) but answers no Check within the readiness deadline."""

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> health_pb2.HealthCheckResponse:
        await asyncio.sleep(DEADLINE * 10)
        return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)


async def _server(servicer: health_aio.HealthServicer) -> tuple[grpc.aio.Server, str]:
    await servicer.set(ACCEPTING_SERVICE, health_pb2.HealthCheckResponse.SERVING)
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    address = f"127.0.0.1:{free_port()}"
    server.add_insecure_port(address)
    await server.start()
    return server, address


def _upstreams(user_address: str) -> Upstreams:
    settings = GatewaySettings(
        USER_SERVICE_ADDR=user_address,
        PRODUCT_SERVICE_ADDR="",
        CART_SERVICE_ADDR="",
        ORDER_SERVICE_ADDR="",
    )
    return Upstreams.from_settings(settings)


@pytest.fixture
async def replicas() -> AsyncIterator[tuple[str, str]]:
    """The address of a serving replica and of one that does not answer."""
    serving = health_aio.HealthServicer()
    await serving.set("", health_pb2.HealthCheckResponse.SERVING)
    good, good_address = await _server(serving)
    slow, slow_address = await _server(Unanswering())
    try:
        yield good_address, slow_address
    finally:
        await asyncio.gather(good.stop(0), slow.stop(0))


async def test_an_upstream_is_ready_while_one_replica_serves_and_its_sibling_is_slow(
    replicas: tuple[str, str],
) -> None:
    good, slow = replicas
    upstreams = _upstreams(f"{slow},{good}")
    try:
        # The channel connects on its first call (and may send both Checks to whichever replica
        # is connected first): once it has both, every probe is ready, whichever replica
        # round_robin picks first. Checked one after the other, every second probe began with
        # the slow replica and spent the deadline there.
        await upstreams.not_serving(DEADLINE)
        for probe in range(6):
            assert await upstreams.not_serving(DEADLINE) == [], f"probe {probe}"

    finally:
        await upstreams.close()


async def test_an_upstream_whose_every_replica_is_slow_is_not_ready(
    replicas: tuple[str, str],
) -> None:
    _, slow = replicas
    upstreams = _upstreams(f"{slow},{slow}")
    try:
        assert await upstreams.not_serving(DEADLINE) == ["service-user"]
    finally:
        await upstreams.close()
