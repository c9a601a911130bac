"""POST /api/v1/checkout's body: a `payment_token` the gateway checks before any upstream call (422
naming the field when it is missing or malformed) and hands to service-order, here a stand-in
that records what it was asked and answers with a PENDING order, whose payment status the
answer shows."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import httpx
import pytest

from ecommerce.order.v1 import order_pb2, order_pb2_grpc

from .conftest import Account

CHECKOUT = "/api/v1/checkout"
StartGateway = Callable[..., Awaitable[str]]


class RecordingOrders(order_pb2_grpc.OrderServiceServicer):
    """Stands in for service-order: every Checkout places a PENDING order, payment PENDING."""

    def __init__(self) -> None:
        self.requests: list[order_pb2.CheckoutRequest] = []

    async def Checkout(
        self, request: order_pb2.CheckoutRequest, context: grpc.aio.ServicerContext
    ) -> order_pb2.CheckoutResponse:
        self.requests.append(request)
        order = order_pb2.Order(
            id=str(uuid.uuid4()),
            user_id=request.user_id,
            status=order_pb2.ORDER_STATUS_PENDING,
            payment_status=order_pb2.PAYMENT_STATUS_PENDING,
            total_cents=1250,
            currency="USD",
        )
        return order_pb2.CheckoutResponse(order=order)


@contextlib.asynccontextmanager
async def order_service(servicer: RecordingOrders) -> AsyncIterator[str]:
    server = grpc.aio.server()
    order_pb2_grpc.add_OrderServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(0)


@pytest.mark.slow
async def test_checkout_hands_the_payment_token_to_service_order_and_shows_the_payment_status(
    extra_gateway: StartGateway, customer: Account
) -> None:
    orders = RecordingOrders()
    async with order_service(orders) as address:
        url = await extra_gateway(ORDER_SERVICE_ADDR=address)
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            reply = await client.post(
                CHECKOUT,
                json={"payment_token": "pm_card_declined"},
                headers={**customer.auth, "Idempotency-Key": "pay-1"},
            )

    assert reply.status_code == 202, reply.text
    body = reply.json()
    assert (body["status"], body["cancel_reason"], body["payment_status"]) == (
        "PENDING",
        None,
        "PENDING",
    )
    [request] = orders.requests
    assert (request.payment_token, request.idempotency_key) == ("pm_card_declined", "pay-1")


@pytest.mark.parametrize(
    "body",
    [
        None,
        {},
        {"payment_token": ""},
        {"payment_token": "card_ok"},
        {"payment_token": "pm_"},
        {"payment_token": "pm_card-ok"},
        {"payment_token": "pm_" + "x" * 65},
        {"payment_token": "4111111111111111"},
        {"payment_token": 42},
    ],
    ids=str,
)
async def test_a_missing_or_malformed_payment_token_is_422_naming_it(
    api: httpx.AsyncClient, customer: Account, body: Any
) -> None:
    if body is None:
        reply = await api.post(CHECKOUT, headers=customer.auth)
    else:
        reply = await api.post(CHECKOUT, json=body, headers=customer.auth)

    assert reply.status_code == 422, reply.text
    assert reply.headers["content-type"].startswith("application/problem+json")
    assert [error["field"] for error in reply.json()["errors"]] == ["payment_token"]


async def test_an_unknown_field_beside_the_payment_token_is_422(
    api: httpx.AsyncClient, customer: Account
) -> None:
    reply = await api.post(
        CHECKOUT, json={"payment_token": "pm_card_ok", "card_number": "4111"}, headers=customer.auth
    )

    assert reply.status_code == 422
    assert [error["field"] for error in reply.json()["errors"]] == ["card_number"]


class FlakyOrders(RecordingOrders):
    """Answers the first `failures` checkouts UNAVAILABLE (a replica going away), without the
    retry advice of a deliberate refusal."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    async def Checkout(
        self, request: order_pb2.CheckoutRequest, context: grpc.aio.ServicerContext
    ) -> order_pb2.CheckoutResponse:
        if self.failures > 0:
            self.failures -= 1
            self.requests.append(request)
            await context.abort(grpc.StatusCode.UNAVAILABLE, "replica going away")
        return await super().Checkout(request, context)


@pytest.mark.slow
async def test_a_keyed_checkout_is_sent_again_after_unavailable_and_an_unkeyed_one_is_not(
    extra_gateway: StartGateway, customer: Account
) -> None:
    orders = FlakyOrders(failures=1)
    async with order_service(orders) as address:
        url = await extra_gateway(ORDER_SERVICE_ADDR=address)
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            keyed = await client.post(
                CHECKOUT,
                json={"payment_token": "pm_card_ok"},
                headers={**customer.auth, "Idempotency-Key": "retried-1"},
            )
            # The key makes the repeat safe: the first attempt, had it placed an order, would
            # be the answer. Without a key a repeat could place a second order: 503 at once.
            orders.failures = 1
            unkeyed = await client.post(
                CHECKOUT, json={"payment_token": "pm_card_ok"}, headers=customer.auth
            )

    assert keyed.status_code == 202, keyed.text
    assert unkeyed.status_code == 503, unkeyed.text
    assert [r.idempotency_key for r in orders.requests] == ["retried-1", "retried-1", ""]
