"""The server interceptor that gives every RPC its access-log line, RED metrics and, past the
slow-RPC threshold, a `slow_rpc` warning; and the ONE place where a DomainError becomes a gRPC
status (anything unexpected becomes INTERNAL)."""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from chassis.errors import DomainError
from chassis.logging import get_logger, write_access_line
from chassis.metrics import RPC_HANDLED, RPC_LATENCY, labelled

_log = get_logger("chassis.rpc")
_ACCESS_LOGGER = logging.getLogger("chassis.rpc")
# Probes and tooling call these constantly; logged at DEBUG so they do not bury real traffic.
_QUIET_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


class _Outcome:
    """What the wrapped call ended with, filled in by `_guard` and read by `_record`."""

    def __init__(self) -> None:
        self.code = grpc.StatusCode.OK
        self.started = time.perf_counter()


def _final_code(context: grpc.aio.ServicerContext, default: grpc.StatusCode) -> grpc.StatusCode:
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    if isinstance(code, int):
        return next((c for c in grpc.StatusCode if c.value[0] == code), default)
    return default


class RpcObserver(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Wraps each method handler; sits inside the tracing interceptor so logs carry trace ids."""

    def __init__(self, service: str, *, slow_rpc_seconds: float = 1.0) -> None:
        self._service = service
        self._slow_rpc_seconds = slow_rpc_seconds
        # method -> (the server's handler, its observed version): a method's handler is the same
        # object on every call, so it is wrapped once, not per call.
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method: str = handler_call_details.method
        known = self._wrapped.get(method)
        if known is not None and known[0] is handler:
            return known[1]
        observed = self._observed(handler, method)
        self._wrapped[method] = (handler, observed)
        return observed

    def _observed(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        for kind in ("unary_unary", "unary_stream", "stream_unary", "stream_stream"):
            inner = getattr(handler, kind)
            if inner is not None:
                if inspect.isasyncgenfunction(inner):
                    wrapped: Any = self._wrap_stream(inner, method)
                else:
                    wrapped = self._wrap_unary(inner, method)
                return handler._replace(**{kind: wrapped})
        return handler

    def _wrap_unary(self, inner: Callable[..., Awaitable[Any]], method: str) -> Any:
        async def observed(request: Any, context: grpc.aio.ServicerContext) -> Any:
            outcome = _Outcome()
            try:
                result = await inner(request, context)
                outcome.code = _final_code(context, grpc.StatusCode.OK)
                return result
            except BaseException as error:
                await self._guard(error, context, outcome, method)
                raise
            finally:
                self._record(method, context, outcome)

        return observed

    def _wrap_stream(self, inner: Callable[..., AsyncIterator[Any]], method: str) -> Any:
        async def observed(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            outcome = _Outcome()
            try:
                async for item in inner(request, context):
                    yield item
                outcome.code = _final_code(context, grpc.StatusCode.OK)
            except BaseException as error:
                await self._guard(error, context, outcome, method)
                raise
            finally:
                self._record(method, context, outcome)

        return observed

    async def _guard(
        self,
        error: BaseException,
        context: grpc.aio.ServicerContext,
        outcome: _Outcome,
        method: str,
    ) -> None:
        """Turn `error` into the status the caller sees; always ends by raising."""
        if isinstance(error, DomainError):
            outcome.code = error.code
            details = error.trailing_metadata()
            await context.abort(error.code, error.message, trailing_metadata=details)
        if isinstance(error, grpc.aio.AbortError):
            outcome.code = _final_code(context, grpc.StatusCode.UNKNOWN)
            return
        if isinstance(error, asyncio.CancelledError):
            outcome.code = grpc.StatusCode.CANCELLED
            return
        if isinstance(error, Exception):
            outcome.code = grpc.StatusCode.INTERNAL
            _log.error("rpc_failed", method=method, exc_info=error)
            await context.abort(grpc.StatusCode.INTERNAL, "internal error")

    def _record(self, method: str, context: grpc.aio.ServicerContext, outcome: _Outcome) -> None:
        elapsed = time.perf_counter() - outcome.started
        labelled(RPC_HANDLED, self._service, method, outcome.code.name).inc()
        labelled(RPC_LATENCY, self._service, method).observe(elapsed)
        fields = {
            "method": method,
            "code": outcome.code.name,
            "duration_ms": round(elapsed * 1000, 3),
            "peer": context.peer(),
        }
        if method.startswith(_QUIET_PREFIXES):
            # Health watches are long-lived streams: their duration says nothing about speed.
            _log.debug("rpc", **fields)
            return
        write_access_line(_ACCESS_LOGGER, "rpc", fields)
        if elapsed > self._slow_rpc_seconds:
            _log.warning(
                "slow_rpc",
                method=method,
                code=outcome.code.name,
                duration_ms=fields["duration_ms"],
                threshold_ms=round(self._slow_rpc_seconds * 1000, 3),
            )
