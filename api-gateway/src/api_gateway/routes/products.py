"""The catalogue: public reads (GET by id served through the micro-cache), admin writes."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

import orjson
from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from api_gateway.deps import AdminUser, ProductCacheDep, UpstreamsDep
from api_gateway.errors import problems
from api_gateway.product_cache import ProductMicroCache
from api_gateway.representations import product_json
from api_gateway.schemas import ProductIn, ProductOut, ProductPage, ProductPatch, Text
from api_gateway.upstreams import Upstreams
from chassis.auth import bearer_metadata
from ecommerce.product.v1 import product_pb2

router = APIRouter(prefix="/api/v1/products", tags=["products"])


@router.get(
    "",
    response_model=ProductPage,
    summary="Page through the catalogue, optionally filtered by name",
    responses=problems(422, 503, 504),
)
async def list_products(
    upstreams: UpstreamsDep,
    limit: Annotated[int, Query(ge=1, le=100, description="Products per page.")] = 20,
    page_token: Annotated[
        Text, Query(max_length=1024, description="next_page_token of the previous page.")
    ] = "",
    q: Annotated[
        Text, Query(max_length=200, description="Case-insensitive substring of the name.")
    ] = "",
) -> dict[str, Any]:
    reply = await upstreams.products.ListProducts(
        product_pb2.ListProductsRequest(page_size=limit, page_token=page_token, query=q),
        timeout=upstreams.timeout,
    )
    return {
        "items": [product_json(product) for product in reply.products],
        "next_page_token": reply.next_page_token or None,
    }


@router.get(
    "/{product_id}",
    response_model=ProductOut,
    summary="One product",
    description="Served from a per-gateway micro-cache (GATEWAY_PRODUCT_CACHE_TTL_SECONDS, "
    "default 1 s): a change made through another gateway replica shows within that bound.",
    responses=problems(404, 422, 503, 504),
)
async def get_product(product_id: UUID, request: Request) -> Response:
    # The hot path: app state read directly, since resolving two dependencies cost more than
    # the cache hit itself.
    upstreams: Upstreams = request.app.state.upstreams
    cache: ProductMicroCache = request.app.state.product_cache
    key = str(product_id)

    async def load() -> bytes:
        reply = await upstreams.products.GetProduct(
            product_pb2.GetProductRequest(id=key), timeout=upstreams.timeout
        )
        return orjson.dumps(product_json(reply.product))

    return Response(await cache.get(key, load), media_type="application/json")


@router.post(
    "",
    status_code=201,
    response_model=ProductOut,
    summary="Add a product (admin)",
    responses=problems(401, 403, 409, 413, 422, 503, 504),
)
async def create_product(
    body: ProductIn, admin: AdminUser, upstreams: UpstreamsDep
) -> dict[str, Any]:
    reply = await upstreams.products.CreateProduct(
        product_pb2.CreateProductRequest(**body.model_dump()),
        metadata=bearer_metadata(admin.token),
        timeout=upstreams.timeout,
    )
    return product_json(reply.product)


@router.patch(
    "/{product_id}",
    response_model=ProductOut,
    summary="Change some fields of a product (admin)",
    description="Only the fields present change; null is the same as absent.",
    responses=problems(401, 403, 404, 413, 422, 503, 504),
)
async def update_product(
    product_id: UUID,
    body: ProductPatch,
    admin: AdminUser,
    upstreams: UpstreamsDep,
    cache: ProductCacheDep,
) -> dict[str, Any]:
    key = str(product_id)
    changes = body.model_dump(exclude_none=True)
    try:
        reply = await upstreams.products.UpdateProduct(
            product_pb2.UpdateProductRequest(id=key, **changes),
            metadata=bearer_metadata(admin.token),
            timeout=upstreams.timeout,
        )
    finally:
        # Also after a failure (e.g. a deadline): the change may have been applied.
        cache.evict(key)
    return product_json(reply.product)
