"""ProductSettings: every environment variable service-product reads, with its default."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from chassis.settings import (
    AmqpSettings,
    PostgresSettings,
    RedisSettings,
    ServiceSettings,
    TokenVerificationSettings,
)


class ProductSettings(
    ServiceSettings, PostgresSettings, RedisSettings, AmqpSettings, TokenVerificationSettings
):
    service_name: ClassVar[str] = "service-product"

    grpc_port: int = Field(50052, ge=0, le=65535, validation_alias="PRODUCT_GRPC_PORT")
    metrics_port: int = Field(9102, ge=0, le=65535, validation_alias="PRODUCT_METRICS_PORT")
    db_name: str = Field("products", min_length=1, validation_alias="PRODUCT_DB_NAME")
    cache_ttl_seconds: int = Field(300, ge=1, validation_alias="PRODUCT_CACHE_TTL_SECONDS")
    cache_tombstone_seconds: float = Field(
        5.0, gt=0, validation_alias="PRODUCT_CACHE_TOMBSTONE_SECONDS"
    )
    redis_timeout_seconds: float = Field(
        0.25, gt=0, validation_alias="PRODUCT_REDIS_TIMEOUT_SECONDS"
    )
