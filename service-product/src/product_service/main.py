"""Composition root: settings, chassis runtime, stores, cache and servicer wired together.

`service-product` (or `service-product serve`) serves gRPC; `service-product seed` loads the
sample catalogue and exits.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass

from chassis import postgres
from chassis.auth import TokenVerifier, user_service_jwks
from chassis.grpc_server import ServiceRuntime, run
from chassis.redis_client import create_redis
from chassis.settings import load_settings
from ecommerce.product.v1 import product_pb2_grpc
from ecommerce.user.v1 import user_pb2
from product_service import seed
from product_service.cache import ProductCache
from product_service.grpc_api import SERVICE_FULL_NAME, ProductServicer
from product_service.handlers import Catalog
from product_service.settings import ProductSettings
from product_service.store import MIGRATIONS_DIR, ProductStore


@dataclass(frozen=True, slots=True)
class ProductApp:
    runtime: ServiceRuntime
    store: ProductStore
    cache: ProductCache


async def build_app(settings: ProductSettings) -> ProductApp:
    """Wire the service; nothing connects until `app.runtime.run()` (the pool is lazy)."""
    runtime = ServiceRuntime(settings)
    url = postgres.database_url(settings.postgres_url, settings.db_name)
    pool = await postgres.create_pool(url, max_size=settings.postgres_pool_max)
    redis = create_redis(settings.redis_url, timeout_seconds=settings.redis_timeout_seconds)
    store = ProductStore(pool)
    cache = ProductCache(
        redis,
        store,
        key_prefix=settings.redis_key_prefix,
        ttl_seconds=settings.cache_ttl_seconds,
        tombstone_seconds=settings.cache_tombstone_seconds,
        timeout_seconds=settings.redis_timeout_seconds,
    )
    fetch_jwks, user_channel = user_service_jwks(settings, user_pb2.GetJwksResponse.FromString)
    runtime.add_servicer(
        product_pb2_grpc.add_ProductServiceServicer_to_server,
        ProductServicer(Catalog(store, cache), TokenVerifier.from_settings(settings, fetch_jwks)),
        SERVICE_FULL_NAME,
    )

    async def prepare_database() -> None:
        await postgres.ensure_database(settings.postgres_url, settings.db_name)
        await postgres.migrate(url, MIGRATIONS_DIR)

    async def check_postgres() -> None:
        await postgres.check(pool)

    async def close_stores() -> None:
        await pool.close()
        await redis.aclose()
        await user_channel.close()

    runtime.on_startup("postgres", prepare_database)
    # Redis is deliberately not a readiness check: every read falls back to Postgres when Redis
    # is down (counted in product_cache_errors_total), so the service can still serve.
    runtime.readiness_check("postgres", check_postgres)
    runtime.on_shutdown("stores", close_stores)
    return ProductApp(runtime=runtime, store=store, cache=cache)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="service-product", description=__doc__)
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("serve", help="serve the ProductService gRPC API (the default)")
    commands.add_parser("seed", help="migrate and load the sample catalogue, then exit")
    args = parser.parse_args(argv)
    if args.command == "seed":
        seed.main()
        return
    settings = load_settings(ProductSettings)

    async def serve_forever() -> None:
        app = await build_app(settings)
        await app.runtime.run()

    run(serve_forever)


if __name__ == "__main__":
    main()
