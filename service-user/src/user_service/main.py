"""Composition root of service-user: settings, adapters, the gRPC runtime with its hooks, serve."""

from __future__ import annotations

import sys
from typing import NoReturn

from pydantic import SecretStr
from redis.asyncio import Redis

from chassis import postgres
from chassis.auth import TokenVerifier, jwk_mapping
from chassis.grpc_server import ServiceRuntime, run
from chassis.logging import get_logger
from chassis.redis_client import create_redis
from chassis.settings import load_settings
from ecommerce.user.v1 import user_pb2_grpc
from user_service import handlers
from user_service.domain import admin_password_weakness
from user_service.grpc_api import SERVICE_NAME, UserServicer
from user_service.passwords import PasswordHashing
from user_service.settings import UserSettings
from user_service.store import MIGRATIONS_DIR, UserStore
from user_service.throttle import ClientRateLimit, LoginThrottle
from user_service.tokens import (
    SigningKeyError,
    TokenIssuer,
    load_signing_key,
    retired_public_keys,
)


def token_issuer_from(settings: UserSettings) -> TokenIssuer:
    """The configured keys; an unusable one stops the process with one clear line (exit 2)."""
    pem = settings.jwt_private_key.get_secret_value() if settings.jwt_private_key else None
    try:
        key = load_signing_key(pem, settings.jwt_private_key_file)
    except (SigningKeyError, OSError) as error:
        source = "JWT_PRIVATE_KEY" if pem else "JWT_PRIVATE_KEY_FILE"
        configuration_error(f"{source}: {error}")
    try:
        retired = retired_public_keys(settings.jwt_retired_public_keys or "")
    except SigningKeyError as error:
        configuration_error(f"JWT_RETIRED_PUBLIC_KEYS: {error}")
    return TokenIssuer(
        key,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        ttl_seconds=settings.jwt_ttl_seconds,
        retired_keys=retired,
    )


def configuration_error(message: str) -> NoReturn:
    """Stop the start with one line on stderr and exit code 2, as chassis.settings does."""
    sys.stderr.write(f"service-user: configuration error: {message}\n")
    raise SystemExit(2)


async def build_runtime(settings: UserSettings) -> ServiceRuntime:
    """Wire the adapters and register the servicer, startup hooks, readiness checks and cleanup."""
    # The runtime first: it configures logging, so the key warning below is a JSON line.
    runtime = ServiceRuntime(settings)
    tokens = token_issuer_from(settings)
    passwords = PasswordHashing(
        time_cost=settings.argon2_time_cost,
        memory_cost_kib=settings.argon2_memory_cost_kib,
        parallelism=settings.argon2_parallelism,
        max_in_flight=settings.argon2_max_in_flight,
        max_queued=settings.argon2_max_queued,
    )
    database_url = postgres.database_url(settings.postgres_url, settings.db_name)
    # min_size 0: no connection is made before the startup hook has created the database.
    pool = await postgres.create_pool(
        database_url,
        max_size=settings.postgres_pool_max,
        idle_seconds=settings.postgres_pool_idle_seconds,
    )
    store = UserStore(pool, timeout=settings.postgres_timeout_seconds)
    redis = create_redis(settings.redis_url, timeout_seconds=settings.redis_timeout_seconds)
    throttle = LoginThrottle(
        redis,
        key_prefix=settings.redis_key_prefix,
        max_failures=settings.login_max_failures,
        window_seconds=settings.login_window_seconds,
        delay_after_failures=settings.login_delay_after_failures,
        max_delay_seconds=settings.login_max_delay_seconds,
        timeout_seconds=settings.redis_timeout_seconds,
    )
    accounts = handlers.Accounts(
        store=store,
        passwords=passwords,
        throttle=throttle,
        tokens=tokens,
        login_rate=client_rate(settings, redis, "login", settings.login_rate_per_client),
        register_rate=client_rate(settings, redis, "register", settings.register_rate_per_client),
    )

    async def own_jwks() -> list[dict[str, str]]:
        # This service signs the tokens, so it checks them against its own published keys.
        return [jwk_mapping(key) for key in tokens.jwks()]

    verifier = TokenVerifier(own_jwks, issuer=settings.jwt_issuer, audience=settings.jwt_audience)
    runtime.add_servicer(
        user_pb2_grpc.add_UserServiceServicer_to_server,
        UserServicer(accounts, verifier),
        SERVICE_NAME,
    )

    async def prepare_database() -> None:
        await postgres.ensure_database(settings.postgres_url, settings.db_name)
        await postgres.migrate(database_url, MIGRATIONS_DIR)

    runtime.on_startup("database", prepare_database)
    admin = admin_account_wanted(settings)
    if admin is not None:
        admin_email, admin_password = admin

        async def bootstrap_admin() -> None:
            await handlers.bootstrap_admin(
                store,
                passwords,
                email=admin_email,
                password=admin_password.get_secret_value(),
            )

        runtime.on_startup("admin", bootstrap_admin)

    async def check_postgres() -> None:
        await postgres.check(pool)

    async def close_stores() -> None:
        await pool.close()
        await redis.aclose()
        passwords.close()

    runtime.readiness_check("postgres", check_postgres)
    runtime.readiness_check("redis", throttle.check)
    runtime.on_shutdown("stores", close_stores)
    return runtime


def client_rate(settings: UserSettings, redis: Redis, action: str, limit: int) -> ClientRateLimit:
    return ClientRateLimit(
        redis,
        key_prefix=settings.redis_key_prefix,
        action=action,
        limit=limit,
        window_seconds=settings.client_rate_window_seconds,
        timeout_seconds=settings.redis_timeout_seconds,
        # Login fails closed like its throttle; registering needs no Redis to stay safe.
        fail_open=action == "register",
    )


def admin_account_wanted(settings: UserSettings) -> tuple[str, SecretStr] | None:
    """The admin account to create: both variables set, and a password that is neither a
    well-known default nor too short (otherwise one error line says why, and none is made)."""
    if not (settings.admin_email and settings.admin_password):
        return None
    weakness = admin_password_weakness(settings.admin_password.get_secret_value())
    if weakness is not None:
        get_logger(__name__).error(
            "admin_account_not_created",
            reason=f"ADMIN_PASSWORD {weakness}: no admin account was created; set a strong one",
        )
        return None
    return settings.admin_email, settings.admin_password


async def serve() -> None:
    settings = load_settings(UserSettings)
    problem = settings.admin_account_problem()
    if problem:
        configuration_error(problem)
    runtime = await build_runtime(settings)
    await runtime.run()


def main() -> None:
    run(serve)
