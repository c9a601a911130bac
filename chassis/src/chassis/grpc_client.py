"""Outbound gRPC: the one way every service and the gateway open a channel to another service.

`create_channel` gives every call a deadline (the caller's, or the channel default), keepalive,
the tracing interceptor (client span + W3C context propagation), client RED metrics, and a retry
policy for UNAVAILABLE on the methods the caller names as idempotent reads.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from typing import Any

import grpc
from prometheus_client import Counter, Histogram

from chassis.grpc_server import ACCEPTING_SERVICE
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
    # A server that went away (restarted, redeployed) is dialled again at most 250 ms apart:
    # gRPC's default backoff grows to two minutes, and every call meanwhile fails at once with
    # UNAVAILABLE although the server is long back (at 1 s, the first checkout after a
    # restarted service-product still met the backoff in CI). (The minimum, which is also how
    # long one connection attempt may take, keeps its default: a server that accepts and stays
    # silent is waited for until the call's deadline, not given up on after the backoff.)
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 250),
]
# How long an idempotent call that found no replica ready (every connection down: the upstream
# restarting) waits for one to come back before it is tried once more, leaving the rest of its
# deadline for that attempt. A server that is really down is still a prompt UNAVAILABLE.
READY_WAIT_SECONDS = 1.0
READY_WAIT_RESERVE_SECONDS = 0.25


def service_config(idempotent_methods: Sequence[str] = ()) -> str:
    """The channel's service config.

    - `round_robin` over every address the target resolves to (each replica of the service),
      instead of gRPC's default `pick_first`, which pins every call to one replica;
    - client-side health checking: each replica's `grpc.health.v1.Health/Watch` of
      `accepting` (chassis.grpc_server.ACCEPTING_SERVICE) is followed, and a replica that is
      not SERVING (still starting, or draining on SIGTERM) is skipped at once, without waiting
      for a call to fail;
    - gRPC's own retry policy (within the call's deadline) for UNAVAILABLE only, on the methods
      named idempotent: the one code that says the request never reached a server that acted
      on it, retried on another replica.
    """
    config: dict[str, Any] = {
        "loadBalancingConfig": [{"round_robin": {}}],
        "healthCheckConfig": {"serviceName": ACCEPTING_SERVICE},
    }
    if idempotent_methods:
        names = []
        for full_name in idempotent_methods:
            service, _, method = full_name.strip("/").partition("/")
            names.append({"service": service, "method": method})
        config["methodConfig"] = [
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
    return json.dumps(config)


def channel_target(address: str) -> str:
    """The gRPC target for a service address setting.

    Any gRPC target passes as it is: `host:port`, `dns:///service-product:50052` (every address
    the name resolves to, re-resolved when a connection ends),
    `ipv4:127.0.0.1:50052,127.0.0.1:50062`.
    A plain comma-separated list of `ip:port` (`127.0.0.1:50052,127.0.0.1:50062`) is read as the
    `ipv4:` (or `ipv6:`) list it means, so local replicas need no scheme in their settings.
    """
    address = address.strip()
    if "," not in address or ":/" in address or address.startswith(("ipv4:", "ipv6:", "unix:")):
        return address
    parts = [part.strip() for part in address.split(",") if part.strip()]
    scheme = "ipv6" if all(part.startswith("[") for part in parts) else "ipv4"
    return f"{scheme}:{','.join(parts)}"


def _method_name(details: grpc.aio.ClientCallDetails) -> str:
    method = details.method
    return method.decode() if isinstance(method, bytes) else str(method)


class _DeadlineAndMetrics(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """Fills in the default deadline when the caller gave none, records the RED metrics, and
    gives an idempotent call that found no replica connected one more try once one is back."""

    def __init__(self, default_timeout: float, idempotent_methods: Sequence[str] = ()) -> None:
        self._default_timeout = default_timeout
        self._idempotent = frozenset(idempotent_methods)
        self.channel: grpc.aio.Channel | None = None  # set once the channel exists

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
        code = await _code(call)
        if code == grpc.StatusCode.UNAVAILABLE and method in self._idempotent:
            call, code = await self._again_once_connected(
                continuation, client_call_details, request, call, code, started
            )
        RPC_CLIENT_HANDLED.labels(method, code.name).inc()
        RPC_CLIENT_LATENCY.labels(method).observe(time.perf_counter() - started)
        return call

    async def _again_once_connected(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Any],
        details: grpc.aio.ClientCallDetails,
        request: Any,
        call: Any,
        code: grpc.StatusCode,
        started: float,
    ) -> tuple[Any, grpc.StatusCode]:
        """The upstream restarting: no connection was ready, so the call (gRPC's retries
        included) failed at once without reaching a server. Wait, within the deadline, for a
        replica to be connected and serving again, then try once more. An UNAVAILABLE that a
        connected server answered (its own store down) is not tried again here."""
        channel = self.channel
        if channel is None or channel.get_state() == grpc.ChannelConnectivity.READY:
            return call, code
        remaining = float(details.timeout) - (time.perf_counter() - started)
        wait = min(READY_WAIT_SECONDS, remaining - READY_WAIT_RESERVE_SECONDS)
        if wait <= 0:
            return call, code
        try:
            await asyncio.wait_for(channel.channel_ready(), wait)
        except TimeoutError:
            return call, code
        remaining = float(details.timeout) - (time.perf_counter() - started)
        again = await continuation(details._replace(timeout=remaining), request)
        return again, await _code(again)


async def _code(call: Any) -> grpc.StatusCode:
    try:
        return await call.code()  # type: ignore[no-any-return]
    except Exception:  # the call was cancelled locally; the caller sees that itself
        return grpc.StatusCode.CANCELLED


def create_channel(
    address: str,
    *,
    default_timeout: float,
    idempotent_methods: Sequence[str] = (),
) -> grpc.aio.Channel:
    """A lazily connecting channel to `address` (one replica or several, see `channel_target`):
    nothing is dialled until the first call, and calls are balanced `round_robin` over the
    replicas that report SERVING.

    `default_timeout` bounds every call that does not pass its own `timeout=`; methods in
    `idempotent_methods` (full names, `/pkg.Service/Method`) are retried on UNAVAILABLE within
    that deadline, and, when no replica was connected at all (the upstream restarting), tried
    once more as soon as one is, if that comes within a second and the deadline. Writes are
    never retried by policy: only their caller knows whether that is safe. (gRPC's transparent
    retry stays on: it only resends a call that never left this client, such as one that met a
    replica's GOAWAY while it drained.)
    """
    expose(RPC_CLIENT_HANDLED, RPC_CLIENT_LATENCY)
    options = [
        *KEEPALIVE_OPTIONS,
        ("grpc.enable_retries", 1),
        ("grpc.service_config", service_config(idempotent_methods)),
    ]
    deadline_and_metrics = _DeadlineAndMetrics(default_timeout, idempotent_methods)
    interceptors: list[grpc.aio.ClientInterceptor] = [
        *grpc_client_interceptors(),
        deadline_and_metrics,
    ]
    channel = grpc.aio.insecure_channel(
        channel_target(address), options=options, interceptors=interceptors
    )
    deadline_and_metrics.channel = channel
    return channel


def full_method_names(service_descriptor: Any, *methods: str) -> list[str]:
    """`/pkg.Service/Method` for the named methods of a protobuf service descriptor."""
    return [f"/{service_descriptor.full_name}/{method}" for method in methods]
