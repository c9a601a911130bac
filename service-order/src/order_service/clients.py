"""The clients of service-cart and service-product a checkout reads from, each call bounded by
ORDER_RPC_TIMEOUT_SECONDS and retried on UNAVAILABLE within it (both reads are idempotent)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import grpc

from chassis.auth import Principal, bearer_metadata
from chassis.errors import DomainError, Unauthenticated, Unavailable
from chassis.grpc_client import create_channel, full_method_names
from ecommerce.cart.v1 import cart_pb2, cart_pb2_grpc
from ecommerce.product.v1 import product_pb2, product_pb2_grpc
from order_service.domain import CartLine, CartSnapshot, ProductPrice

# Codes that mean "that service cannot answer now": the caller may retry the checkout.
_UNAVAILABLE_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)


def _caller_error(service: str, error: grpc.aio.AioRpcError) -> DomainError | None:
    """What the checkout's caller sees for a failed upstream call; None for a failure that is a
    bug between services (re-raised as it is: INTERNAL, logged)."""
    code = error.code()
    if code in _UNAVAILABLE_CODES:
        return Unavailable(f"{service} did not answer: {code.name}")
    if code == grpc.StatusCode.UNAUTHENTICATED:
        # The token expired between our check and theirs: the caller logs in again.
        return Unauthenticated(f"{service} refused the token: {error.details()}")
    return None


class CartClient:
    """GetCart on service-cart, for the caller and with the caller's own token."""

    def __init__(self, channel: grpc.aio.Channel, *, timeout_seconds: float) -> None:
        self._channel = channel
        self._stub = cart_pb2_grpc.CartServiceStub(channel)
        self._timeout = timeout_seconds

    @classmethod
    def connect(cls, address: str, *, timeout_seconds: float) -> CartClient:
        """A lazily connecting channel: nothing is dialled until the first call."""
        service = cart_pb2.DESCRIPTOR.services_by_name["CartService"]
        channel = create_channel(
            address,
            default_timeout=timeout_seconds,
            idempotent_methods=full_method_names(service, "GetCart"),
        )
        return cls(channel, timeout_seconds=timeout_seconds)

    async def snapshot(self, caller: Principal) -> CartSnapshot:
        """The caller's cart lines, product and quantity only (names and prices are not used),
        and the orders whose lines the cart has given up."""
        try:
            reply = await self._stub.GetCart(
                cart_pb2.GetCartRequest(user_id=caller.user_id, lines_only=True),
                metadata=bearer_metadata(caller.token),
                timeout=self._timeout,
            )
        except grpc.aio.AioRpcError as error:
            translated = _caller_error("the cart service", error)
            if translated is None:
                raise
            raise translated from error
        return CartSnapshot(
            lines=tuple(
                CartLine(uuid.UUID(item.product_id), item.quantity) for item in reply.cart.items
            ),
            cleared_order_ids=frozenset(uuid.UUID(order) for order in reply.cleared_order_ids),
        )

    async def close(self) -> None:
        await self._channel.close()


class ProductClient:
    """BatchGetProducts on service-product: the current name, price and currency of products."""

    def __init__(self, channel: grpc.aio.Channel, *, timeout_seconds: float) -> None:
        self._channel = channel
        self._stub = product_pb2_grpc.ProductServiceStub(channel)
        self._timeout = timeout_seconds

    @classmethod
    def connect(cls, address: str, *, timeout_seconds: float) -> ProductClient:
        service = product_pb2.DESCRIPTOR.services_by_name["ProductService"]
        channel = create_channel(
            address,
            default_timeout=timeout_seconds,
            idempotent_methods=full_method_names(service, "BatchGetProducts"),
        )
        return cls(channel, timeout_seconds=timeout_seconds)

    async def prices(self, product_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, ProductPrice]:
        """The products that exist among `product_ids` (at most 100, a cart holds 50), by id, in
        ONE call."""
        if not product_ids:
            return {}
        try:
            reply = await self._stub.BatchGetProducts(
                product_pb2.BatchGetProductsRequest(ids=[str(i) for i in product_ids]),
                timeout=self._timeout,
            )
        except grpc.aio.AioRpcError as error:
            translated = _caller_error("the product service", error)
            if translated is None:
                raise
            raise translated from error
        prices = (
            ProductPrice(
                product_id=uuid.UUID(product.id),
                name=product.name,
                price_cents=product.price_cents,
                currency=product.currency,
            )
            for product in reply.products
        )
        return {price.product_id: price for price in prices}

    async def close(self) -> None:
        await self._channel.close()
