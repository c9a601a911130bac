"""Outbound gRPC: the one way every service and the gateway open a channel to another service.

`create_channel` gives every call a deadline (the caller's, or the channel default), keepalive,
the tracing interceptor (client span + W3C context propagation), client RED metrics, and a retry
policy for UNAVAILABLE on the methods the caller names as idempotent reads.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import Any

import grpc
from prometheus_client import Counter, Histogram

from chassis.metrics import expose
from chassis.telemetry import grpc_client_interceptors

RPC_CLIENT_HANDLED = Counter(
    "grpc_client_handled_total",
    "RPCs this process made to another service, by final status code.",
    ["method", "code"],
    registry=None,
)
RPC_CLIENT_LATENCY = Histogram(
    "grpc_client_handling_seconds",
    "Time from starting an outbound RPC to receiving its status.",
    ["method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    registry=None,
)

KEEPALIVE_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.max_receive_message_length", 4 * 1024 * 1024),
    # A server that went away (restarted, redeployed) is dialled again at most a second apart:
    # gRPC's default backoff grows to two minutes, and every call meanwhile fails at once with
    # UNAVAILABLE although the server is long back. (The minimum, which is also how long one
    # connection attempt may take, keeps its default: a server that accepts and stays silent is
    # waited for until the call's deadline, not given up on after the backoff.)
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1_000),
]


def _retry_service_config(idempotent_methods: Sequence[str]) -> str:
    """gRPC's own retry policy (transparent, within the call's deadline) for UNAVAILABLE only:
    the one code that says the request never reached a server that acted on it."""
    names = []
    for full_name in idempotent_methods:
        service, _, method = full_name.strip("/").partition("/")
        names.append({"service": service, "method": method})
    config = {
        "methodConfig": [
            {
                "name": names,
                "retryPolicy": {
                    "maxAttempts": 3,
                    "initialBackoff": "0.05s",
                    "maxBackoff": "0.5s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    }
    return json.dumps(config)


def _method_name(details: grpc.aio.ClientCallDetails) -> str:
    method = details.method
    return method.decode() if isinstance(method, bytes) else str(method)


class _DeadlineAndMetrics(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """Fills in the default deadline when the caller gave none, and records the RED metrics."""

    def __init__(self, default_timeout: float) -> None:
        self._default_timeout = default_timeout

    async def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Any],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        if client_call_details.timeout is None:
            client_call_details = client_call_details._replace(timeout=self._default_timeout)
        method = _method_name(client_call_details)
        started = time.perf_counter()
        call = await continuation(client_call_details, request)
        try:
            code = await call.code()
        except Exception:  # the call was cancelled locally; the caller sees that itself
            code = grpc.StatusCode.CANCELLED
        RPC_CLIENT_HANDLED.labels(method, code.name).inc()
        RPC_CLIENT_LATENCY.labels(method).observe(time.perf_counter() - started)
        return call


def create_channel(
    address: str,
    *,
    default_timeout: float,
    idempotent_methods: Sequence[str] = (),
) -> grpc.aio.Channel:
    """A lazily connecting channel to `address`: nothing is dialled until the first call.

    `default_timeout` bounds every call that does not pass its own `timeout=`; methods in
    `idempotent_methods` (full names, `/pkg.Service/Method`) are retried on UNAVAILABLE within
    that deadline. Writes are never retried here: only their caller knows whether that is safe.
    """
    expose(RPC_CLIENT_HANDLED, RPC_CLIENT_LATENCY)
    options = list(KEEPALIVE_OPTIONS)
    if idempotent_methods:
        options += [
            ("grpc.enable_retries", 1),
            ("grpc.service_config", _retry_service_config(idempotent_methods)),
        ]
    else:
        options.append(("grpc.enable_retries", 0))
    interceptors: list[grpc.aio.ClientInterceptor] = [
        *grpc_client_interceptors(),
        _DeadlineAndMetrics(default_timeout),
    ]
    return grpc.aio.insecure_channel(address, options=options, interceptors=interceptors)


def full_method_names(service_descriptor: Any, *methods: str) -> list[str]:
    """`/pkg.Service/Method` for the named methods of a protobuf service descriptor."""
    return [f"/{service_descriptor.full_name}/{method}" for method in methods]
