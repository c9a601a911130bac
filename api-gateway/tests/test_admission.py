"""Admission control: past `GATEWAY_MAX_IN_FLIGHT` API requests in progress, the next is answered
503 problem+json with `Retry-After` at once, while the others are still waiting on their upstream;
under the bound, and once requests finish, nothing is refused; health is never refused. A checkout
service-order refuses with retry advice (the saga is behind) is a 503 with that `Retry-After`."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import httpx
import pytest

from chassis.errors import Unavailable
from chassis.testing.process import free_port
from ecommerce.order.v1 import order_pb2_grpc

from .conftest import Account

StartGateway = Callable[..., Awaitable[str]]


@contextlib.asynccontextmanager
async def silent_upstream() -> AsyncIterator[str]:
    """A listener that accepts and never speaks HTTP/2: a call to it ends only at its deadline,
    or when the block ends, which closes every connection it took (the gateway's requests held
    on it end then, and the gateway stops at once instead of after its graceful shutdown's 10 s)."""
    taken: list[asyncio.StreamWriter] = []
    server = await asyncio.start_server(lambda r, w: taken.append(w), "127.0.0.1", 0)
    async with server:
        try:
            yield f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
        finally:
            for writer in taken:
                writer.close()


def product_url() -> str:
    return f"/api/v1/products/{uuid.uuid4()}"  # never cached: each one calls the upstream


async def in_flight(metrics_url: str) -> float:
    async with httpx.AsyncClient(timeout=5) as client:
        text = (await client.get(metrics_url)).text
    for line in text.splitlines():
        if line.startswith("gateway_in_flight_requests "):
            return float(line.split()[1])
    return 0.0


async def until_in_flight(metrics_url: str, count: int) -> None:
    """Wait (a bound, not a timing assertion) until `count` requests are in progress."""
    async with asyncio.timeout(20):
        while True:
            if await in_flight(metrics_url) >= count:
                return
            await asyncio.sleep(0.05)


@pytest.mark.slow
async def test_past_the_bound_a_request_is_refused_at_once_with_retry_after(
    extra_gateway: StartGateway,
) -> None:
    metrics_port = free_port()
    async with silent_upstream() as silent:
        url = await extra_gateway(
            PRODUCT_SERVICE_ADDR=silent,
            GATEWAY_MAX_IN_FLIGHT="3",
            GATEWAY_RPC_TIMEOUT_SECONDS="30",
            GATEWAY_METRICS_PORT=str(metrics_port),
        )
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            held = [asyncio.create_task(client.get(product_url())) for _ in range(3)]
            await until_in_flight(f"http://127.0.0.1:{metrics_port}/metrics", 3)
            refused = await client.get(product_url())
            healthz = await client.get("/healthz")
            # The refusal came while the three still wait for their 30 s deadline.
            still_waiting = [not task.done() for task in held]
            for task in held:
                task.cancel()

    assert still_waiting == [True, True, True]
    assert refused.headers["retry-after"] == "1"
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert refused.json() == {
        "type": "about:blank",
        "title": "Service Unavailable",
        "status": 503,
        "detail": "the gateway is at capacity, retry later",
    }
    assert "x-request-id" in refused.headers
    assert healthz.status_code == 200


@pytest.mark.slow
async def test_places_are_given_back_when_requests_end(extra_gateway: StartGateway) -> None:
    async with silent_upstream() as silent:
        url = await extra_gateway(
            PRODUCT_SERVICE_ADDR=silent,
            GATEWAY_MAX_IN_FLIGHT="2",
            GATEWAY_RPC_TIMEOUT_SECONDS="0.5",
        )
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            timed_out = await asyncio.gather(*(client.get(product_url()) for _ in range(2)))
            # Both places are free again: a login (another upstream) is answered on its merits.
            login = await client.post(
                "/api/v1/login", json={"email": "nobody@example.com", "password": "not-this-1"}
            )

    assert [reply.status_code for reply in timed_out] == [504, 504]
    assert login.status_code == 401


@pytest.mark.slow
async def test_under_the_bound_concurrent_requests_are_all_served(
    extra_gateway: StartGateway, api: httpx.AsyncClient, admin: Account
) -> None:
    body = {
        "sku": f"ADM-{uuid.uuid4().hex[:8]}",
        "name": "Admitted",
        "price_cents": 100,
        "stock": 1,
    }
    product = (await api.post("/api/v1/products", json=body, headers=admin.auth)).json()
    url = await extra_gateway(GATEWAY_MAX_IN_FLIGHT="8")
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        replies = await asyncio.gather(
            *(client.get(f"/api/v1/products/{product['id']}") for _ in range(8))
        )

    assert [reply.status_code for reply in replies] == [200] * 8


class RefusingOrders(order_pb2_grpc.OrderServiceServicer):
    """Stands in for a service-order whose saga is behind (or one that is merely down)."""

    def __init__(self, advice: bool) -> None:
        self.advice = advice

    async def Checkout(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        if self.advice:
            refusal = Unavailable("paused", retry_after_seconds=2)
            await context.abort(
                refusal.code, refusal.message, trailing_metadata=refusal.trailing_metadata()
            )
        await context.abort(grpc.StatusCode.UNAVAILABLE, "down")


@contextlib.asynccontextmanager
async def order_service(servicer: RefusingOrders) -> AsyncIterator[str]:
    server = grpc.aio.server()
    order_pb2_grpc.add_OrderServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(0)


@pytest.mark.slow
async def test_a_checkout_refused_for_the_saga_backlog_is_503_with_its_retry_after(
    extra_gateway: StartGateway, customer: Account
) -> None:
    async with order_service(RefusingOrders(advice=True)) as orders:
        url = await extra_gateway(ORDER_SERVICE_ADDR=orders)
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            reply = await client.post(
                "/api/v1/checkout", json={"payment_token": "pm_card_ok"}, headers=customer.auth
            )

    assert reply.status_code == 503
    assert reply.headers["retry-after"] == "2"
    assert reply.headers["content-type"].startswith("application/problem+json")
    assert reply.json()["detail"] == (
        "checkouts are paused while earlier orders are processed, retry later"
    )


@pytest.mark.slow
async def test_an_order_service_that_is_down_is_a_plain_503(
    extra_gateway: StartGateway, customer: Account
) -> None:
    async with order_service(RefusingOrders(advice=False)) as orders:
        url = await extra_gateway(ORDER_SERVICE_ADDR=orders)
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            reply = await client.post(
                "/api/v1/checkout", json={"payment_token": "pm_card_ok"}, headers=customer.auth
            )

    assert reply.status_code == 503
    assert "retry-after" not in reply.headers
    assert reply.json()["detail"] == "an upstream service is unavailable, retry later"
