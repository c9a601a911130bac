"""Protobuf messages -> the JSON shapes of the public API (snake_case, money in minor units)."""

from __future__ import annotations

from typing import Any

from ecommerce.cart.v1 import cart_pb2
from ecommerce.order.v1 import order_pb2
from ecommerce.product.v1 import product_pb2
from ecommerce.user.v1 import user_pb2

_ROLE_NAMES = {user_pb2.ROLE_CUSTOMER: "customer", user_pb2.ROLE_ADMIN: "admin"}


def user_json(user: user_pb2.User) -> dict[str, Any]:
    return {
        "id": user.id,
        "email": user.email,
        "full_name": user.full_name,
        "role": _ROLE_NAMES.get(user.role, "customer"),
        "created_at": user.created_at.ToDatetime().isoformat() + "Z",
    }


def product_json(product: product_pb2.Product) -> dict[str, Any]:
    return {
        "id": product.id,
        "sku": product.sku,
        "name": product.name,
        "description": product.description,
        "price_cents": product.price_cents,
        "currency": product.currency,
        "stock": product.stock,
    }


def cart_json(cart: cart_pb2.Cart) -> dict[str, Any]:
    return {
        "items": [
            {
                "product_id": line.product_id,
                "name": line.name,
                "quantity": line.quantity,
                "unit_price_cents": line.unit_price_cents,
                "line_total_cents": line.line_total_cents,
            }
            for line in cart.items
        ],
        "total_cents": cart.total_cents,
        "currency": cart.currency or "USD",
    }


_STATUS = {
    order_pb2.ORDER_STATUS_PENDING: "PENDING",
    order_pb2.ORDER_STATUS_CONFIRMED: "CONFIRMED",
    order_pb2.ORDER_STATUS_CANCELLED: "CANCELLED",
}
_CANCEL_REASON = {
    order_pb2.CANCEL_REASON_OUT_OF_STOCK: "OUT_OF_STOCK",
    order_pb2.CANCEL_REASON_USER_CANCELLED: "USER_CANCELLED",
    order_pb2.CANCEL_REASON_TIMEOUT: "TIMEOUT",
}


def order_json(order: order_pb2.Order) -> dict[str, Any]:
    return {
        "id": order.id,
        "status": _STATUS.get(order.status, "PENDING"),
        "cancel_reason": _CANCEL_REASON.get(order.cancel_reason),
        "items": [
            {
                "product_id": item.product_id,
                "name": item.name,
                "quantity": item.quantity,
                "unit_price_cents": item.unit_price_cents,
                "line_total_cents": item.line_total_cents,
            }
            for item in order.items
        ],
        "total_cents": order.total_cents,
        "currency": order.currency or "USD",
        "created_at": order.created_at.ToDatetime().isoformat() + "Z",
        "updated_at": order.updated_at.ToDatetime().isoformat() + "Z",
    }
