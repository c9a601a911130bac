"""OpenTelemetry tracing for a service: tracer provider, OTLP exporter (only when an endpoint is
configured), asyncpg and redis instrumentation, gRPC client and server interceptors."""

from __future__ import annotations

import grpc
from opentelemetry import trace
from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
from opentelemetry.instrumentation.grpc import aio_client_interceptors, aio_server_interceptor
from opentelemetry.instrumentation.grpc.filters import any_of, health_check, negate, service_prefix
from opentelemetry.instrumentation.redis import RedisInstrumentor
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased

_provider: TracerProvider | None = None


def configure_tracing(service: str, endpoint: str | None) -> None:
    """Install the SDK tracer provider once per process. Spans are recorded and exported over
    OTLP gRPC only when `endpoint` is set. Without one, tracing is off but context still flows:
    spans are created unsampled (no attributes, no export, a fraction of the cost), so log lines
    keep trace ids that match across services, and the driver instrumentation is not installed."""
    global _provider
    if _provider is not None:
        return
    resource = Resource.create({SERVICE_NAME: service})
    if not endpoint:
        _provider = TracerProvider(resource=resource, sampler=ALWAYS_OFF)
        trace.set_tracer_provider(_provider)
        return
    # Imported here: the exporter pulls in its own gRPC channel machinery, useless when off.
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    provider = TracerProvider(resource=resource, sampler=ParentBased(ALWAYS_ON))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    trace.set_tracer_provider(provider)
    _provider = provider
    AsyncPGInstrumentor().instrument(tracer_provider=provider)  # type: ignore[no-untyped-call]
    RedisInstrumentor().instrument(tracer_provider=provider)


def shutdown_tracing() -> None:
    """Flush pending spans (bounded by the processor's own export timeout)."""
    if _provider is not None:
        _provider.shutdown()


def grpc_client_interceptors() -> list[grpc.aio.ClientInterceptor]:
    """Interceptors for outbound grpc.aio channels: a client span and W3C context propagation."""
    interceptors: list[grpc.aio.ClientInterceptor] = aio_client_interceptors()  # type: ignore[no-untyped-call]
    return interceptors


def grpc_server_interceptor() -> grpc.aio.ServerInterceptor:
    """The server span around each inbound RPC, continuing the caller's trace. Health probes and
    reflection are not traced: they would fill the trace store with noise every few seconds."""
    untraced = any_of(health_check(), service_prefix("grpc.reflection."))
    interceptor: grpc.aio.ServerInterceptor = aio_server_interceptor(  # type: ignore[no-untyped-call]
        filter_=negate(untraced)
    )
    return interceptor
