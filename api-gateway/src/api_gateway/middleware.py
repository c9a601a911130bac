"""Pure ASGI middleware on every request: request id, body size limit, RED metrics per
route template and one access-log line. Pure ASGI (not BaseHTTPMiddleware) keeps the hot
path cheap: no extra task, no body re-buffering.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import time

import structlog
from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api_gateway.errors import problem_response
from chassis.logging import write_access_line
from chassis.metrics import HTTP_LATENCY, HTTP_REQUESTS, expose, labelled

ACCESS_LOGGER = logging.getLogger("api_gateway.access")


REQUEST_ID_HEADER = b"x-request-id"
_VALID_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:\-]{1,128}")
# Paths that match no route share one label value, so scanners cannot blow up cardinality.
UNMATCHED_ROUTE = "<unmatched>"


# A new request id: 16 random hex digits for this process, then a 16-digit counter. As unique
# as a uuid4 (32 hex digits, as before) without a call to the OS's random source per request.
_ID_PREFIX = ""
_id_counter = itertools.count()


def _new_id_source() -> None:
    global _ID_PREFIX, _id_counter
    _ID_PREFIX = os.urandom(8).hex()
    _id_counter = itertools.count(int.from_bytes(os.urandom(4)))


_new_id_source()
os.register_at_fork(after_in_child=_new_id_source)  # a forked worker is another source


def _request_id(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == REQUEST_ID_HEADER:
            if _VALID_REQUEST_ID.fullmatch(value):
                return bytes(value).decode("ascii")
            break
    return f"{_ID_PREFIX}{next(_id_counter) & 0xFFFF_FFFF_FFFF_FFFF:016x}"


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class GatewayMiddleware:
    """Outermost application middleware (FastAPI's own error handling sits outside it)."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        expose(HTTP_REQUESTS, HTTP_LATENCY)

    @property
    def _too_large(self) -> str:
        return f"request body exceeds {self.max_body_bytes} bytes"

    def _capped(self, receive: Receive) -> Receive:
        """Count body bytes as the route reads them: catches chunked and lying bodies."""
        received = 0

        async def capped_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    # FastAPI re-raises an HTTPException from body reading to the handlers.
                    raise HTTPException(413, self._too_large)
            return message

        return capped_receive

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = _request_id(scope)
        request_id_header = (REQUEST_ID_HEADER, request_id.encode("ascii"))
        status = 500
        response_started = False

        async def send_with_request_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], request_id_header]
            await send(message)

        structlog.contextvars.bind_contextvars(request_id=request_id)
        try:
            length = _content_length(scope)
            if length is not None and length > self.max_body_bytes:
                # Refused before reading a byte of it.
                response = problem_response(413, self._too_large)
                await response(scope, receive, send_with_request_id)
            else:
                await self.app(scope, self._capped(receive), send_with_request_id)
        except Exception:
            # Unhandled errors are answered by Starlette's outermost layer, outside this one, so
            # the 500 would go out without the request id the caller needs to report it. Answer
            # here; the outer layer still logs the error and sends nothing more.
            if not response_started:
                response = problem_response(500, "internal error")
                await response(scope, receive, send_with_request_id)
            raise
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            template = getattr(route, "path", None) or UNMATCHED_ROUTE
            method = scope["method"]
            # Bounded label sets: route templates (unmatched paths share one), the methods a
            # route serves and the status codes the gateway answers.
            labelled(HTTP_REQUESTS, method, template, str(status)).inc()
            labelled(HTTP_LATENCY, method, template).observe(elapsed)
            write_access_line(
                ACCESS_LOGGER,
                "http_request",
                {
                    "method": method,
                    "route": template,
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 3),
                    "request_id": request_id,
                },
            )
            structlog.contextvars.unbind_contextvars("request_id")
