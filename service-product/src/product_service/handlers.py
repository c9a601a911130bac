"""One function per use case: the catalogue (`Catalog`, reads through the cache, writes in a unit
of work) and the saga's stock reservations (`Stock`, one method per event), and `subscriptions`,
the events the service consumes (one line each)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from prometheus_client import Counter

from chassis.errors import NotFound
from chassis.logging import get_logger
from chassis.messaging import Outcome, Subscription
from chassis.unit_of_work import HandledOnce
from ecommerce.events.v1 import events_pb2
from product_service import proto_mapping
from product_service.cache import ProductCache
from product_service.domain import (
    Product,
    encode_page_token,
    first_shortage,
    new_product,
    page_request,
    parse_id,
    parse_ids,
    parse_order_id,
    product_patch,
    stock_lines,
)
from product_service.store import ProductStore
from product_service.unit_of_work import ProductUnitOfWork

NewUnitOfWork = Callable[[], ProductUnitOfWork]
# The service's queue (its inbox consumer name is unit_of_work.CONSUMER).
QUEUE = "service-product"

RESERVATIONS = Counter(
    "stock_reservations",
    "Orders service-product handled: reserved, failed (a line was short) or skipped (the order"
    " was cancelled first, or already had a reservation)",
    ["outcome"],
)
RELEASES = Counter("stock_releases", "Reservations given back to stock after a cancellation")
log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class BatchResult:
    products: list[Product]
    missing_ids: list[uuid.UUID]


@dataclass(frozen=True, slots=True)
class Page:
    products: list[Product]
    next_page_token: str


class Catalog:
    def __init__(
        self, store: ProductStore, cache: ProductCache, new_unit_of_work: NewUnitOfWork
    ) -> None:
        self._store = store
        self._cache = cache
        self._new_unit_of_work = new_unit_of_work

    async def get_product(self, raw_id: str) -> Product:
        product_id = parse_id(raw_id)
        product = await self._cache.get(product_id)
        if product is None:
            raise NotFound(f"product {product_id} does not exist", field="id")
        return product

    async def batch_get_products(self, raw_ids: list[str]) -> BatchResult:
        """Duplicates are answered once; products come back in the order asked for."""
        product_ids = parse_ids(raw_ids)
        found = await self._cache.get_many(product_ids) if product_ids else {}
        return BatchResult(
            products=[found[i] for i in product_ids if i in found],
            missing_ids=[i for i in product_ids if i not in found],
        )

    async def list_products(self, *, page_size: int, page_token: str, query: str) -> Page:
        page = page_request(page_size=page_size, page_token=page_token, query=query)
        # Pages come straight from Postgres: the cache holds single products, not listings.
        products, next_cursor = await self._store.list_page(page)
        token = "" if next_cursor is None else encode_page_token(next_cursor)
        return Page(products=products, next_page_token=token)

    async def create_product(
        self,
        *,
        sku: str,
        name: str,
        description: str,
        price_cents: int,
        currency: str,
        stock: int,
    ) -> Product:
        new = new_product(
            sku=sku,
            name=name,
            description=description,
            price_cents=price_cents,
            currency=currency,
            stock=stock,
        )
        return await self._store.create(new)

    async def update_product(
        self,
        raw_id: str,
        *,
        name: str | None,
        description: str | None,
        price_cents: int | None,
        stock: int | None,
    ) -> Product:
        """Only the fields given (not None) change; a stock change commits in a unit of work."""
        product_id = parse_id(raw_id)
        patch = product_patch(
            name=name, description=description, price_cents=price_cents, stock=stock
        )
        async with self._new_unit_of_work() as uow:
            product = await uow.products.update(product_id, patch)
            if product is None:
                raise NotFound(f"product {product_id} does not exist", field="id")
            if not patch.is_empty():
                uow.after_commit(lambda: self._cache.invalidate([product_id]))
        return product


class Stock:
    """The saga's stock handlers; each runs in the unit of work that claimed its event."""

    def __init__(self, cache: ProductCache) -> None:
        self._cache = cache

    async def on_order_created(
        self, uow: ProductUnitOfWork, event: events_pb2.OrderCreated
    ) -> Outcome:
        """Reserve every line or none, record it, and say which with `stock.reserved` or
        `stock.reservation_failed`; nothing when the order was cancelled first. The event is
        claimed in the inbox by the statement that opens the reservation."""
        order_id = parse_order_id(event.order_id)
        lines = stock_lines((line.product_id, line.quantity) for line in event.lines)
        opened = await uow.stock.claim_and_open(uow.inbox, event, order_id)
        if opened is None:
            return Outcome.DUPLICATE
        if not opened:
            RESERVATIONS.labels(outcome="skipped").inc()
            log.info("stock_reservation", order_id=str(order_id), outcome="skipped")
            return Outcome.PROCESSED
        in_stock = await uow.stock.lock_stock([line.product_id for line in lines])
        shortage = first_shortage(lines, in_stock)
        if shortage is not None:
            await uow.stock.reject(order_id)
            uow.publish(proto_mapping.reservation_failed(order_id, shortage))
            uow.after_commit(_counted("failed", order_id))
            return Outcome.PROCESSED
        taken = await uow.stock.take(order_id, lines)
        uow.publish(proto_mapping.stock_reserved(order_id, lines))
        uow.after_commit(lambda: self._cache.refresh(taken))
        uow.after_commit(_counted("reserved", order_id))
        return Outcome.PROCESSED

    async def on_order_cancelled(
        self, uow: ProductUnitOfWork, event: events_pb2.OrderCancelled
    ) -> None:
        """Give a reservation back once (`stock.released`); a cancellation that comes before
        its order is remembered so the late `order.created` reserves nothing."""
        order_id = parse_order_id(event.order_id)
        released = await uow.stock.release(order_id)
        if released is None:
            return
        uow.publish(proto_mapping.stock_released(order_id, released.lines))
        uow.after_commit(lambda: self._cache.refresh(released.products))
        uow.after_commit(_released(order_id))


def _counted(outcome: str, order_id: uuid.UUID) -> Callable[[], Awaitable[None]]:
    async def count() -> None:
        RESERVATIONS.labels(outcome=outcome).inc()
        log.info("stock_reservation", order_id=str(order_id), outcome=outcome)

    return count


def _released(order_id: uuid.UUID) -> Callable[[], Awaitable[None]]:
    async def count() -> None:
        RELEASES.inc()
        log.info("stock_released", order_id=str(order_id))

    return count


def subscriptions(new_unit_of_work: NewUnitOfWork, stock: Stock) -> list[Subscription]:
    """The saga events service-product consumes, one line each (the queue's bindings, decoding,
    the inbox and the metrics follow from the type), each handler in a unit of work that claims
    the event in the inbox first (`order.created`: in the statement that opens the
    reservation): a redelivered event is acknowledged with no effect."""
    once = HandledOnce(new_unit_of_work)
    return [
        Subscription.of(events_pb2.OrderCreated, once.claiming(stock.on_order_created)),
        Subscription.of(events_pb2.OrderCancelled, once(stock.on_order_cancelled)),
    ]
