"""ProductUnitOfWork: the chassis unit of work with service-product's repositories bound to its
transaction (every stock change of the catalogue and of the saga goes through it)."""

from __future__ import annotations

import asyncpg

from chassis.unit_of_work import UnitOfWork
from product_service.stock import StockRepository
from product_service.store import ProductRepository

# The inbox consumer name of this service's event handlers (one queue, one consumer).
CONSUMER = "service-product"


class ProductUnitOfWork(UnitOfWork):
    products: ProductRepository
    stock: StockRepository

    def bind(self, connection: asyncpg.Connection) -> None:
        self.products = ProductRepository(connection)
        self.stock = StockRepository(connection)
