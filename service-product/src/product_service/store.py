"""ProductStore: the only code that reads or writes the `products` table (asyncpg)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import asyncpg

from chassis.errors import AlreadyExists
from chassis.postgres import package_migrations, unavailable_on_outage
from product_service.domain import (
    NewProduct,
    PageCursor,
    PageRequest,
    Product,
    ProductPatch,
    substring_pattern,
)

# The schema this store reads and writes, shipped inside the package.
MIGRATIONS_DIR = package_migrations("product_service")

PRODUCT_COLUMNS = (
    "id, sku, name, description, price_cents, currency, stock, created_at, updated_at, version"
)
QUERY_TIMEOUT_SECONDS = 5.0

_unavailable_on_outage = unavailable_on_outage("the product database")
# Reads: run once more on a fresh connection when theirs was lost (see unavailable_on_outage).
_read = unavailable_on_outage("the product database", idempotent=True)


def product_of(row: asyncpg.Record) -> Product:
    return Product(
        id=row["id"],
        sku=row["sku"],
        name=row["name"],
        description=row["description"],
        price_cents=row["price_cents"],
        currency=row["currency"],
        stock=row["stock"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        version=row["version"],
    )


class ProductStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @_read
    async def get(self, product_id: uuid.UUID) -> Product | None:
        row = await self._pool.fetchrow(
            f"SELECT {PRODUCT_COLUMNS} FROM products WHERE id = $1",  # noqa: S608 - constant columns
            product_id,
            timeout=QUERY_TIMEOUT_SECONDS,
        )
        return None if row is None else product_of(row)

    @_read
    async def get_many(self, product_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Product]:
        rows = await self._pool.fetch(
            f"SELECT {PRODUCT_COLUMNS} FROM products WHERE id = ANY($1::uuid[])",  # noqa: S608
            list(product_ids),
            timeout=QUERY_TIMEOUT_SECONDS,
        )
        return {row["id"]: product_of(row) for row in rows}

    @_read
    async def list_page(self, page: PageRequest) -> tuple[list[Product], PageCursor | None]:
        """One page in (lower(name), id) order after the cursor, and the cursor of the next page
        (None on the last page). The sort key comes from SQL's lower(), never Python's.

        Keyset, not OFFSET: rows inserted while a client walks the pages can never shift a row
        it has already seen into the next page.
        """
        conditions: list[str] = []
        args: list[object] = []
        if page.query:
            # lower() on both sides in SQL: the filter folds case exactly like the sort key.
            args.append(substring_pattern(page.query))
            conditions.append(f"lower(name) LIKE lower(${len(args)}) ESCAPE '\\'")
        if page.after is not None:
            args += [page.after.last_name_key, page.after.last_id]
            conditions.append(f"(lower(name), id) > (${len(args) - 1}, ${len(args)})")
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        args.append(page.size + 1)
        rows = await self._pool.fetch(
            f"SELECT {PRODUCT_COLUMNS}, lower(name) AS name_key FROM products {where} "  # noqa: S608
            f"ORDER BY lower(name), id LIMIT ${len(args)}",
            *args,
            timeout=QUERY_TIMEOUT_SECONDS,
        )
        page_rows = rows[: page.size]
        products = [product_of(row) for row in page_rows]
        if len(rows) <= page.size:
            return products, None
        last = page_rows[-1]
        return products, PageCursor(
            last_name_key=last["name_key"], last_id=last["id"], query=page.query
        )

    @_unavailable_on_outage
    async def create(self, new: NewProduct) -> Product:
        try:
            row = await self._pool.fetchrow(
                "INSERT INTO products (sku, name, description, price_cents, currency, stock) "  # noqa: S608
                f"VALUES ($1, $2, $3, $4, $5, $6) RETURNING {PRODUCT_COLUMNS}",
                new.sku,
                new.name,
                new.description,
                new.price_cents,
                new.currency,
                new.stock,
                timeout=QUERY_TIMEOUT_SECONDS,
            )
        except asyncpg.UniqueViolationError:
            raise AlreadyExists(f"sku {new.sku!r} is already taken", field="sku") from None
        return product_of(_returned(row))

    @_unavailable_on_outage
    async def insert_missing(self, products: Sequence[NewProduct]) -> int:
        """Insert the products whose sku is not taken yet; the number actually inserted."""
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                "INSERT INTO products (sku, name, description, price_cents, currency, stock) "
                "SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], "
                "$5::text[], $6::int[]) "
                "ON CONFLICT (sku) DO NOTHING RETURNING id",
                [p.sku for p in products],
                [p.name for p in products],
                [p.description for p in products],
                [p.price_cents for p in products],
                [p.currency for p in products],
                [p.stock for p in products],
                timeout=60,
            )
        return len(rows)

    @_read
    async def count(self) -> int:
        value = await self._pool.fetchval("SELECT count(*) FROM products")
        return int(value)


class ProductRepository:
    """Product writes that take part in a unit of work (they commit with it)."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def update(self, product_id: uuid.UUID, patch: ProductPatch) -> Product | None:
        """Apply the patch in one statement; None when no such product."""
        if patch.is_empty():
            row = await self._conn.fetchrow(
                f"SELECT {PRODUCT_COLUMNS} FROM products WHERE id = $1",  # noqa: S608
                product_id,
                timeout=QUERY_TIMEOUT_SECONDS,
            )
            return None if row is None else product_of(row)
        row = await self._conn.fetchrow(
            "UPDATE products SET name = COALESCE($2, name), "  # noqa: S608 - constant columns
            "description = COALESCE($3, description), "
            "price_cents = COALESCE($4, price_cents), stock = COALESCE($5, stock), "
            f"updated_at = now() WHERE id = $1 RETURNING {PRODUCT_COLUMNS}",
            product_id,
            patch.name,
            patch.description,
            patch.price_cents,
            patch.stock,
            timeout=QUERY_TIMEOUT_SECONDS,
        )
        return None if row is None else product_of(row)


def _returned(row: asyncpg.Record | None) -> asyncpg.Record:
    """The row a RETURNING clause gave back (an INSERT that did not raise always gives one)."""
    if row is None:
        raise RuntimeError("INSERT ... RETURNING returned no row")
    return row
