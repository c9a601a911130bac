"""The gRPC service runtime: server with tracing/observing interceptors, health and reflection,
startup hooks retried with backoff, readiness polling, and a graceful drain on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import uvloop
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_exponential

from chassis.heap import settle_heap
from chassis.logging import configure_logging, get_logger
from chassis.metrics import RPC_HANDLED, RPC_LATENCY, expose, start_metrics_server
from chassis.rpc_observer import RpcObserver
from chassis.settings import ServiceSettings
from chassis.telemetry import configure_tracing, grpc_server_interceptor, shutdown_tracing

Hook = Callable[[], Awaitable[None]]
_log = get_logger("chassis.runtime")
_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
# The health service name a liveness probe asks for (Kubernetes `grpc: {service: liveness}`):
# SERVING from start until the drain, whatever the dependencies say. "" and the servicers' names
# follow readiness instead; a liveness probe on those would restart every healthy replica during
# a database outage, which brings no database back.
LIVENESS_SERVICE = "liveness"
# The health service name the clients' balancers watch (chassis.grpc_client): SERVING once the
# startup hooks are done (migrations, pools, consumers) until the drain begins. Not readiness:
# a replica whose broker is down still answers reads and takes checkouts into its outbox, and
# every replica shares the same stores, so skipping them all would only turn that into errors.
ACCEPTING_SERVICE = "accepting"


class DrainingHealthServicer(health.aio.HealthServicer):  # type: ignore[misc]
    """The gRPC health service, whose `Watch` streams end when the drain tells them to.

    Every client's balancer keeps a `Watch` open on every replica; left open they would hold
    `server.stop(grace)` for the whole grace on every stop. The drain first sends them
    NOT_SERVING (the balancers move on), then ends them.
    """

    def __init__(self) -> None:
        super().__init__()
        self._watches_ended = asyncio.Event()

    async def Watch(self, request: Any, context: Any) -> None:
        watching = asyncio.ensure_future(super().Watch(request, context))
        ended = asyncio.ensure_future(self._watches_ended.wait())
        try:
            await asyncio.wait({watching, ended}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (watching, ended):
                task.cancel()
            await asyncio.gather(watching, ended, return_exceptions=True)

    def end_watches(self) -> None:
        self._watches_ended.set()


def server_options(settings: ServiceSettings) -> list[tuple[str, int]]:
    """Connection ageing (clients re-resolve and reach replicas added later) and a keepalive
    policy that accepts the clients' pings (chassis.grpc_client pings every 30 s, also with no
    call in flight; gRPC's default policy would answer that with GOAWAY too_many_pings)."""
    return [
        ("grpc.max_connection_age_ms", int(settings.grpc_max_connection_age_seconds * 1000)),
        (
            "grpc.max_connection_age_grace_ms",
            int(settings.grpc_max_connection_age_grace_seconds * 1000),
        ),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ]


def _log_retry(name: str) -> Callable[[RetryCallState], None]:
    def before_sleep(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        _log.warning(
            "startup_hook_failed",
            hook=name,
            attempt=state.attempt_number,
            retry_in_s=round(state.upcoming_sleep, 2),
            error=repr(error),
        )

    return before_sleep


class ServiceRuntime:
    """One gRPC service process: register servicers and hooks, then `await run()`."""

    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        self.service_name = type(settings).service_name
        configure_logging(self.service_name, settings.log_level, settings.log_format)
        configure_tracing(
            self.service_name,
            settings.otel_exporter_otlp_endpoint,
            traces_sampler=settings.otel_traces_sampler,
            ratio=settings.otel_traces_sampler_arg,
        )
        expose(RPC_HANDLED, RPC_LATENCY)
        observer = RpcObserver(self.service_name, slow_rpc_seconds=settings.slow_rpc_seconds)
        self.server: grpc.aio.Server = grpc.aio.server(
            interceptors=[grpc_server_interceptor(), observer],
            maximum_concurrent_rpcs=settings.grpc_max_concurrent_rpcs,
            options=server_options(settings),
        )
        self.health = DrainingHealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.bound_port = 0
        self._services: list[str] = []
        self._startup: list[tuple[str, Hook]] = []
        self._readiness: list[tuple[str, Hook]] = []
        self._shutdown: list[tuple[str, Hook]] = []
        self._background: list[tuple[str, Hook]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._stop = asyncio.Event()
        self._signals: list[signal.Signals] = []
        self.started = asyncio.Event()  # set once startup hooks are done

    def add_servicer(
        self,
        add_to_server: Callable[[Any, grpc.aio.Server], None],
        servicer: Any,
        service_full_name: str,
    ) -> None:
        add_to_server(servicer, self.server)
        self._services.append(service_full_name)

    def on_startup(self, name: str, fn: Hook) -> None:
        self._startup.append((name, fn))

    def readiness_check(self, name: str, fn: Hook) -> None:
        self._readiness.append((name, fn))

    def on_shutdown(self, name: str, fn: Hook) -> None:
        self._shutdown.append((name, fn))

    def background(self, name: str, fn: Hook) -> None:
        self._background.append((name, fn))

    def stop(self) -> None:
        """Begin the graceful shutdown (what SIGTERM does)."""
        self._stop.set()

    async def _set_health(self, status: Any) -> None:
        for name in ("", *self._services):
            await self.health.set(name, status)

    async def _run_startup(self) -> None:
        cap = self.settings.startup_retry_max_seconds
        for name, fn in self._startup:
            async for attempt in AsyncRetrying(
                wait=wait_exponential(multiplier=0.1, max=cap),
                retry=retry_if_exception_type(Exception),
                before_sleep=_log_retry(name),
            ):
                with attempt:
                    await fn()
            _log.info("startup_hook_done", hook=name)
        for name, fn in self._background:
            self._tasks.append(asyncio.create_task(self._supervise(name, fn), name=name))
        settle_heap()  # before any traffic: see chassis.heap
        # Readiness first, then `accepting`: a replica joins its clients' balancers already
        # reporting what its readiness says. The other way round, a caller asking for the
        # overall health ("", as a gateway's /readyz does) and balanced onto the new replica
        # read NOT_SERVING for a whole readiness interval (its consumers had not begun yet when
        # the first check ran) while the replica was already taking calls.
        serving = await self._first_readiness()
        await self.health.set(ACCEPTING_SERVICE, _SERVING)
        self.started.set()
        await self._poll_readiness(serving)

    async def _supervise(self, name: str, fn: Hook) -> None:
        """Keep a background task alive: a crash is logged and the task restarted with backoff."""
        cap = self.settings.startup_retry_max_seconds
        delay = 0.1
        while True:
            try:
                await fn()
                _log.warning("background_task_returned", task=name)
            except Exception:
                _log.exception("background_task_failed", task=name, restart_in_s=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, cap)

    async def _readiness_failure(self) -> str | None:
        timeout = self.settings.readiness_interval_seconds
        for name, fn in self._readiness:
            try:
                await asyncio.wait_for(fn(), timeout)
            except Exception as error:
                return f"{name}: {error!r}"
        return None

    async def _first_readiness(self) -> bool:
        """The readiness checks, every 0.1 s for at most one readiness interval until they pass:
        the background tasks just started (a consumer takes a moment to begin consuming)."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self.settings.readiness_interval_seconds
        while True:
            failure = await self._readiness_failure()
            if failure is None or loop.time() >= give_up:
                break
            await asyncio.sleep(0.1)
        return await self._report_readiness(failure, None)

    async def _report_readiness(self, failure: str | None, serving: bool | None) -> bool:
        """Health ("" and every servicer's name) from a readiness result, when it changed."""
        if (failure is None) is not serving:
            await self._set_health(_SERVING if failure is None else _NOT_SERVING)
            if failure is None:
                _log.info("serving", port=self.bound_port)
            else:
                _log.warning("not_serving", reason=failure)
        return failure is None

    async def _poll_readiness(self, serving: bool) -> None:
        while True:
            await asyncio.sleep(self.settings.readiness_interval_seconds)
            serving = await self._report_readiness(await self._readiness_failure(), serving)

    def _install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            # Only the main thread may own signals; in-process tests call stop() instead.
            with contextlib.suppress(RuntimeError, ValueError, NotImplementedError):
                loop.add_signal_handler(sig, self._stop.set)
                self._signals.append(sig)

    def _remove_signal_handlers(self) -> None:
        """Give the signals back, so the loop's owner (e.g. a test process) can be stopped again."""
        loop = asyncio.get_running_loop()
        while self._signals:
            loop.remove_signal_handler(self._signals.pop())

    async def run(self) -> None:
        """Serve until SIGTERM/SIGINT (or stop()), then drain and run the shutdown hooks."""
        settings = self.settings
        address = f"{settings.grpc_host}:{settings.grpc_port}"
        try:
            start_metrics_server(settings.metrics_port, settings.metrics_host)
            self.bound_port = self.server.add_insecure_port(address)
        except (OSError, RuntimeError) as error:
            # A taken port is an operator problem: one clear line and a non-zero exit, no traceback.
            _log.error(
                "bind_failed", grpc=address, metrics_port=settings.metrics_port, error=str(error)
            )
            raise SystemExit(1) from None
        reflection.enable_server_reflection(
            (*self._services, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server
        )
        await self._set_health(_NOT_SERVING)
        await self.health.set(LIVENESS_SERVICE, _SERVING)
        await self.health.set(ACCEPTING_SERVICE, _NOT_SERVING)
        await self.server.start()
        _log.info("started", host=settings.grpc_host, port=self.bound_port)
        self._install_signal_handlers()
        lifecycle = asyncio.create_task(self._run_startup(), name="startup")
        stop = asyncio.create_task(self._stop.wait())
        await asyncio.wait({lifecycle, stop}, return_when=asyncio.FIRST_COMPLETED)
        if lifecycle.done() and lifecycle.exception() is not None:
            _log.error("lifecycle_failed", exc_info=lifecycle.exception())
        await self._drain(lifecycle, stop)

    async def _drain(self, lifecycle: asyncio.Task[None], stop: asyncio.Task[bool]) -> None:
        _log.info("stopping", grace_s=self.settings.shutdown_grace_seconds)
        # NOT_SERVING first, to every balancer watching this replica; then, once they have had
        # the drain delay to move their calls elsewhere, no new RPC is accepted and the ones in
        # flight get the grace to finish.
        await self.health.enter_graceful_shutdown()
        for task in (lifecycle, stop):
            task.cancel()
        if self.started.is_set():
            await asyncio.sleep(self.settings.shutdown_drain_delay_seconds)
        self.health.end_watches()
        await self.server.stop(self.settings.shutdown_grace_seconds)
        for task in self._tasks:
            task.cancel()
        # Bounded: a task that swallows its cancellation must not keep the process alive.
        pending: set[asyncio.Task[Any]] = {lifecycle, stop, *self._tasks}
        _, stuck = await asyncio.wait(pending, timeout=self.settings.shutdown_grace_seconds or None)
        for task in stuck:
            _log.error("task_ignored_cancellation", task=task.get_name())
        for name, fn in reversed(self._shutdown):
            try:
                await asyncio.wait_for(fn(), self.settings.shutdown_grace_seconds or None)
            except Exception:
                _log.exception("shutdown_hook_failed", hook=name)
        shutdown_tracing()
        self._remove_signal_handlers()
        _log.info("stopped")


def run(main: Callable[[], Awaitable[None]]) -> None:
    """Run a service's async main under uvloop; returns (exit 0) after a graceful stop."""
    uvloop.run(main())  # type: ignore[arg-type]
