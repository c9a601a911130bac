"""The client of service-product: what the cart needs to know about products, with deadlines."""

from __future__ import annotations

from collections.abc import Iterable

import grpc

from cart_service.domain import ProductNotFound, ProductSnapshot
from chassis.errors import Unavailable
from chassis.grpc_client import create_channel, full_method_names
from ecommerce.product.v1 import product_pb2, product_pb2_grpc

# Codes that mean "service-product cannot answer now": the caller may retry.
_UNAVAILABLE_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)


def _snapshot(product: product_pb2.Product) -> ProductSnapshot:
    return ProductSnapshot(
        product_id=product.id,
        name=product.name,
        price_cents=product.price_cents,
        currency=product.currency,
        stock=product.stock,
    )


def _unavailable(error: grpc.aio.AioRpcError) -> Unavailable:
    return Unavailable(f"the product service did not answer: {error.code().name}")


class ProductCatalog:
    """GetProduct and BatchGetProducts on service-product, each bounded by a deadline."""

    def __init__(self, channel: grpc.aio.Channel, *, timeout_seconds: float) -> None:
        self._channel = channel
        self._stub = product_pb2_grpc.ProductServiceStub(channel)
        self._timeout = timeout_seconds

    @classmethod
    def connect(cls, address: str, *, timeout_seconds: float) -> ProductCatalog:
        """A lazily connecting channel: nothing is dialled until the first call; both reads are
        retried on UNAVAILABLE within their deadline."""
        channel = create_channel(
            address,
            default_timeout=timeout_seconds,
            idempotent_methods=full_method_names(
                product_pb2.DESCRIPTOR.services_by_name["ProductService"],
                "GetProduct",
                "BatchGetProducts",
            ),
        )
        return cls(channel, timeout_seconds=timeout_seconds)

    async def get(self, product_id: str) -> ProductSnapshot:
        try:
            response = await self._stub.GetProduct(
                product_pb2.GetProductRequest(id=product_id), timeout=self._timeout
            )
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                raise ProductNotFound(f"product {product_id} does not exist") from error
            if error.code() in _UNAVAILABLE_CODES:
                raise _unavailable(error) from error
            raise
        return _snapshot(response.product)

    async def batch_get(self, product_ids: Iterable[str]) -> dict[str, ProductSnapshot]:
        """The products that exist among `product_ids`, by id (a cart holds at most 50)."""
        ids = list(dict.fromkeys(product_ids))
        if not ids:
            return {}
        try:
            response = await self._stub.BatchGetProducts(
                product_pb2.BatchGetProductsRequest(ids=ids), timeout=self._timeout
            )
        except grpc.aio.AioRpcError as error:
            if error.code() in _UNAVAILABLE_CODES:
                raise _unavailable(error) from error
            raise
        return {product.id: _snapshot(product) for product in response.products}

    async def close(self) -> None:
        await self._channel.close()
