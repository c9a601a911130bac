"""Checkout and the caller's orders. The user id comes from the verified token, which travels on
to service-order (and from there to service-cart), each verifying it again."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any
from uuid import UUID

import grpc
from fastapi import APIRouter, Header, Query
from starlette.responses import JSONResponse, Response

from api_gateway.admission import checkout_refusal
from api_gateway.deps import CurrentUser, UpstreamsDep
from api_gateway.errors import problems
from api_gateway.representations import order_json
from api_gateway.schemas import CheckoutIn, IdempotencyKey, OrderOut, OrderPage, Text
from chassis.auth import bearer_metadata
from ecommerce.order.v1 import order_pb2

router = APIRouter(prefix="/api/v1", tags=["orders"])
# A checkout with an Idempotency-Key is sent again after UNAVAILABLE (not a refusal with retry
# advice), this many times in all within the one deadline, this long apart.
KEYED_CHECKOUT_ATTEMPTS = 3
KEYED_CHECKOUT_BACKOFF = 0.1


@router.post(
    "/checkout",
    status_code=202,
    response_model=OrderOut,
    summary="Order the cart: the order is PENDING until the saga confirms or cancels it",
    description="Prices every line from the catalogue, stores the order PENDING (its "
    "`payment_status` PENDING) and answers at once; poll GET /api/v1/orders/{id} for CONFIRMED "
    "(stock reserved and the payment authorised) or CANCELLED (`PAYMENT_DECLINED` when the "
    "provider declines the `payment_token`). With an `Idempotency-Key`, "
    "repeating the request (also concurrently) returns the same order, never a second one. "
    "A cart is ordered once: lines the caller's orders still on their way already hold are not "
    "ordered again: with nothing new in the cart the answer is the PENDING order holding it, "
    "or 409 once that order is confirmed. "
    "While earlier orders are still being processed, new checkouts are refused with 503 and "
    "`Retry-After`.",
    responses=problems(401, 409, 422, 503, 504),
)
async def checkout(
    body: CheckoutIn,
    user: CurrentUser,
    upstreams: UpstreamsDep,
    idempotency_key: Annotated[IdempotencyKey | None, Header()] = None,
) -> Response:
    request = order_pb2.CheckoutRequest(
        user_id=user.user_id,
        idempotency_key=idempotency_key or "",
        payment_token=body.payment_token,
    )
    deadline = time.monotonic() + upstreams.timeout
    attempts = KEYED_CHECKOUT_ATTEMPTS if idempotency_key else 1
    for attempt in range(1, attempts + 1):
        try:
            reply = await upstreams.orders.Checkout(
                request,
                metadata=bearer_metadata(user.token),
                timeout=max(deadline - time.monotonic(), 0.001),
            )
        except grpc.aio.AioRpcError as error:
            refusal = checkout_refusal(error)
            if refusal is not None:
                return refusal
            # With an Idempotency-Key, a checkout is safe to send again: a replica that went
            # away (a rolling restart, a crash) is replaced by another, and a first attempt
            # that did place the order makes the repeat answer with that order.
            left = deadline - time.monotonic()
            if not _retryable(error) or attempt == attempts or left <= KEYED_CHECKOUT_BACKOFF:
                raise
            await asyncio.sleep(KEYED_CHECKOUT_BACKOFF)
            continue
        return JSONResponse(order_json(reply.order), status_code=202)
    raise AssertionError("unreachable: the last attempt returns or raises")


def _retryable(error: grpc.aio.AioRpcError) -> bool:
    return bool(error.code() == grpc.StatusCode.UNAVAILABLE)


@router.get(
    "/orders",
    response_model=OrderPage,
    summary="The caller's orders, newest first",
    responses=problems(401, 422, 503, 504),
)
async def list_orders(
    user: CurrentUser,
    upstreams: UpstreamsDep,
    limit: Annotated[int, Query(ge=1, le=100, description="Orders per page.")] = 20,
    page_token: Annotated[
        Text, Query(max_length=1024, description="next_page_token of the previous page.")
    ] = "",
) -> dict[str, Any]:
    reply = await upstreams.orders.ListOrders(
        order_pb2.ListOrdersRequest(user_id=user.user_id, page_size=limit, page_token=page_token),
        metadata=bearer_metadata(user.token),
        timeout=upstreams.timeout,
    )
    return {
        "items": [order_json(order) for order in reply.orders],
        "next_page_token": reply.next_page_token or None,
    }


@router.get(
    "/orders/{order_id}",
    response_model=OrderOut,
    summary="One of the caller's orders (another user's is 404)",
    responses=problems(401, 404, 422, 503, 504),
)
async def get_order(order_id: UUID, user: CurrentUser, upstreams: UpstreamsDep) -> dict[str, Any]:
    reply = await upstreams.orders.GetOrder(
        order_pb2.GetOrderRequest(user_id=user.user_id, order_id=str(order_id)),
        metadata=bearer_metadata(user.token),
        timeout=upstreams.timeout,
    )
    return order_json(reply.order)


@router.post(
    "/orders/{order_id}/cancel",
    response_model=OrderOut,
    summary="Cancel a PENDING or CONFIRMED order; its reserved stock comes back",
    responses=problems(401, 404, 409, 422, 503, 504),
)
async def cancel_order(
    order_id: UUID, user: CurrentUser, upstreams: UpstreamsDep
) -> dict[str, Any]:
    reply = await upstreams.orders.CancelOrder(
        order_pb2.CancelOrderRequest(user_id=user.user_id, order_id=str(order_id)),
        metadata=bearer_metadata(user.token),
        timeout=upstreams.timeout,
    )
    return order_json(reply.order)
