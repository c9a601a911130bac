"""Admission control: overload is refused at once, never queued past a deadline.

- `AdmissionControl` (pure ASGI): at most `GATEWAY_MAX_IN_FLIGHT` requests of the API
  (`/api/...`) in progress in this worker; one more is answered 503 problem+json with
  `Retry-After` (`GATEWAY_ADMISSION_RETRY_AFTER_SECONDS`) before any work is done for it. Health,
  readiness and the docs are never refused. 0 admits everything.
- `checkout_refusal`: service-order refuses a checkout with UNAVAILABLE and retry advice while the
  saga is behind; that refusal becomes 503 with the advised `Retry-After`.
"""

from __future__ import annotations

import grpc
from prometheus_client import Counter, Gauge
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from api_gateway.errors import problem_response
from chassis.errors import retry_after_of

IN_FLIGHT = Gauge("gateway_in_flight_requests", "API requests in progress in this worker")
REFUSED = Counter(
    "gateway_admission_refused",
    "Requests refused with 503 + Retry-After before any work, by why",
    ["reason"],
)

AT_CAPACITY = "the gateway is at capacity, retry later"
CHECKOUTS_PAUSED = "checkouts are paused while earlier orders are processed, retry later"


class AdmissionControl:
    """Counts API requests in progress; past the bound, answers 503 at once."""

    def __init__(self, app: ASGIApp, *, max_in_flight: int, retry_after_seconds: int) -> None:
        self.app = app
        self.max_in_flight = max_in_flight
        self.retry_after = str(retry_after_seconds)
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or not self.max_in_flight
            or not scope["path"].startswith("/api/")
        ):
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.max_in_flight:
            REFUSED.labels("in_flight").inc()
            refusal = problem_response(503, AT_CAPACITY, headers={"Retry-After": self.retry_after})
            await refusal(scope, receive, send)
            return
        self.in_flight += 1
        IN_FLIGHT.inc()
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
            IN_FLIGHT.dec()


def checkout_refusal(error: grpc.aio.AioRpcError) -> Response | None:
    """503 with the advised `Retry-After` when service-order refused the checkout on purpose
    (UNAVAILABLE carrying retry advice); None for any other failure."""
    if error.code() != grpc.StatusCode.UNAVAILABLE:
        return None
    seconds = retry_after_of(error)
    if seconds is None:
        return None
    REFUSED.labels("saga_backlog").inc()
    return problem_response(503, CHECKOUTS_PAUSED, headers={"Retry-After": str(seconds)})
