"""The caller's own cart. The user id always comes from the verified token, never the request,
and the token itself travels on to service-cart, which verifies it again (zero trust)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from fastapi import APIRouter
from starlette.responses import Response

from api_gateway.deps import CurrentUser, UpstreamsDep
from api_gateway.errors import problems
from api_gateway.representations import cart_json
from api_gateway.schemas import CartItemIn, CartOut, CartQuantityIn
from chassis.auth import bearer_metadata
from ecommerce.cart.v1 import cart_pb2

router = APIRouter(prefix="/api/v1/cart", tags=["cart"])


@router.get(
    "", response_model=CartOut, summary="The caller's cart", responses=problems(401, 503, 504)
)
async def get_cart(user: CurrentUser, upstreams: UpstreamsDep) -> dict[str, Any]:
    reply = await upstreams.carts.GetCart(
        cart_pb2.GetCartRequest(user_id=user.user_id),
        metadata=bearer_metadata(user.token),
        timeout=upstreams.timeout,
    )
    return cart_json(reply.cart)


@router.post(
    "/items",
    response_model=CartOut,
    summary="Add units of a product (adds to an existing line)",
    responses=problems(401, 404, 409, 413, 422, 503, 504),
)
async def add_item(body: CartItemIn, user: CurrentUser, upstreams: UpstreamsDep) -> dict[str, Any]:
    reply = await upstreams.carts.AddItem(
        cart_pb2.AddItemRequest(
            user_id=user.user_id, product_id=str(body.product_id), quantity=body.quantity
        ),
        metadata=bearer_metadata(user.token),
        timeout=upstreams.timeout,
    )
    return cart_json(reply.cart)


@router.put(
    "/items/{product_id}",
    response_model=CartOut,
    summary="Set a line's quantity (0 removes it)",
    responses=problems(401, 404, 409, 413, 422, 503, 504),
)
async def set_item_quantity(
    product_id: UUID, body: CartQuantityIn, user: CurrentUser, upstreams: UpstreamsDep
) -> dict[str, Any]:
    reply = await upstreams.carts.SetItemQuantity(
        cart_pb2.SetItemQuantityRequest(
            user_id=user.user_id, product_id=str(product_id), quantity=body.quantity
        ),
        metadata=bearer_metadata(user.token),
        timeout=upstreams.timeout,
    )
    return cart_json(reply.cart)


@router.delete(
    "/items/{product_id}",
    response_model=CartOut,
    summary="Remove a line",
    responses=problems(401, 404, 422, 503, 504),
)
async def remove_item(
    product_id: UUID, user: CurrentUser, upstreams: UpstreamsDep
) -> dict[str, Any]:
    reply = await upstreams.carts.RemoveItem(
        cart_pb2.RemoveItemRequest(user_id=user.user_id, product_id=str(product_id)),
        metadata=bearer_metadata(user.token),
        timeout=upstreams.timeout,
    )
    return cart_json(reply.cart)


@router.delete(
    "",
    status_code=204,
    response_class=Response,
    summary="Empty the cart",
    responses=problems(401, 503, 504),
)
async def clear_cart(user: CurrentUser, upstreams: UpstreamsDep) -> Response:
    await upstreams.carts.ClearCart(
        cart_pb2.ClearCartRequest(user_id=user.user_id),
        metadata=bearer_metadata(user.token),
        timeout=upstreams.timeout,
    )
    return Response(status_code=204)
