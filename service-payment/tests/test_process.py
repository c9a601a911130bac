"""Both commands of the distribution as real processes: `service-payment` serves, consumes,
charges through `payment-provider`, exposes its metrics and stops cleanly on SIGTERM; a malformed
setting stops either with one line naming it."""

from __future__ import annotations

import asyncio
import signal
import urllib.request
import uuid
from typing import Any

import pytest

from chassis.messaging import Broker
from chassis.settings import AmqpSettings
from chassis.testing.events import EventTap
from chassis.testing.plugin import AmqpIsolation, CreateDatabase
from chassis.testing.process import ServiceProcess, free_port
from ecommerce.events.v1 import events_pb2

from .conftest import Provider
from .support import SERVICE_COMMAND, provider_process
from .test_saga import created, reserved


def service_process(env: dict[str, Any]) -> ServiceProcess:
    values = {
        "PAYMENT_METRICS_PORT": "0",
        "GRPC_HOST": "127.0.0.1",
        "READINESS_INTERVAL_SECONDS": "0.2",
        "SHUTDOWN_GRACE_SECONDS": "1",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "",
        "POSTGRES_POOL_MAX": "3",
        **env,
    }
    return ServiceProcess(
        [SERVICE_COMMAND], env={k: str(v) for k, v in values.items()}, name="service-payment"
    )


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        return str(reply.read().decode())


@pytest.mark.slow
async def test_the_command_charges_through_the_provider_and_stops_cleanly_on_sigterm(
    provider: Provider,
    create_database: CreateDatabase,
    postgres_url: str,
    amqp_url: str,
    amqp_isolation: AmqpIsolation,
    jwks_address: str,
) -> None:
    amqp = AmqpSettings(
        amqp_url=amqp_url,
        events_exchange=f"{amqp_isolation.queue_prefix}payment-process.events",
        queue_prefix=f"{amqp_isolation.queue_prefix}payment-process.",
    )
    grpc_port, metrics_port = free_port(), free_port()
    database = (await create_database("payments_process")).rsplit("/", 1)[1]
    process = service_process(
        {
            "PAYMENT_GRPC_PORT": grpc_port,
            "PAYMENT_METRICS_PORT": metrics_port,
            "PAYMENT_DB_NAME": database,
            "PAYMENT_PROVIDER_URL": provider.url,
            "POSTGRES_URL": postgres_url,
            "AMQP_URL": amqp_url,
            "EVENTS_EXCHANGE": amqp.events_exchange,
            "QUEUE_PREFIX": amqp.queue_prefix,
            "USER_SERVICE_ADDR": jwks_address,
        }
    )
    order_id, user = str(uuid.uuid4()), str(uuid.uuid4())
    broker = Broker(
        amqp, "payment-process-tests", connection_name=f"payment-process-{uuid.uuid4()}"
    )
    await broker.connect()
    try:
        async with EventTap(amqp, [events_pb2.PaymentAuthorized]) as tap:
            with process.start():
                await process.wait_serving(f"127.0.0.1:{grpc_port}", timeout_s=60)
                await broker.publish(created(order_id, user))
                await broker.publish(reserved(order_id))
                [authorized] = await tap.wait_for(
                    events_pb2.PaymentAuthorized, correlation_id=order_id
                )
                metrics = await asyncio.to_thread(scrape, metrics_port)
                process.send_signal(signal.SIGTERM)
                code = await asyncio.to_thread(process.wait, 30)
    finally:
        await broker.close()

    assert authorized.routing_key == "payment.authorized"
    assert code == 0
    assert 'payment_provider_calls_total{operation="authorize",outcome="authorized"} 1.0' in metrics
    assert 'payments_total{state="AUTHORIZED"} 1.0' in metrics
    assert "payment_provider_call_duration_seconds_bucket" in metrics
    assert "outbox_backlog" in metrics
    moved = process.wait_for_log("payment_state_changed", order_id=order_id, state="AUTHORIZED")
    assert moved["service"] == "service-payment"
    assert "pm_card_ok" not in "\n".join(process.stdout_lines)  # no token in any log line
    assert await provider.ledger(order_id) == [("authorize", 2500)]
    process.wait_for_log("stopped")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("command", "variable", "value"),
    [
        ("service-payment", "PAYMENT_PROVIDER_TIMEOUT_SECONDS", "0"),
        ("service-payment", "PAYMENT_AUTHORIZE_DEADLINE_SECONDS", "soon"),
        ("payment-provider", "PAYMENT_PROVIDER_PORT", "x"),
        ("payment-provider", "PAYMENT_PROVIDER_SLOW_SECONDS", "-1"),
    ],
)
async def test_a_malformed_setting_stops_the_process_with_one_line_naming_it(
    command: str, variable: str, value: str
) -> None:
    if command == "service-payment":
        process = service_process({variable: value})
    else:
        process = provider_process({variable: value})
    with process.start():
        code = await asyncio.to_thread(process.wait, 30)

    assert code == 2
    [line] = process.stderr_lines
    assert line.startswith(f"{command}: configuration error: {variable}")
