"""service-order as the real `service-order` command: settings, health, metrics, graceful stop."""

from __future__ import annotations

import asyncio
import signal
import sys
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import grpc
import pytest

from chassis.testing.plugin import AmqpIsolation, CreateDatabase
from chassis.testing.process import ServiceProcess, free_port
from ecommerce.order.v1 import order_pb2, order_pb2_grpc

from .conftest import AUTHORITY, PAYMENT_TOKEN, Shop

COMMAND = str(Path(sys.executable).with_name("service-order"))


def order_process(env: dict[str, Any]) -> ServiceProcess:
    values = {
        "ORDER_METRICS_PORT": "0",
        "GRPC_HOST": "127.0.0.1",
        "READINESS_INTERVAL_SECONDS": "0.2",
        "SHUTDOWN_GRACE_SECONDS": "1",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "",
        **env,
    }
    return ServiceProcess([COMMAND], env={k: str(v) for k, v in values.items()}, name="order")


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        return str(reply.read().decode())


@pytest.mark.slow
async def test_the_command_serves_checks_out_exposes_metrics_and_stops_cleanly_on_sigterm(
    shop: Shop,
    user: str,
    upstream_values: dict[str, Any],
    create_database: CreateDatabase,
    amqp_url: str,
    amqp_isolation: AmqpIsolation,
) -> None:
    await shop.filled_cart(user, 2)
    grpc_port, metrics_port = free_port(), free_port()
    database = (await create_database("orders_process")).rsplit("/", 1)[1]
    process = order_process(
        {
            **upstream_values,
            "ORDER_GRPC_PORT": grpc_port,
            "ORDER_METRICS_PORT": metrics_port,
            "ORDER_DB_NAME": database,
            "AMQP_URL": amqp_url,
            "EVENTS_EXCHANGE": f"{amqp_isolation.queue_prefix}process.events",
            "QUEUE_PREFIX": f"{amqp_isolation.queue_prefix}process.",
        }
    )
    address = f"127.0.0.1:{grpc_port}"
    with process.start():
        await process.wait_serving(address, timeout_s=60)
        async with grpc.aio.insecure_channel(address) as channel:
            order = (
                await order_pb2_grpc.OrderServiceStub(channel).Checkout(
                    order_pb2.CheckoutRequest(user_id=user, payment_token=PAYMENT_TOKEN),
                    metadata=AUTHORITY.metadata(user),
                    timeout=10,
                )
            ).order
        metrics = await asyncio.to_thread(scrape, metrics_port)
        process.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(process.wait, 30)

    assert order.status == order_pb2.ORDER_STATUS_PENDING
    assert "orders_created_total 1.0" in metrics
    assert 'orders_total{reason="none",status="CONFIRMED"} 0.0' in metrics
    assert 'saga_duration_seconds_count{outcome="timeout"} 0.0' in metrics
    assert 'saga_duration_seconds_count{outcome="payment_declined"} 0.0' in metrics
    assert 'orders_total{reason="PAYMENT_DECLINED",status="CANCELLED"} 0.0' in metrics
    assert "outbox_backlog" in metrics
    assert "orders_created{" not in metrics  # no clashing _created series of orders_total
    assert code == 0
    placed = process.wait_for_log("order_status_changed", order_id=order.id)
    assert (placed["status"], placed["service"]) == ("PENDING", "service-order")
    assert (placed["saga_version"], placed["payment_status"]) == (2, "PENDING")
    process.wait_for_log("stopped")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SAGA_TIMEOUT_SECONDS", "soon"),
        ("ORDER_RPC_TIMEOUT_SECONDS", "0"),
        ("ORDER_GRPC_PORT", "x"),
    ],
)
async def test_a_malformed_setting_stops_the_process_with_one_line_naming_it(
    variable: str, value: str
) -> None:
    process = order_process({variable: value, "ORDER_DB_NAME": f"never_{uuid.uuid4().hex}"})
    with process.start():
        code = await asyncio.to_thread(process.wait, 30)

    assert code == 2
    [line] = process.stderr_lines
    assert line.startswith(f"service-order: configuration error: {variable}")
