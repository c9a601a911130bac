"""RED metrics of the gRPC server, and the Prometheus HTTP endpoint serving the default registry."""

from __future__ import annotations

from prometheus_client import Counter, Histogram, start_http_server

RPC_HANDLED = Counter(
    "grpc_server_handled_total",
    "RPCs completed on the server, by final status code.",
    ["service", "method", "code"],
)
RPC_LATENCY = Histogram(
    "grpc_server_handling_seconds",
    "Time from receiving an RPC to sending its status.",
    ["service", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)


def start_metrics_server(port: int, addr: str = "127.0.0.1") -> None:
    """Serve /metrics on `port` in a daemon thread; port 0 means no metrics server."""
    if port:
        start_http_server(port, addr=addr)
