"""Pure ASGI middleware on every request: a request id, the security headers of every answer
(Content-Security-Policy with the shop's own origin only), a body size limit, RED metrics per
route template and one access-log line."""

from __future__ import annotations

import logging
import re
import time
import uuid

import structlog
from fastapi import HTTPException
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chassis.logging import write_access_line
from chassis.metrics import HTTP_LATENCY, HTTP_REQUESTS, expose

ACCESS_LOGGER = logging.getLogger("web_storefront.access")

UNMATCHED_ROUTE = "<unmatched>"

# No inline script or style, nothing from another origin; forms post to the shop only and no
# other site may frame it.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "object-src 'none'"
)
SECURITY_HEADERS = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=(), payment=()"),
)
REQUEST_ID_HEADER = b"x-request-id"
_VALID_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:\-]{1,128}")


def _request_id(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == REQUEST_ID_HEADER and _VALID_REQUEST_ID.fullmatch(value):
            return bytes(value).decode("ascii")
    return uuid.uuid4().hex


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def request_id_of(scope: Scope) -> str:
    request_id: str = scope.get("state", {}).get("request_id", "")
    return request_id


class StorefrontMiddleware:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        expose(HTTP_REQUESTS, HTTP_LATENCY)

    def _capped(self, receive: Receive) -> Receive:
        """Counts body bytes as they are read: a chunked or lying body is refused too."""
        received = 0

        async def capped_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise HTTPException(413)
            return message

        return capped_receive

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = _request_id(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500
        is_static = scope["path"].startswith("/static/")

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS:
                    headers.raw.append((name, value))
                headers.raw.append((REQUEST_ID_HEADER, request_id.encode("ascii")))
                if is_static:
                    headers.setdefault("cache-control", "public, max-age=3600")
                else:
                    # Pages show a shopper's own cart and orders: no cache may keep them.
                    headers["cache-control"] = "no-store"
            await send(message)

        structlog.contextvars.bind_contextvars(request_id=request_id)
        try:
            length = _content_length(scope)
            if length is not None and length > self.max_body_bytes:
                scope["state"]["body_too_large"] = True
            await self.app(scope, self._capped(receive), send_with_headers)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            template = getattr(route, "path", None) or UNMATCHED_ROUTE
            method = scope["method"]
            HTTP_REQUESTS.labels(method, template, str(status)).inc()
            HTTP_LATENCY.labels(method, template).observe(elapsed)
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
