"""What operators see of a running service: one access-log line per RPC, a warning for an RPC
slower than SLOW_RPC_SECONDS, RED metrics and runtime metrics on the metrics port, secrets
redacted in logs, trace ids on every line of a request, reflection."""

from __future__ import annotations

import asyncio
import re
import urllib.request

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from opentelemetry.sdk.trace import TracerProvider

from chassis.logging import REDACTED, add_trace_ids, redact_secrets

SAMPLE = "/chassis.sample.Sample/"
HEX32 = re.compile(r"^[0-9a-f]{32}$")
HEX16 = re.compile(r"^[0-9a-f]{16}$")


async def call(address: str, method: str, request: bytes = b"") -> bytes:
    async with grpc.aio.insecure_channel(address) as channel:
        reply: bytes = await channel.unary_unary(SAMPLE + method)(request, timeout=5)
        return reply


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        body: bytes = response.read()
        return body.decode()


async def test_every_rpc_gets_one_access_log_line(sample_server) -> None:
    await call(sample_server.address, "Slow", b"1")
    line = sample_server.process.wait_for_log("rpc", method=SAMPLE + "Slow")
    assert line["code"] == "OK"
    assert line["level"] == "info"
    assert line["service"] == "sample-service"
    assert isinstance(line["duration_ms"], float)
    assert line["peer"].startswith("ipv4:127.0.0.1:")
    assert HEX32.match(line["trace_id"])
    assert HEX16.match(line["span_id"])


@pytest.mark.slow
async def test_an_rpc_slower_than_the_threshold_logs_a_slow_rpc_warning(start_sample) -> None:
    process, address = start_sample(SLOW_RPC_SECONDS="0.25")
    await process.wait_serving(address, timeout_s=30)
    await call(address, "Slow", b"0")
    # 600 ms, checked against 500: asyncio may wake a timer up to its clock's resolution early.
    await call(address, "Slow", b"600")
    slow = await asyncio.to_thread(process.wait_for_log, "slow_rpc", 10)
    access = process.wait_for_log("rpc", method=SAMPLE + "Slow", trace_id=slow["trace_id"])
    assert slow["level"] == "warning"
    assert (slow["method"], slow["code"]) == (SAMPLE + "Slow", "OK")
    assert slow["duration_ms"] == access["duration_ms"] >= 500
    assert slow["threshold_ms"] == 250
    # The quick call came first and was logged first: it got no warning.
    assert [line["event"] for line in process.logs()].count("slow_rpc") == 1


async def test_rpcs_are_counted_by_method_and_code(sample_server) -> None:
    with pytest.raises(grpc.aio.AioRpcError):
        await call(sample_server.address, "Reject")
    await call(sample_server.address, "Slow", b"0")
    metrics = await asyncio.to_thread(scrape, sample_server.metrics_url)
    assert (
        'grpc_server_handled_total{code="INVALID_ARGUMENT",method="/chassis.sample.Sample/Reject",'
        'service="sample-service"} 1.0'
    ) in metrics
    assert re.search(
        r'grpc_server_handling_seconds_count\{method="/chassis.sample.Sample/Slow",'
        r'service="sample-service"\} [1-9]',
        metrics,
    )


async def test_secrets_are_redacted_and_the_line_carries_the_trace(sample_server) -> None:
    await call(sample_server.address, "Whisper", b"s3cr3t-value")
    line = sample_server.process.wait_for_log("whispered")
    assert line["password"] == REDACTED
    assert line["profile"] == {"jwt": REDACTED}
    assert "s3cr3t-value" not in "\n".join(sample_server.process.stdout_lines)
    access = sample_server.process.wait_for_log("rpc", method=SAMPLE + "Whisper")
    assert line["trace_id"] == access["trace_id"]
    assert HEX32.match(line["trace_id"])


async def test_reflection_lists_the_registered_services_and_health(sample_server) -> None:
    async with grpc.aio.insecure_channel(sample_server.address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        responses = stub.ServerReflectionInfo(iter([request]), timeout=5)
        names = {
            service.name
            async for response in responses
            for service in response.list_services_response.service
        }
    assert {"chassis.sample.Sample", "grpc.health.v1.Health"} <= names


async def test_the_metrics_port_serves_the_python_runtime_metrics(sample_server) -> None:
    metrics = await asyncio.to_thread(scrape, sample_server.metrics_url)
    for name in ("process_resident_memory_bytes", "process_cpu_seconds_total", "python_info"):
        assert re.search(rf"^{name}(\{{.*\}})? ", metrics, flags=re.MULTILINE), name
    assert 'python_gc_collections_total{generation="0"}' in metrics


def test_redaction_reaches_nested_keys_lists_and_card_numbers() -> None:
    event = {
        "event": "login",
        "Authorization": "Bearer abc",
        "body": {"user": {"password": "pw", "email": "a@b.c"}, "items": [{"access_token": "t"}]},
        "note": "paid with 4111 1111 1111 1111 today",
        "order_id": "1234567890123",
        "trace_id": "a8fc0cdfae5c4111111111111111c669",
    }
    redacted = redact_secrets(None, "info", event)
    assert redacted["Authorization"] == REDACTED
    assert redacted["body"]["user"] == {"password": REDACTED, "email": "a@b.c"}
    assert redacted["body"]["items"] == [{"access_token": REDACTED}]
    assert redacted["note"] == f"paid with {REDACTED} today"
    assert redacted["order_id"] == "1234567890123"  # not a valid card number (Luhn)
    assert redacted["trace_id"] == "a8fc0cdfae5c4111111111111111c669"  # digits inside a hex id


def test_trace_ids_come_from_the_current_span() -> None:
    tracer = TracerProvider().get_tracer("test")
    assert "trace_id" not in add_trace_ids(None, "info", {"event": "outside"})
    with tracer.start_as_current_span("work") as span:
        event = add_trace_ids(None, "info", {"event": "inside"})
    assert event["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert event["span_id"] == format(span.get_span_context().span_id, "016x")
