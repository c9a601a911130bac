"""The gateway's HTTP/1.1 connection: uvicorn's httptools protocol with two bounds it lacks.

- Header size: the request line and headers of a request may take at most
  GATEWAY_MAX_HEADER_BYTES; beyond that the connection gets 431 and is closed *before* the excess
  reaches the parser, so a megabyte token costs a counter, not a parse, a copy and a decode on the
  one event loop every request shares. (httptools has no limit of its own; h11's is h11-only.)
- Header time: a request's headers must be complete within GATEWAY_HEADER_TIMEOUT_SECONDS of its
  first byte (or of the connection), else 408 and close: a client that never finishes its headers
  does not hold a connection for ever.

Counting happens per read while a request's headers are incomplete; bytes that follow complete
headers in the same read (a body, or a pipelined request) are handed on as they are, so a
pipelined request's headers are bounded by one read (at most 256 KiB) rather than by the limit.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from api_gateway.config import GatewaySettings
from chassis.logging import get_logger
from chassis.settings import load_settings

log = get_logger(__name__)


@functools.cache
def _limits() -> tuple[int, float]:
    # Each worker process loads the settings once; uvicorn builds a protocol per connection.
    settings = load_settings(GatewaySettings)
    return settings.max_header_bytes, settings.header_timeout_seconds


def _answer(status: bytes, text: bytes) -> bytes:
    body = b'{"type":"about:blank","title":"' + text + b'","status":' + status[:3] + b"}"
    return (
        b"HTTP/1.1 " + status + b"\r\ncontent-type: application/problem+json\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n" + body
    )


TOO_LARGE = _answer(b"431 Request Header Fields Too Large", b"Request Header Fields Too Large")
TIMED_OUT = _answer(b"408 Request Timeout", b"Request Timeout")


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, refusing oversized or never-finished request headers."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_header_bytes, self.header_timeout = _limits()
        self.header_bytes = 0
        self.reading_headers = True
        self.header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self.reading_headers:
            super().data_received(data)
            return
        self._arm_header_timer()
        allowance = self.max_header_bytes - self.header_bytes
        head, rest = data[:allowance], data[allowance:]
        self.header_bytes += len(head)
        if head:
            super().data_received(head)
        if not rest or self.transport.is_closing():
            return
        if self.reading_headers:
            # Still inside the headers with the allowance spent: refuse without parsing more.
            self._refuse(TOO_LARGE, "headers_too_large")
            return
        super().data_received(rest)

    def on_message_begin(self) -> None:
        # `header_bytes` is not reset here: this runs inside the feed of bytes already counted.
        super().on_message_begin()
        self.reading_headers = True

    def on_headers_complete(self) -> None:
        self.reading_headers = False
        self._disarm_header_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        # The next bytes on this connection start another request's headers.
        self.reading_headers = True
        self.header_bytes = 0
        super().on_message_complete()

    def _arm_header_timer(self) -> None:
        if self.header_timer is None and self.header_timeout > 0:
            self.header_timer = self.loop.call_later(self.header_timeout, self._headers_timed_out)

    def _disarm_header_timer(self) -> None:
        if self.header_timer is not None:
            self.header_timer.cancel()
            self.header_timer = None

    def _headers_timed_out(self) -> None:
        self.header_timer = None
        if self.reading_headers and not self.transport.is_closing():
            self._refuse(TIMED_OUT, "headers_timed_out")

    def _refuse(self, answer: bytes, reason: str) -> None:
        self._disarm_header_timer()
        log.warning(
            "request_refused", reason=reason, client=self.client[0] if self.client else None
        )
        self.transport.write(answer)
        self.transport.close()
