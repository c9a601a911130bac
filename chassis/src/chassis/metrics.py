"""RED metrics of the gRPC server and of the HTTP processes (the gateway, the storefront), the
Prometheus HTTP endpoint serving the default registry, and `expose`, by which each component puts
its metrics on that registry when it is built."""

from __future__ import annotations

import functools
import threading
from typing import TypeVar

from prometheus_client import REGISTRY, Counter, Histogram, start_http_server
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.registry import Collector

M = TypeVar("M", bound=MetricWrapperBase)


@functools.cache
def labelled(metric: M, *values: str) -> M:
    """`metric.labels(*values)`, looked up once per label set: `labels()` takes a lock and builds
    a key on every call, a measurable part of a short request on the hot path. Only for label sets
    known to be bounded (methods, route templates, status codes)."""
    return metric.labels(*values)


RPC_HANDLED = Counter(
    "grpc_server_handled_total",
    "RPCs completed on the server, by final status code.",
    ["service", "method", "code"],
    registry=None,
)
RPC_LATENCY = Histogram(
    "grpc_server_handling_seconds",
    "Time from receiving an RPC to sending its status.",
    ["service", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    registry=None,
)

# One definition for every HTTP process: each exposes them when its middleware is built, so two
# of them built in one interpreter (the tests) share the series instead of clashing.
HTTP_REQUESTS = Counter(
    "http_requests_total",
    "HTTP requests answered, by method, route template and status.",
    ["method", "route", "status"],
    registry=None,
)
HTTP_LATENCY = Histogram(
    "http_request_duration_seconds",
    "HTTP request latency by method and route template.",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    registry=None,
)

_exposed: set[Collector] = set()
_exposing = threading.Lock()


def expose(*collectors: Collector) -> None:
    """Register `collectors` on the default registry, once however often this is called. The
    chassis' metrics are defined unregistered and exposed by the component that updates them
    (the server runtime, a client channel, the outbox relay, a consumer), so a process exports
    the metrics of what it runs and nothing else: no outbox gauge stuck at 0 in a service that
    has no outbox, no gRPC server series in the gateway."""
    with _exposing:
        for collector in collectors:
            if collector not in _exposed:
                REGISTRY.register(collector)
                _exposed.add(collector)


def start_metrics_server(port: int, addr: str = "127.0.0.1") -> None:
    """Serve /metrics on `port` in a daemon thread; port 0 means no metrics server."""
    if port:
        start_http_server(port, addr=addr)
