"""service-cart as a real process: entry point, settings, health, graceful stop."""

from __future__ import annotations

import signal
import sys
import uuid

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from chassis.testing.process import ServiceProcess, free_port
from ecommerce.cart.v1 import cart_pb2, cart_pb2_grpc

from .conftest import AUTHORITY, RUN_BROKER, Platform

ENTRY = [sys.executable, "-c", "from cart_service.main import main; main()"]


def cart_process(**env: str) -> tuple[ServiceProcess, str]:
    port = free_port()
    process = ServiceProcess(
        ENTRY,
        env={
            "CART_GRPC_PORT": str(port),
            "CART_METRICS_PORT": "0",
            "GRPC_HOST": "127.0.0.1",
            "READINESS_INTERVAL_SECONDS": "0.2",
            "SHUTDOWN_GRACE_SECONDS": "1",
            "OTEL_EXPORTER_OTLP_ENDPOINT": "",
            **RUN_BROKER,
            **env,
        },
        name="service-cart",
    )
    return process, f"127.0.0.1:{port}"


@pytest.mark.slow
async def test_the_process_serves_carts_on_redis_and_stops_cleanly_on_sigterm(
    platform: Platform, redis_url: str, redis_key_prefix: str, jwks_address: str
) -> None:
    process, address = cart_process(
        CART_STORE="redis",
        REDIS_URL=redis_url,
        REDIS_KEY_PREFIX=f"{redis_key_prefix}proc:",
        PRODUCT_SERVICE_ADDR=platform.product_address,
        USER_SERVICE_ADDR=jwks_address,
    )
    product = await platform.create_product(stock=5)
    user = str(uuid.uuid4())
    with process.start():
        await process.wait_serving(address)
        async with grpc.aio.insecure_channel(address) as channel:
            cart = (
                await cart_pb2_grpc.CartServiceStub(channel).AddItem(
                    cart_pb2.AddItemRequest(user_id=user, product_id=product.id, quantity=2),
                    metadata=AUTHORITY.metadata(user),
                    timeout=5,
                )
            ).cart
        process.send_signal(signal.SIGTERM)
        code = process.wait(30)

    assert [(i.product_id, i.quantity) for i in cart.items] == [(product.id, 2)]
    assert code == 0


@pytest.mark.slow
async def test_an_unreachable_couchbase_keeps_it_not_serving_and_the_log_says_where() -> None:
    process, address = cart_process(
        CART_STORE="couchbase",
        COUCHBASE_CONNSTR="couchbase://127.0.0.1:1",
        COUCHBASE_BUCKET="carts",
        COUCHBASE_CONNECT_TIMEOUT_SECONDS="0.5",
    )
    with process.start():
        failure = process.wait_for_log("startup_hook_failed", timeout=30, hook="cart_store")
        async with grpc.aio.insecure_channel(address) as channel:
            health = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=5
            )

    assert "couchbase://127.0.0.1:1" in failure["error"]
    assert "bucket 'carts'" in failure["error"]
    assert health.status == health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.mark.slow
def test_a_malformed_setting_stops_the_process_with_one_line_naming_it() -> None:
    process, _ = cart_process(CART_STORE="mongodb")
    with process.start():
        code = process.wait(30)

    assert code == 2
    assert any("CART_STORE" in line for line in process.stderr_lines)
