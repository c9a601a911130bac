"""The payment provider as service-payment sees it: `PaymentProvider`, the four operations on one
idempotency key (the order id), and `HttpPaymentProvider`, the HTTP client of the simulated
provider (`payment_provider`, a stand-in for a real one such as Stripe).

Every operation is idempotent at the provider: the same key asked again answers the outcome it
stored, without a second charge. An answer is an `Answer`; what is no answer raises:
`ProviderUnavailable` (503, any 5xx or 429, a timeout, a connection refused or reset: worth
trying again later) or `ProviderRefused` (a 4xx saying the operation does not apply to the key
as it is, e.g. capturing a voided authorisation: the caller decides again from its own state).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Protocol

import aiohttp
import yarl
from opentelemetry import propagate, trace
from opentelemetry.util.types import AttributeValue

from payment_service.domain import Answer

_tracer = trace.get_tracer("payment_service.provider")


class ProviderUnavailable(Exception):
    """A transient failure: the operation may or may not have happened; ask again later."""


class ProviderRefused(Exception):
    """The provider refused the operation for this key (409, 404, another 4xx)."""

    def __init__(self, message: str, *, status_code: int, status: str | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.status = status  # the key's status at the provider, when it said


class PaymentProvider(Protocol):
    """A payment provider. `key` is the idempotency key of the whole payment (the order id)."""

    async def authorize(
        self, key: str, *, payment_token: str, amount_cents: int, currency: str
    ) -> tuple[Answer, str | None]:
        """AUTHORIZED, DECLINED (with the reason) or VOIDED (the key was voided first)."""
        ...

    async def capture(self, key: str) -> Answer:
        """CAPTURED."""
        ...

    async def void(self, key: str) -> Answer:
        """VOIDED (also for a key never authorised: a later authorise is then refused)."""
        ...

    async def refund(self, key: str) -> Answer:
        """REFUNDED (a captured payment given back, or an uncaptured one released)."""
        ...

    async def close(self) -> None: ...


class HttpPaymentProvider:
    """`PaymentProvider` over the simulated provider's HTTP API; each call is bounded by
    `timeout_seconds` as a whole (connect, send, answer).

    The client is aiohttp's, on one keep-alive connection pool: httpx cost ten times the CPU
    per request here (1.7 ms against 0.15 ms with 32 calls in flight, measured against the
    same local server), its pool checking every pooled connection's socket on each request.
    The session is opened on the first call, inside the event loop that makes the calls."""

    def __init__(self, base_url: str, *, timeout_seconds: float) -> None:
        self._base_url = yarl.URL(base_url.rstrip("/"))
        self._timeout = timeout_seconds
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._timeout),
                headers={"accept": "application/json"},
                raise_for_status=False,
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def _post(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        url = self._base_url.with_path(self._base_url.path.rstrip("/") + path)
        attributes: dict[str, AttributeValue] = {
            "http.request.method": "POST",
            "url.full": str(url),
            "server.address": url.host or "",
            "server.port": url.port or (443 if url.scheme == "https" else 80),
        }
        # The HTTP client span of the call (OpenTelemetry's HTTP conventions), in the trace of
        # the checkout whose payment it moves; its context travels in the request's headers.
        with _tracer.start_as_current_span(
            "POST", kind=trace.SpanKind.CLIENT, attributes=attributes
        ) as span:
            headers: dict[str, str] = {}
            propagate.inject(headers)
            try:
                async with (
                    asyncio.timeout(self._timeout),
                    self._client().post(url, json=body, headers=headers) as reply,
                ):
                    status_code = reply.status
                    content = await reply.read()
            except (aiohttp.ClientError, TimeoutError) as error:
                span.set_attribute("error.type", type(error).__name__)
                span.set_status(trace.StatusCode.ERROR)
                raise ProviderUnavailable(f"{type(error).__name__}: {error}") from error
            span.set_attribute("http.response.status_code", status_code)
            if status_code >= 500:
                span.set_attribute("error.type", str(status_code))
                span.set_status(trace.StatusCode.ERROR)
        return self._reply(status_code, content)

    @staticmethod
    def _reply(status_code: int, content: bytes) -> dict[str, Any]:
        if status_code >= 500 or status_code == 429:
            raise ProviderUnavailable(f"the provider answered {status_code}")
        try:
            answer = json.loads(content)
        except ValueError as error:
            if status_code >= 400:
                raise ProviderRefused(
                    f"the provider answered {status_code}", status_code=status_code
                ) from error
            raise ProviderUnavailable("the provider answered no JSON") from error
        if not isinstance(answer, dict):
            raise ProviderUnavailable("the provider answered no JSON object")
        if status_code >= 400:
            status = answer.get("status")
            raise ProviderRefused(
                f"the provider answered {status_code}: {answer}",
                status_code=status_code,
                status=status if isinstance(status, str) else None,
            )
        return answer

    @staticmethod
    def _answer(body: dict[str, Any], *expected: Answer) -> Answer:
        try:
            answer = Answer(str(body.get("status")))
        except ValueError:
            raise ProviderUnavailable(f"the provider answered an unknown status: {body}") from None
        if answer not in expected:
            raise ProviderUnavailable(f"the provider answered an unexpected status: {body}")
        return answer

    async def authorize(
        self, key: str, *, payment_token: str, amount_cents: int, currency: str
    ) -> tuple[Answer, str | None]:
        body = {
            "idempotency_key": key,
            "payment_token": payment_token,
            "amount_cents": amount_cents,
            "currency": currency,
        }
        try:
            reply = await self._post("/v1/authorizations", body)
        except ProviderRefused as refused:
            if refused.status_code == 409 and refused.status == Answer.VOIDED:
                return Answer.VOIDED, None
            raise
        answer = self._answer(reply, Answer.AUTHORIZED, Answer.DECLINED)
        reason = reply.get("reason")
        return answer, (str(reason) if answer is Answer.DECLINED and reason else None)

    async def capture(self, key: str) -> Answer:
        return self._answer(await self._post(f"/v1/authorizations/{key}/capture"), Answer.CAPTURED)

    async def void(self, key: str) -> Answer:
        return self._answer(await self._post(f"/v1/authorizations/{key}/void"), Answer.VOIDED)

    async def refund(self, key: str) -> Answer:
        return self._answer(await self._post(f"/v1/authorizations/{key}/refund"), Answer.REFUNDED)
