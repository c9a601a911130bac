"""Storefront settings: where it listens, the gateway it calls, and where sessions live."""

from __future__ import annotations

from ipaddress import ip_network
from typing import ClassVar

from pydantic import Field, HttpUrl, field_validator

from chassis.settings import ProcessSettings, RedisSettings


class StorefrontSettings(ProcessSettings, RedisSettings):
    """Environment variables of the web storefront (validated at start). Logging, tracing, the
    metrics bind address, REDIS_URL and REDIS_KEY_PREFIX come from the chassis bases."""

    service_name: ClassVar[str] = "web-storefront"

    # Never read from the generic PORT / HOST that honcho and shells set (see chassis.settings).
    host: str = Field("0.0.0.0", validation_alias="STOREFRONT_HOST")
    port: int = Field(8000, ge=0, le=65535, validation_alias="STOREFRONT_PORT")
    metrics_port: int = Field(9106, ge=0, le=65535, validation_alias="STOREFRONT_METRICS_PORT")

    # The platform is reached through the gateway's public /api/v1 only, like any client.
    gateway_url: str = Field("http://127.0.0.1:8080", validation_alias="GATEWAY_URL")
    # Deadline of each gateway call, connection included (the gateway's own upstream deadline is
    # 3 s, so its 503/504 arrives before this one expires).
    gateway_timeout_seconds: float = Field(
        5.0, gt=0, le=60, validation_alias="STOREFRONT_GATEWAY_TIMEOUT_SECONDS"
    )
    redis_timeout_seconds: float = Field(
        1.0, gt=0, le=30, validation_alias="STOREFRONT_REDIS_TIMEOUT_SECONDS"
    )
    # A session unused this long is forgotten; a signed-in one ends with its token anyway.
    session_idle_seconds: int = Field(
        1800, ge=60, le=86_400 * 30, validation_alias="STOREFRONT_SESSION_IDLE_SECONDS"
    )
    # Proxies in front of the storefront (a TLS terminator) whose X-Forwarded-For/-Proto uvicorn
    # believes: comma-separated addresses or CIDR networks. Empty: the shopper is the TCP peer.
    trusted_proxies: str = Field("", validation_alias="STOREFRONT_TRUSTED_PROXIES")
    # An idle keep-alive connection closes after this long: longer than a browser's or a
    # balancer's own idle expiry, so they close first (as GATEWAY_KEEP_ALIVE_SECONDS does).
    keep_alive_seconds: int = Field(
        75, ge=1, le=3600, validation_alias="STOREFRONT_KEEP_ALIVE_SECONDS"
    )
    # Largest form body accepted (413 above it).
    max_body_bytes: int = Field(
        65_536, ge=1024, le=10_485_760, validation_alias="STOREFRONT_MAX_BODY_BYTES"
    )

    @field_validator("gateway_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        url = HttpUrl(value)  # raises for anything but an http(s) URL
        if url.query or url.fragment:
            raise ValueError("the gateway URL takes no query or fragment")
        return value.rstrip("/")

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: str) -> str:
        for entry in (part.strip() for part in value.split(",")):
            if entry:
                try:
                    ip_network(entry, strict=False)
                except ValueError:
                    raise ValueError(f"{entry!r} is not an IP address or CIDR network") from None
        return value

    @property
    def trusted_proxy_list(self) -> list[str]:
        return [part.strip() for part in self.trusted_proxies.split(",") if part.strip()]
