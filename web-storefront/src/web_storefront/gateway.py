"""The storefront's only way to the platform: the gateway's public `/api/v1`, over HTTP, each call
under a deadline, carrying the shopper's address (`X-Forwarded-For`) and, when signed in, the
token kept in the shopper's server-side session.

A gateway answer that is not a success becomes a `Problem` (its RFC 9457 details, read); no answer
at all (refused, timed out, a 5xx) becomes `GatewayUnavailable`. Pages turn both into sentences.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field
from typing import Any

import httpx

from chassis.logging import get_logger

log = get_logger(__name__)


@dataclass(frozen=True)
class Caller:
    """Who a call is made for: the shopper's address, their token when signed in, and the
    storefront request id (echoed to the gateway so both access lines correlate)."""

    address: str
    token: str | None = None
    request_id: str | None = None


@dataclass
class Problem(Exception):
    """The gateway refused a request (4xx): its problem details."""

    status: int
    detail: str = ""
    # field -> message, from a validation problem's `errors`
    errors: dict[str, str] = field(default_factory=dict)
    # Seconds, from `Retry-After` (throttling), when the gateway said.
    retry_after: int | None = None

    def __str__(self) -> str:
        return f"{self.status}: {self.detail}"


class GatewayUnavailable(Exception):
    """No usable answer: refused, timed out, or the gateway answered 5xx."""

    def __init__(self, reason: str, status: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


def _retry_after(response: httpx.Response) -> int | None:
    value = response.headers.get("retry-after", "")
    try:
        seconds = float(value)
    except ValueError:
        return None
    return max(0, math.ceil(seconds)) if math.isfinite(seconds) else None


def problem_of(response: httpx.Response) -> Problem:
    """A 4xx answer as a Problem; a body that is not problem+json still gives its status."""
    try:
        body = response.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    errors: dict[str, str] = {}
    for entry in body.get("errors") or ():
        if isinstance(entry, dict) and isinstance(entry.get("field"), str):
            errors.setdefault(entry["field"], str(entry.get("message", "")))
    detail = body.get("detail")
    return Problem(
        status=response.status_code,
        detail=detail if isinstance(detail, str) else "",
        errors=errors,
        retry_after=_retry_after(response),
    )


class GatewayClient:
    """One pooled HTTP client to the gateway for the whole process."""

    def __init__(
        self, base_url: str, *, timeout_seconds: float, transport: httpx.AsyncBaseTransport | None
    ) -> None:
        self._deadline = timeout_seconds
        self._root = base_url.rstrip("/")
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/") + "/api/v1",
            timeout=httpx.Timeout(timeout_seconds),
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
            transport=transport,
            # The gateway is reached directly: no proxy from the environment, no redirects.
            trust_env=False,
            follow_redirects=False,
        )

    async def close(self) -> None:
        await self._http.aclose()

    async def alive(self) -> bool:
        """The gateway's own liveness (`/healthz`), for the storefront's readiness."""
        try:
            async with asyncio.timeout(self._deadline):
                response = await self._http.get(self._root + "/healthz")
        except (TimeoutError, httpx.HTTPError):
            return False
        return response.status_code == 200

    async def call(
        self,
        caller: Caller,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        """The decoded JSON of a 2xx answer (None for 204); Problem for 4xx; GatewayUnavailable
        for anything else. The whole call, body included, is bounded by the deadline."""
        request_headers = {"X-Forwarded-For": caller.address, **(headers or {})}
        if caller.token:
            request_headers["Authorization"] = f"Bearer {caller.token}"
        if caller.request_id:
            request_headers["X-Request-ID"] = caller.request_id
        try:
            async with asyncio.timeout(self._deadline):
                response = await self._http.request(
                    method, path, json=json, params=params, headers=request_headers
                )
        except (TimeoutError, httpx.TimeoutException) as error:
            log.warning("gateway_call_failed", method=method, reason="timeout")
            raise GatewayUnavailable("timeout") from error
        except httpx.TransportError as error:
            log.warning("gateway_call_failed", method=method, reason=type(error).__name__)
            raise GatewayUnavailable("unreachable") from error
        if response.status_code >= 500:
            log.warning("gateway_call_failed", method=method, status=response.status_code)
            raise GatewayUnavailable("server error", response.status_code)
        if response.status_code >= 400:
            raise problem_of(response)
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError as error:
            log.warning("gateway_call_failed", method=method, reason="unreadable body")
            raise GatewayUnavailable("unreadable answer", response.status_code) from error
