"""The CartService gRPC servicer: request fields -> handler (which validates) -> proto_mapping ->
reply."""

from __future__ import annotations

import grpc

from cart_service import domain, handlers
from cart_service.handlers import Carts
from cart_service.proto_mapping import cart_to_proto
from chassis.auth import TokenVerifier, authenticate
from ecommerce.cart.v1 import cart_pb2, cart_pb2_grpc

SERVICE_NAME = cart_pb2.DESCRIPTOR.services_by_name["CartService"].full_name


class CartServicer(cart_pb2_grpc.CartServiceServicer):
    """Thin entry point; domain errors become gRPC statuses in the chassis interceptor.

    Every RPC acts for one user, so every RPC needs that user's verified token: `user_id` must be
    the token's subject (PERMISSION_DENIED otherwise; the gateway never sends a mismatch).
    """

    def __init__(self, carts: Carts, verifier: TokenVerifier) -> None:
        self._carts = carts
        self._verifier = verifier

    async def _authorise(self, context: grpc.aio.ServicerContext, user_id: str) -> None:
        caller = await authenticate(context, self._verifier)
        domain.check_owner(caller.user_id, domain.parse_id(user_id, "user_id"))

    async def GetCart(
        self, request: cart_pb2.GetCartRequest, context: grpc.aio.ServicerContext
    ) -> cart_pb2.GetCartResponse:
        await self._authorise(context, request.user_id)
        cart = await handlers.get_cart(
            self._carts, user_id=request.user_id, lines_only=request.lines_only
        )
        return cart_pb2.GetCartResponse(
            cart=cart_to_proto(cart), cleared_order_ids=cart.cleared_order_ids
        )

    async def AddItem(
        self, request: cart_pb2.AddItemRequest, context: grpc.aio.ServicerContext
    ) -> cart_pb2.AddItemResponse:
        await self._authorise(context, request.user_id)
        cart = await handlers.add_item(
            self._carts,
            user_id=request.user_id,
            product_id=request.product_id,
            quantity=request.quantity,
        )
        return cart_pb2.AddItemResponse(cart=cart_to_proto(cart))

    async def SetItemQuantity(
        self, request: cart_pb2.SetItemQuantityRequest, context: grpc.aio.ServicerContext
    ) -> cart_pb2.SetItemQuantityResponse:
        await self._authorise(context, request.user_id)
        cart = await handlers.set_item_quantity(
            self._carts,
            user_id=request.user_id,
            product_id=request.product_id,
            quantity=request.quantity,
        )
        return cart_pb2.SetItemQuantityResponse(cart=cart_to_proto(cart))

    async def RemoveItem(
        self, request: cart_pb2.RemoveItemRequest, context: grpc.aio.ServicerContext
    ) -> cart_pb2.RemoveItemResponse:
        await self._authorise(context, request.user_id)
        cart = await handlers.remove_item(
            self._carts, user_id=request.user_id, product_id=request.product_id
        )
        return cart_pb2.RemoveItemResponse(cart=cart_to_proto(cart))

    async def ClearCart(
        self, request: cart_pb2.ClearCartRequest, context: grpc.aio.ServicerContext
    ) -> cart_pb2.ClearCartResponse:
        await self._authorise(context, request.user_id)
        await handlers.clear_cart(self._carts, user_id=request.user_id)
        return cart_pb2.ClearCartResponse()
