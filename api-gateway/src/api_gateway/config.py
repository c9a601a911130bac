"""Gateway settings: every knob of the public entry, read once from the environment."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, field_validator

from api_gateway.forwarded import Network, parse_networks
from chassis.settings import ProcessSettings


class GatewaySettings(ProcessSettings):
    """Environment variables of the api-gateway (12-factor, validated at start). Logging, tracing
    and the metrics bind address come from the chassis base like every service's."""

    service_name: ClassVar[str] = "api-gateway"

    # `port` comes from GATEWAY_PORT only, never from the PORT that honcho and many platforms set,
    # nor `host` from HOST (the chassis settings never populate an aliased field by its name).
    host: str = Field("0.0.0.0", validation_alias="GATEWAY_HOST")
    port: int = Field(8080, ge=0, le=65535, validation_alias="GATEWAY_PORT")
    workers: int = Field(1, ge=1, le=64, validation_alias="GATEWAY_WORKERS")
    # Prometheus /metrics is served here (on METRICS_HOST), never on the public port.
    metrics_port: int = Field(9100, ge=0, le=65535, validation_alias="GATEWAY_METRICS_PORT")

    # An empty address disables that upstream (its routes answer 503, /readyz skips it).
    user_service_addr: str = Field("127.0.0.1:50051", validation_alias="USER_SERVICE_ADDR")
    product_service_addr: str = Field("127.0.0.1:50052", validation_alias="PRODUCT_SERVICE_ADDR")
    cart_service_addr: str = Field("127.0.0.1:50053", validation_alias="CART_SERVICE_ADDR")
    order_service_addr: str = Field("127.0.0.1:50054", validation_alias="ORDER_SERVICE_ADDR")

    rpc_timeout_seconds: float = Field(3.0, gt=0, validation_alias="GATEWAY_RPC_TIMEOUT_SECONDS")
    # On SIGTERM: /readyz answers 503 at once while every request is still served for this long,
    # so the balancer in front stops sending new ones before the listening socket closes; then
    # uvicorn's graceful shutdown (in-flight requests finish). A second signal skips the rest.
    shutdown_drain_delay_seconds: float = Field(
        2.0, ge=0, le=300, validation_alias="GATEWAY_SHUTDOWN_DRAIN_DELAY_SECONDS"
    )
    readiness_timeout_seconds: float = Field(
        1.0, gt=0, validation_alias="GATEWAY_READINESS_TIMEOUT_SECONDS"
    )
    max_body_bytes: int = Field(1_048_576, ge=1, validation_alias="GATEWAY_MAX_BODY_BYTES")
    # Request line plus headers of one request (431 above, refused before parsing), and how long
    # they may take to arrive (408 after it): bounded work per request, no slowloris.
    max_header_bytes: int = Field(
        16_384, ge=1024, le=1_048_576, validation_alias="GATEWAY_MAX_HEADER_BYTES"
    )
    header_timeout_seconds: float = Field(
        10.0, gt=0, validation_alias="GATEWAY_HEADER_TIMEOUT_SECONDS"
    )
    # How long an idle keep-alive connection stays open. Longer than any client's or balancer's
    # own idle expiry (httpx: 5 s, an AWS load balancer: 60 s), so the client always closes
    # first: a server closing at the moment the client sends on that connection loses the
    # request (the client sees a reset, not an answer).
    keep_alive_seconds: int = Field(
        75, ge=1, le=3600, validation_alias="GATEWAY_KEEP_ALIVE_SECONDS"
    )

    # Admission control (admission.py): API requests in progress at once in one worker; past it
    # a request is answered 503 + Retry-After at once instead of queueing past its deadline.
    # 0 admits everything.
    max_in_flight: int = Field(128, ge=0, validation_alias="GATEWAY_MAX_IN_FLIGHT")
    admission_retry_after_seconds: int = Field(
        1, ge=1, le=3600, validation_alias="GATEWAY_ADMISSION_RETRY_AFTER_SECONDS"
    )

    # Proxies (addresses or CIDR networks, comma-separated) whose X-Forwarded-For is believed:
    # the storefront, a load balancer. Empty: the client is always the TCP peer.
    trusted_proxies: str = Field("", validation_alias="GATEWAY_TRUSTED_PROXIES")

    jwt_issuer: str = Field("ecommerce-user-service", validation_alias="GATEWAY_JWT_ISSUER")
    jwt_audience: str = Field("ecommerce-api", validation_alias="GATEWAY_JWT_AUDIENCE")
    # Unknown `kid`s trigger a JWKS refetch at most this often, so forged kids cannot hammer
    # service-user; known keys are refreshed on this period too (key rotation).
    jwks_min_refetch_seconds: float = Field(
        10.0, ge=0, validation_alias="GATEWAY_JWKS_MIN_REFETCH_SECONDS"
    )
    jwks_max_age_seconds: float = Field(
        300.0, gt=0, validation_alias="GATEWAY_JWKS_MAX_AGE_SECONDS"
    )

    product_cache_ttl_seconds: float = Field(
        1.0, ge=0, validation_alias="GATEWAY_PRODUCT_CACHE_TTL_SECONDS"
    )
    product_cache_max_entries: int = Field(
        10_000, ge=1, validation_alias="GATEWAY_PRODUCT_CACHE_MAX_ENTRIES"
    )

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: str) -> str:
        parse_networks(value)  # a malformed entry stops the start, naming the variable
        return value

    @property
    def trusted_proxy_networks(self) -> tuple[Network, ...]:
        return parse_networks(self.trusted_proxies)
