"""Tracing: spans reach an OTLP collector when OTEL_EXPORTER_OTLP_ENDPOINT is set, sampled as
OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG say, and an outbound call made with
grpc_client_interceptors() continues the caller's trace on the server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import grpc
import pytest
import pytest_asyncio
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import Sampler
from opentelemetry.trace import SpanKind

from chassis.telemetry import configure_tracing, grpc_client_interceptors, sampler

SLOW = "/chassis.sample.Sample/Slow"


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """A real OTLP/gRPC endpoint that keeps what it receives."""

    def __init__(self) -> None:
        self.requests: list[trace_service_pb2.ExportTraceServiceRequest] = []

    async def Export(self, request, context):
        self.requests.append(request)
        return trace_service_pb2.ExportTraceServiceResponse()

    def spans(self) -> list[tuple[str, str, str]]:
        """(service.name, span name, trace id hex) of every received span."""
        found = []
        for request in self.requests:
            for resource_spans in request.resource_spans:
                attributes = {
                    a.key: a.value.string_value for a in resource_spans.resource.attributes
                }
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        found.append((attributes["service.name"], span.name, span.trace_id.hex()))
        return found


@pytest_asyncio.fixture
async def collector() -> AsyncIterator[tuple[Collector, str]]:
    servicer = Collector()
    server = grpc.aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield servicer, f"http://127.0.0.1:{port}"
    await server.stop(None)


@pytest.mark.slow
async def test_spans_are_exported_over_otlp_when_an_endpoint_is_set(
    start_sample, collector
) -> None:
    servicer, endpoint = collector
    process, address = start_sample(
        OTEL_EXPORTER_OTLP_ENDPOINT=endpoint, OTEL_BSP_SCHEDULE_DELAY="100"
    )
    await process.wait_serving(address, timeout_s=30)
    async with grpc.aio.insecure_channel(address) as channel:
        assert await channel.unary_unary(SLOW)(b"0", timeout=5) == b"done"
    access = await asyncio.to_thread(process.wait_for_log, "rpc", 10, method=SLOW)
    process.terminate()
    assert await asyncio.to_thread(process.wait, 20) == 0
    spans = servicer.spans()
    assert ("sample-service", SLOW, access["trace_id"]) in spans
    assert not [span for span in spans if "grpc.health" in span[1]]  # probes are not traced


@pytest.mark.slow
async def test_outbound_call_with_client_interceptors_continues_the_callers_trace(
    sample_server,
) -> None:
    configure_tracing("chassis-tests", None)
    tracer = trace.get_tracer("chassis-tests")
    interceptors = grpc_client_interceptors()
    with tracer.start_as_current_span("checkout") as span:
        async with grpc.aio.insecure_channel(
            sample_server.address, interceptors=interceptors
        ) as channel:
            await channel.unary_unary(SLOW)(b"7", timeout=5)
    caller_trace = format(span.get_span_context().trace_id, "032x")
    access = await asyncio.to_thread(
        sample_server.process.wait_for_log, "rpc", 10, method=SLOW, trace_id=caller_trace
    )
    assert access["span_id"] != format(span.get_span_context().span_id, "016x")


def _recorded(sampler: Sampler, spans: Callable[[trace.Tracer], None]) -> list[str]:
    """Names of the spans `spans` makes that a provider with `sampler` records."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=sampler)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    spans(provider.get_tracer("spec"))
    return sorted(span.name for span in exporter.get_finished_spans())


def test_a_trace_starts_where_work_enters_never_at_a_call_made_outside_any_trace() -> None:
    def background_and_requests(tracer: trace.Tracer) -> None:
        with tracer.start_as_current_span("SELECT", kind=SpanKind.CLIENT):
            pass  # a sweeper's query, a readiness check: nothing around it
        with (
            tracer.start_as_current_span("/shop.Orders/Get", kind=SpanKind.SERVER),
            tracer.start_as_current_span("SELECT in the request", kind=SpanKind.CLIENT),
        ):
            pass
        with tracer.start_as_current_span("process order.created", kind=SpanKind.CONSUMER):
            pass
        with tracer.start_as_current_span("publish order.created", kind=SpanKind.PRODUCER):
            pass

    assert _recorded(sampler("parentbased_traceidratio", 1.0), background_and_requests) == [
        "/shop.Orders/Get",
        "SELECT in the request",
        "process order.created",
        "publish order.created",
    ]


def test_the_ratio_decides_for_roots_and_children_follow_their_parent() -> None:
    sampled_parent = trace.set_span_in_context(
        trace.NonRecordingSpan(
            trace.SpanContext(
                1, 2, is_remote=True, trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED)
            )
        )
    )

    def root_and_continued(tracer: trace.Tracer) -> None:
        with tracer.start_as_current_span("new request", kind=SpanKind.SERVER):
            pass
        with tracer.start_as_current_span(
            "continued request", context=sampled_parent, kind=SpanKind.SERVER
        ):
            pass

    assert _recorded(sampler("parentbased_traceidratio", 0.0), root_and_continued) == [
        "continued request"
    ]
    assert _recorded(sampler("parentbased_always_off"), root_and_continued) == ["continued request"]
    assert _recorded(sampler("parentbased_always_on"), root_and_continued) == [
        "continued request",
        "new request",
    ]


@pytest.mark.slow
async def test_with_a_sampling_ratio_of_zero_nothing_is_exported_yet_trace_ids_flow(
    start_sample, collector
) -> None:
    servicer, endpoint = collector
    process, address = start_sample(
        OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
        OTEL_BSP_SCHEDULE_DELAY="100",
        OTEL_TRACES_SAMPLER_ARG="0",
    )
    await process.wait_serving(address, timeout_s=30)
    async with grpc.aio.insecure_channel(address) as channel:
        assert await channel.unary_unary(SLOW)(b"0", timeout=5) == b"done"
    access = await asyncio.to_thread(process.wait_for_log, "rpc", 10, method=SLOW)
    process.terminate()
    assert await asyncio.to_thread(process.wait, 20) == 0  # the exporter flushed at shutdown
    assert servicer.spans() == []
    assert len(access["trace_id"]) == 32
