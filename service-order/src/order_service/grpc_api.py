"""OrderServicer: the thin gRPC entrypoint, translating messages to handler calls and back.

Every RPC acts for one user and only with that user's verified token (the gateway forwards it);
domain errors raised below become gRPC status in the chassis server interceptor.
"""

from __future__ import annotations

import uuid

import grpc

from chassis.auth import Principal, TokenVerifier, authenticate
from ecommerce.order.v1 import order_pb2, order_pb2_grpc
from order_service import handlers
from order_service.domain import (
    SagaVersion,
    check_owner,
    idempotency_key,
    parse_id,
    payment_token,
)
from order_service.handlers import Orders
from order_service.page_tokens import page_request
from order_service.proto_mapping import order_to_proto

SERVICE_NAME = order_pb2.DESCRIPTOR.services_by_name["OrderService"].full_name


class OrderServicer(order_pb2_grpc.OrderServiceServicer):
    """`user_id` must be the token's subject (PERMISSION_DENIED otherwise, admins included: the
    gateway never sends a mismatch); another user's order is NOT_FOUND, never revealed."""

    def __init__(self, orders: Orders, verifier: TokenVerifier) -> None:
        self._orders = orders
        self._verifier = verifier

    async def _caller(
        self, context: grpc.aio.ServicerContext, user_id: str
    ) -> tuple[Principal, uuid.UUID]:
        caller = await authenticate(context, self._verifier)
        owner = parse_id(user_id, field="user_id")
        check_owner(caller.user_id, owner)
        return caller, owner

    async def Checkout(
        self, request: order_pb2.CheckoutRequest, context: grpc.aio.ServicerContext
    ) -> order_pb2.CheckoutResponse:
        caller, _ = await self._caller(context, request.user_id)
        order = await handlers.checkout(
            self._orders,
            caller=caller,
            idempotency_key=idempotency_key(request.idempotency_key),
            payment_token=payment_token(
                request.payment_token,
                required=self._orders.saga_version is SagaVersion.PAYMENT,
            ),
        )
        return order_pb2.CheckoutResponse(order=order_to_proto(order))

    async def GetOrder(
        self, request: order_pb2.GetOrderRequest, context: grpc.aio.ServicerContext
    ) -> order_pb2.GetOrderResponse:
        _, owner = await self._caller(context, request.user_id)
        order = await handlers.get_order(
            self._orders, user_id=owner, order_id=parse_id(request.order_id, field="order_id")
        )
        return order_pb2.GetOrderResponse(order=order_to_proto(order))

    async def ListOrders(
        self, request: order_pb2.ListOrdersRequest, context: grpc.aio.ServicerContext
    ) -> order_pb2.ListOrdersResponse:
        _, owner = await self._caller(context, request.user_id)
        page = page_request(
            user_id=owner, page_size=request.page_size, page_token=request.page_token
        )
        result = await handlers.list_orders(self._orders, user_id=owner, page=page)
        return order_pb2.ListOrdersResponse(
            orders=[order_to_proto(order) for order in result.orders],
            next_page_token=result.next_page_token,
        )

    async def CancelOrder(
        self, request: order_pb2.CancelOrderRequest, context: grpc.aio.ServicerContext
    ) -> order_pb2.CancelOrderResponse:
        _, owner = await self._caller(context, request.user_id)
        order = await handlers.cancel_order(
            self._orders, user_id=owner, order_id=parse_id(request.order_id, field="order_id")
        )
        return order_pb2.CancelOrderResponse(order=order_to_proto(order))
