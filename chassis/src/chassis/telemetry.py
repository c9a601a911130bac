"""OpenTelemetry tracing for a service: tracer provider, sampler, OTLP exporter (only when an
endpoint is configured), asyncpg and redis instrumentation, gRPC client and server interceptors."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from importlib import metadata

import grpc
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.instrumentation.grpc import aio_client_interceptors, aio_server_interceptor
from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, SpanKind, TraceState
from opentelemetry.util.types import Attributes

from chassis.settings import TracesSampler

_provider: TracerProvider | None = None


class EntryPointSampler(Sampler):
    """Decides for traces that start in this process: only where work enters it (a request
    served, a message published or processed), by `root`. A database, Redis or gRPC call made
    with no trace around it (the saga sweeper, the relay's polling, readiness checks) starts
    none: otherwise each would be a one-span trace every few seconds, burying the real ones."""

    def __init__(self, root: Sampler) -> None:
        self._root = root

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        if kind is SpanKind.CLIENT:
            return SamplingResult(Decision.DROP)
        return self._root.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        return f"EntryPointSampler{{{self._root.get_description()}}}"


def sampler(name: TracesSampler = "parentbased_traceidratio", ratio: float = 1.0) -> Sampler:
    """The sampler of OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG: a child follows its
    parent's decision; a root is an entry point (above), kept with probability `ratio`."""
    roots = {
        "parentbased_traceidratio": TraceIdRatioBased(ratio),
        "parentbased_always_on": ALWAYS_ON,
        "parentbased_always_off": ALWAYS_OFF,
    }
    return ParentBased(EntryPointSampler(roots[name]))


def _resource(service: str) -> Resource:
    attributes = {SERVICE_NAME: service}
    with contextlib.suppress(metadata.PackageNotFoundError):
        attributes[SERVICE_VERSION] = metadata.version(service)  # the distribution's version
    return Resource.create(attributes)


def configure_tracing(
    service: str,
    endpoint: str | None,
    *,
    traces_sampler: TracesSampler = "parentbased_traceidratio",
    ratio: float = 1.0,
) -> None:
    """Install the SDK tracer provider once per process. Spans are recorded and exported over
    OTLP gRPC only when `endpoint` is set, sampled by `sampler(traces_sampler, ratio)`. Without
    one, tracing is off but context still flows: spans are created unsampled (no attributes, no
    export, a fraction of the cost), so log lines keep trace ids that match across services, and
    the driver instrumentation is not installed."""
    global _provider
    if _provider is not None:
        return
    resource = _resource(service)
    if not endpoint:
        _provider = TracerProvider(resource=resource, sampler=ALWAYS_OFF)
        trace.set_tracer_provider(_provider)
        return
    # Imported here: the exporter pulls in its own gRPC channel machinery, and the driver
    # instrumentations their drivers (redis alone is about a third of a second of every start,
    # in services that never use it), all useless when tracing is off.
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    provider = TracerProvider(resource=resource, sampler=sampler(traces_sampler, ratio))
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
    interceptor: grpc.aio.ServerInterceptor = aio_server_interceptor(  # type: ignore[no-untyped-call]
        filter_=_traced
    )
    return interceptor


_UNTRACED_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


def _traced(details: grpc.HandlerCallDetails) -> bool:
    # One prefix test on the method's full name. The instrumentation's own filters (health_check,
    # service_prefix, any_of, negate) split the name and test its type per call: 4% of a short
    # RPC's CPU.
    method = details.method
    if isinstance(method, bytes):
        method = method.decode()
    return not method.startswith(_UNTRACED_PREFIXES)
