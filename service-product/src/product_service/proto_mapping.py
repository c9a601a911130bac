"""Translation between the domain and protobuf: the Product message (the wire and cache format) and
the saga events service-product publishes."""

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


def _now() -> Timestamp:
    now = Timestamp()
    now.GetCurrentTime()
    return now


def stock_reserved(order_id: uuid.UUID, lines: Sequence[StockLine]) -> events_pb2.StockReserved:
    return events_pb2.StockReserved(
        event_id=str(uuid.uuid4()),
        order_id=str(order_id),
        lines=_order_lines(lines),
        occurred_at=_now(),
    )


def reservation_failed(
    order_id: uuid.UUID, shortage: Shortage
) -> events_pb2.StockReservationFailed:
    return events_pb2.StockReservationFailed(
        event_id=str(uuid.uuid4()),
        order_id=str(order_id),
        product_id=str(shortage.product_id),
        requested=shortage.requested,
        available=min(shortage.available, 2**31 - 1),
        occurred_at=_now(),
    )


def stock_released(order_id: uuid.UUID, lines: Sequence[StockLine]) -> events_pb2.StockReleased:
    return events_pb2.StockReleased(
        event_id=str(uuid.uuid4()),
        order_id=str(order_id),
        lines=_order_lines(lines),
        occurred_at=_now(),
    )
