"""Translation between the domain's priced cart and its protobuf message."""

from __future__ import annotations

from cart_service.domain import PricedCart
from ecommerce.cart.v1 import cart_pb2


def cart_to_proto(cart: PricedCart) -> cart_pb2.Cart:
    return cart_pb2.Cart(
        user_id=cart.user_id,
        items=[
            cart_pb2.CartItem(
                product_id=item.product_id,
                name=item.name,
                quantity=item.quantity,
                unit_price_cents=item.unit_price_cents,
                line_total_cents=item.line_total_cents,
            )
            for item in cart.items
        ],
        total_cents=cart.total_cents,
        currency=cart.currency,
    )
