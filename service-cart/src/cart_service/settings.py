"""service-cart configuration from environment variables."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from pydantic import Field, SecretStr

from chassis.settings import (
    AmqpSettings,
    RedisSettings,
    ServiceSettings,
    TokenVerificationSettings,
)


@dataclass(frozen=True)
class CouchbaseLocation:
    """Where the carts live in Couchbase (the COUCHBASE_* settings)."""

    connstr: str
    username: str
    password: str = field(repr=False)
    bucket: str = "carts"
    scope: str = "_default"
    collection: str = "_default"


class CartSettings(ServiceSettings, RedisSettings, AmqpSettings, TokenVerificationSettings):
    """Every CART_*, COUCHBASE_* and PRODUCT_* variable, plus the chassis ones (token
    verification among them: every RPC acts for the user whose token it carries; the broker:
    confirmed orders are taken out of carts)."""

    service_name: ClassVar[str] = "service-cart"

    grpc_port: int = Field(50053, ge=0, le=65535, validation_alias="CART_GRPC_PORT")
    metrics_port: int = Field(9103, ge=0, le=65535, validation_alias="CART_METRICS_PORT")
    cart_store: Literal["redis", "couchbase"] = Field("couchbase", validation_alias="CART_STORE")
    cart_ttl_days: int = Field(30, ge=1, le=3650, validation_alias="CART_TTL_DAYS")

    couchbase_connstr: str = Field("couchbase://127.0.0.1", validation_alias="COUCHBASE_CONNSTR")
    couchbase_username: str = Field("Administrator", validation_alias="COUCHBASE_USERNAME")
    couchbase_password: SecretStr = Field(
        SecretStr("password"), validation_alias="COUCHBASE_PASSWORD"
    )
    couchbase_bucket: str = Field("carts", validation_alias="COUCHBASE_BUCKET")
    couchbase_scope: str = Field("_default", validation_alias="COUCHBASE_SCOPE")
    couchbase_collection: str = Field("_default", validation_alias="COUCHBASE_COLLECTION")
    couchbase_connect_timeout_seconds: float = Field(
        5.0, gt=0, validation_alias="COUCHBASE_CONNECT_TIMEOUT_SECONDS"
    )

    product_service_addr: str = Field("127.0.0.1:50052", validation_alias="PRODUCT_SERVICE_ADDR")
    product_rpc_timeout_seconds: float = Field(
        2.0, gt=0, le=60, validation_alias="PRODUCT_RPC_TIMEOUT_SECONDS"
    )

    @property
    def couchbase(self) -> CouchbaseLocation:
        return CouchbaseLocation(
            connstr=self.couchbase_connstr,
            username=self.couchbase_username,
            password=self.couchbase_password.get_secret_value(),
            bucket=self.couchbase_bucket,
            scope=self.couchbase_scope,
            collection=self.couchbase_collection,
        )
