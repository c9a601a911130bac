"""Catalog: one method per use case of the catalogue; reads go through the cache."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from chassis.errors import NotFound
from product_service.cache import ProductCache
from product_service.domain import (
    NewProduct,
    PageRequest,
    Product,
    ProductPatch,
    encode_page_token,
)
from product_service.store import ProductStore


@dataclass(frozen=True, slots=True)
class BatchResult:
    products: list[Product]
    missing_ids: list[uuid.UUID]


@dataclass(frozen=True, slots=True)
class Page:
    products: list[Product]
    next_page_token: str


class Catalog:
    def __init__(self, store: ProductStore, cache: ProductCache) -> None:
        self._store = store
        self._cache = cache

    async def get_product(self, product_id: uuid.UUID) -> Product:
        product = await self._cache.get(product_id)
        if product is None:
            raise NotFound(f"product {product_id} does not exist", field="id")
        return product

    async def batch_get_products(self, product_ids: list[uuid.UUID]) -> BatchResult:
        """`product_ids` already deduplicated; products come back in the order asked for."""
        found = await self._cache.get_many(product_ids) if product_ids else {}
        return BatchResult(
            products=[found[i] for i in product_ids if i in found],
            missing_ids=[i for i in product_ids if i not in found],
        )

    async def list_products(self, page: PageRequest) -> Page:
        # Pages come straight from Postgres: the cache holds single products, not listings.
        products, next_cursor = await self._store.list_page(page)
        token = "" if next_cursor is None else encode_page_token(next_cursor)
        return Page(products=products, next_page_token=token)

    async def create_product(self, new: NewProduct) -> Product:
        return await self._store.create(new)

    async def update_product(self, product_id: uuid.UUID, patch: ProductPatch) -> Product:
        product = await self._store.update(product_id, patch)
        if product is None:
            raise NotFound(f"product {product_id} does not exist", field="id")
        if not patch.is_empty():
            await self._cache.invalidate([product_id])
        return product
