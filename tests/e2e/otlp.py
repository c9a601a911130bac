"""An OTLP/gRPC trace receiver inside the test process, and the spans it received as a tree.

It runs on its own thread pool, so the services' exporters are answered even while the test's
event loop is busy (starting the platform blocks it for a while).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as SpanProto

KINDS = {
    SpanProto.SPAN_KIND_INTERNAL: "INTERNAL",
    SpanProto.SPAN_KIND_SERVER: "SERVER",
    SpanProto.SPAN_KIND_CLIENT: "CLIENT",
    SpanProto.SPAN_KIND_PRODUCER: "PRODUCER",
    SpanProto.SPAN_KIND_CONSUMER: "CONSUMER",
}


def _value(value: AnyValue) -> Any:
    which = value.WhichOneof("value")
    if which == "array_value":
        return [_value(item) for item in value.array_value.values]
    return getattr(value, which) if which else None


@dataclass(frozen=True, repr=False)
class Span:
    """One received span, with its resource's attributes."""

    service: str
    name: str
    kind: str
    trace_id: str
    span_id: str
    parent_id: str
    start_ns: int
    attributes: dict[str, Any]
    resource: dict[str, Any]
    links: tuple[tuple[str, str], ...] = ()  # (trace id, span id) of each link

    def describe(self) -> str:
        shown = {
            key: value
            for key, value in self.attributes.items()
            if key.startswith(("rpc.", "db.system", "messaging.operation", "http.route"))
        }
        return f"{self.service} {self.kind} {self.name} {shown}"

    def __repr__(self) -> str:
        return f"<Span {self.describe()}>"


@dataclass
class TraceReceiver(trace_service_pb2_grpc.TraceServiceServicer):
    """Implements `opentelemetry.proto.collector.trace.v1.TraceService/Export`."""

    spans: list[Span] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        received = list(_decode(request))
        with self._lock:
            self.spans.extend(received)
        return trace_service_pb2.ExportTraceServiceResponse()

    def trace(self, trace_id: str) -> list[Span]:
        with self._lock:
            return [span for span in self.spans if span.trace_id == trace_id]

    def all(self) -> list[Span]:
        with self._lock:
            return list(self.spans)


def _decode(request: trace_service_pb2.ExportTraceServiceRequest) -> Iterator[Span]:
    for resource_spans in request.resource_spans:
        resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                yield Span(
                    service=str(resource.get("service.name", "")),
                    name=span.name,
                    kind=KINDS.get(span.kind, "UNSPECIFIED"),
                    trace_id=span.trace_id.hex(),
                    span_id=span.span_id.hex(),
                    parent_id=span.parent_span_id.hex(),
                    start_ns=span.start_time_unix_nano,
                    attributes={a.key: _value(a.value) for a in span.attributes},
                    resource=resource,
                    links=tuple((link.trace_id.hex(), link.span_id.hex()) for link in span.links),
                )


class Collector:
    """The receiver served on a free loopback port: `endpoint` is OTEL_EXPORTER_OTLP_ENDPOINT."""

    def __init__(self) -> None:
        self.receiver = TraceReceiver()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self.receiver, self._server)
        port = self._server.add_insecure_port("127.0.0.1:0")
        self.endpoint = f"http://127.0.0.1:{port}"

    def __enter__(self) -> Collector:
        self._server.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.stop(None)


def ancestry(spans: list[Span], leaf: Span) -> list[Span]:
    """`leaf` and its ancestors, root first (stops at a parent that was not received)."""
    by_id = {span.span_id: span for span in spans}
    chain = [leaf]
    while chain[-1].parent_id in by_id:
        chain.append(by_id[chain[-1].parent_id])
    return chain[::-1]


def render_tree(spans: list[Span]) -> str:
    """The trace as an indented tree (children by start time); orphans are shown as roots."""
    ids = {span.span_id for span in spans}
    children: dict[str, list[Span]] = {}
    for span in spans:
        parent = span.parent_id if span.parent_id in ids else ""
        children.setdefault(parent, []).append(span)
    lines: list[str] = []

    def walk(parent: str, depth: int) -> None:
        for span in sorted(children.get(parent, []), key=lambda s: s.start_ns):
            orphan = " (parent not received)" if depth == 0 and span.parent_id else ""
            lines.append("  " * depth + span.describe() + orphan)
            walk(span.span_id, depth + 1)

    walk("", 0)
    return "\n".join(lines)
