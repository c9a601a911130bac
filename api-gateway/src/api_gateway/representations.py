"""Protobuf messages -> the JSON shapes of the public API (snake_case, money in minor units).

Enumerations are the protos' own names without their prefix (`ORDER_STATUS_PENDING` is
`"PENDING"`), derived from the enum; a value the protos do not hold (a newer service during a
rolling restart) is an error (500), never another value. tests/test_representations.py iterates
every proto value against the OpenAPI schema's names.
"""

from __future__ import annotations

from typing import Any

from chassis.proto_enums import ProtoEnumNames
from ecommerce.cart.v1 import cart_pb2
from ecommerce.order.v1 import order_pb2
from ecommerce.product.v1 import product_pb2
from ecommerce.user.v1 import user_pb2

ROLE = ProtoEnumNames(user_pb2.Role, prefix="ROLE_")
ORDER_STATUS = ProtoEnumNames(order_pb2.OrderStatus, prefix="ORDER_STATUS_")
CANCEL_REASON = ProtoEnumNames(order_pb2.CancelReason, prefix="CANCEL_REASON_")
PAYMENT_STATUS = ProtoEnumNames(order_pb2.PaymentStatus, prefix="PAYMENT_STATUS_")


def user_json(user: user_pb2.User) -> dict[str, Any]:
    return {
        "id": user.id,
        "email": user.email,
        "full_name": user.full_name,
        "role": ROLE.name(user.role).lower(),
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


def order_json(order: order_pb2.Order) -> dict[str, Any]:
    return {
        "id": order.id,
        "status": ORDER_STATUS.name(order.status),
        "cancel_reason": CANCEL_REASON.optional_name(order.cancel_reason),
        # Null (UNSPECIFIED) for an order placed before payments existed.
        "payment_status": PAYMENT_STATUS.optional_name(order.payment_status),
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
