"""ProductServicer: the thin gRPC entrypoint: request fields -> Catalog (which validates) ->
proto_mapping -> reply.

Domain errors raised below are mapped to gRPC status by the chassis server interceptor.
"""

from __future__ import annotations

import grpc

from chassis.auth import TokenVerifier, authenticate
from chassis.errors import PermissionDenied
from ecommerce.product.v1 import product_pb2, product_pb2_grpc
from product_service.handlers import Catalog
from product_service.proto_mapping import product_to_proto

SERVICE_NAME = product_pb2.DESCRIPTOR.services_by_name["ProductService"].full_name


async def require_admin(context: grpc.aio.ServicerContext, verifier: TokenVerifier) -> None:
    """Writes are for admins: the caller's forwarded token must verify and carry the admin role."""
    caller = await authenticate(context, verifier)
    if not caller.is_admin:
        raise PermissionDenied("this action needs the admin role")


class ProductServicer(product_pb2_grpc.ProductServiceServicer):
    """Reads are public; CreateProduct and UpdateProduct verify an admin's token themselves."""

    def __init__(self, catalog: Catalog, verifier: TokenVerifier) -> None:
        self._catalog = catalog
        self._verifier = verifier

    async def GetProduct(
        self, request: product_pb2.GetProductRequest, context: grpc.aio.ServicerContext
    ) -> product_pb2.GetProductResponse:
        product = await self._catalog.get_product(request.id)
        return product_pb2.GetProductResponse(product=product_to_proto(product))

    async def BatchGetProducts(
        self, request: product_pb2.BatchGetProductsRequest, context: grpc.aio.ServicerContext
    ) -> product_pb2.BatchGetProductsResponse:
        result = await self._catalog.batch_get_products(list(request.ids))
        return product_pb2.BatchGetProductsResponse(
            products=[product_to_proto(p) for p in result.products],
            missing_ids=[str(i) for i in result.missing_ids],
        )

    async def ListProducts(
        self, request: product_pb2.ListProductsRequest, context: grpc.aio.ServicerContext
    ) -> product_pb2.ListProductsResponse:
        page = await self._catalog.list_products(
            page_size=request.page_size, page_token=request.page_token, query=request.query
        )
        return product_pb2.ListProductsResponse(
            products=[product_to_proto(p) for p in page.products],
            next_page_token=page.next_page_token,
        )

    async def CreateProduct(
        self, request: product_pb2.CreateProductRequest, context: grpc.aio.ServicerContext
    ) -> product_pb2.CreateProductResponse:
        await require_admin(context, self._verifier)
        product = await self._catalog.create_product(
            sku=request.sku,
            name=request.name,
            description=request.description,
            price_cents=request.price_cents,
            currency=request.currency,
            stock=request.stock,
        )
        return product_pb2.CreateProductResponse(product=product_to_proto(product))

    async def UpdateProduct(
        self, request: product_pb2.UpdateProductRequest, context: grpc.aio.ServicerContext
    ) -> product_pb2.UpdateProductResponse:
        await require_admin(context, self._verifier)
        product = await self._catalog.update_product(
            request.id,
            name=request.name if request.HasField("name") else None,
            description=request.description if request.HasField("description") else None,
            price_cents=request.price_cents if request.HasField("price_cents") else None,
            stock=request.stock if request.HasField("stock") else None,
        )
        return product_pb2.UpdateProductResponse(product=product_to_proto(product))
