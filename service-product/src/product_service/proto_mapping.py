"""Translation between the domain Product and its protobuf message (the wire and cache format)."""

from __future__ import annotations

import uuid
from datetime import UTC

from google.protobuf.timestamp_pb2 import Timestamp

from ecommerce.product.v1 import product_pb2
from product_service.domain import Product


def product_to_proto(product: Product) -> product_pb2.Product:
    created_at, updated_at = Timestamp(), Timestamp()
    created_at.FromDatetime(product.created_at)
    updated_at.FromDatetime(product.updated_at)
    return product_pb2.Product(
        id=str(product.id),
        sku=product.sku,
        name=product.name,
        description=product.description,
        price_cents=product.price_cents,
        currency=product.currency,
        stock=product.stock,
        created_at=created_at,
        updated_at=updated_at,
    )


def product_from_proto(message: product_pb2.Product) -> Product:
    return Product(
        id=uuid.UUID(message.id),
        sku=message.sku,
        name=message.name,
        description=message.description,
        price_cents=message.price_cents,
        currency=message.currency,
        stock=message.stock,
        created_at=message.created_at.ToDatetime(tzinfo=UTC),
        updated_at=message.updated_at.ToDatetime(tzinfo=UTC),
    )


def encode_product(product: Product) -> bytes:
    return product_to_proto(product).SerializeToString()


def decode_product(data: bytes) -> Product:
    message = product_pb2.Product()
    message.ParseFromString(data)
    return product_from_proto(message)
