"""The sample catalogue: a deterministic set of products generated from word lists, and the
`seed` command that loads it (migrations first, existing skus left untouched)."""

from __future__ import annotations

import random

from chassis.grpc_server import run
from chassis.logging import configure_logging, get_logger
from chassis.postgres import create_pool, database_url, ensure_database, migrate
from chassis.settings import load_settings
from product_service.domain import NewProduct, new_product
from product_service.settings import ProductSettings
from product_service.store import MIGRATIONS_DIR, ProductStore

CATALOGUE_SIZE = 1200
RANDOM_SEED = 20_240_601
_BATCH = 500

_ADJECTIVES = (
    "Classic", "Compact", "Deluxe", "Ergonomic", "Everyday", "Foldable", "Handmade", "Heavy-Duty",
    "Lightweight", "Minimalist", "Modern", "Portable", "Premium", "Rugged", "Sleek", "Smart",
    "Sturdy", "Travel", "Vintage", "Waterproof", "Wireless", "Eco", "Essential", "Pro",
)  # fmt: skip
_MATERIALS = (
    "Aluminium", "Bamboo", "Canvas", "Carbon", "Ceramic", "Cotton", "Glass", "Leather", "Linen",
    "Maple", "Oak", "Recycled", "Silicone", "Steel", "Walnut", "Wool", "Copper", "Granite",
)  # fmt: skip
_NOUNS = (
    "Backpack", "Blender", "Bottle", "Chair", "Desk Lamp", "Headphones", "Jacket", "Kettle",
    "Keyboard", "Knife Set", "Mug", "Notebook", "Pan", "Pillow", "Speaker", "Sunglasses",
    "Teapot", "Tent", "Toolbox", "Umbrella", "Wallet", "Watch", "Yoga Mat", "Cutting Board",
)  # fmt: skip
_USES = (
    "daily commutes", "weekend trips", "small kitchens", "home offices", "gifting",
    "outdoor adventures", "long workdays", "family dinners", "rainy days", "the gym",
)  # fmt: skip

log = get_logger(__name__)


def sample_catalogue(size: int = CATALOGUE_SIZE, seed: int = RANDOM_SEED) -> list[NewProduct]:
    """Always the same products for the same arguments; skus SKU-000001, SKU-000002, ..."""
    rng = random.Random(seed)
    products = []
    for number in range(1, size + 1):
        adjective, material, noun = (
            rng.choice(_ADJECTIVES),
            rng.choice(_MATERIALS),
            rng.choice(_NOUNS),
        )
        products.append(
            new_product(
                sku=f"SKU-{number:06d}",
                name=f"{adjective} {material} {noun}",
                description=(
                    f"A {adjective.lower()} {noun.lower()} made of {material.lower()}, "
                    f"built for {rng.choice(_USES)}."
                ),
                price_cents=rng.randrange(199, 50_000),
                currency="USD",
                stock=rng.randrange(0, 500),
            )
        )
    return products


async def seed_catalogue(settings: ProductSettings) -> int:
    """Migrate, then insert the sample products whose sku is missing; how many were inserted."""
    await ensure_database(settings.postgres_url, settings.db_name)
    url = database_url(settings.postgres_url, settings.db_name)
    await migrate(url, MIGRATIONS_DIR)
    pool = await create_pool(url, max_size=2)
    try:
        store = ProductStore(pool)
        catalogue = sample_catalogue()
        inserted = 0
        for start in range(0, len(catalogue), _BATCH):
            inserted += await store.insert_missing(catalogue[start : start + _BATCH])
        log.info("catalogue_seeded", inserted=inserted, total=await store.count())
        return inserted
    finally:
        await pool.close()


def main() -> None:
    settings = load_settings(ProductSettings)
    configure_logging(ProductSettings.service_name, settings.log_level, settings.log_format)

    async def seed() -> None:
        await seed_catalogue(settings)

    run(seed)


if __name__ == "__main__":
    main()
