"""Translation between the domain and protobuf: the Product message (the wire and cache format) and
the saga events service-product publishes (their business fields: the chassis stamps event id and
time, and derives routing key and correlation id from each event's proto declaration)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC

from google.protobuf.timestamp_pb2 import Timestamp

from ecommerce.events.v1 import events_pb2
from ecommerce.product.v1 import product_pb2
from product_service.domain import Product, Shortage, StockLine


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


def _order_lines(lines: Sequence[StockLine]) -> list[events_pb2.OrderLine]:
    return [
        events_pb2.OrderLine(product_id=str(line.product_id), quantity=line.quantity)
        for line in lines
    ]


def stock_reserved(order_id: uuid.UUID, lines: Sequence[StockLine]) -> events_pb2.StockReserved:
    return events_pb2.StockReserved(
        order_id=str(order_id),
        lines=_order_lines(lines),
    )


def reservation_failed(
    order_id: uuid.UUID, shortage: Shortage
) -> events_pb2.StockReservationFailed:
    return events_pb2.StockReservationFailed(
        order_id=str(order_id),
        product_id=str(shortage.product_id),
        requested=shortage.requested,
        available=min(shortage.available, 2**31 - 1),
    )


def stock_released(order_id: uuid.UUID, lines: Sequence[StockLine]) -> events_pb2.StockReleased:
    return events_pb2.StockReleased(
        order_id=str(order_id),
        lines=_order_lines(lines),
    )
