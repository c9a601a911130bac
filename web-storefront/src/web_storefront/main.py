"""`web-storefront` entry point: uvicorn (uvloop, httptools), settings from the environment."""

from __future__ import annotations

import uvicorn

from chassis.settings import load_settings
from web_storefront.settings import StorefrontSettings


def main() -> None:
    settings = load_settings(StorefrontSettings)
    proxies = settings.trusted_proxy_list
    uvicorn.run(
        "web_storefront.app:create_app_from_env",
        factory=True,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        # The shopper is the TCP peer, unless a proxy in STOREFRONT_TRUSTED_PROXIES (a TLS
        # terminator) says otherwise; its X-Forwarded-Proto then also decides the Secure cookie.
        proxy_headers=bool(proxies),
        forwarded_allow_ips=proxies or None,
        server_header=False,
        access_log=False,
        log_config=None,
        timeout_graceful_shutdown=10,
        timeout_keep_alive=settings.keep_alive_seconds,
    )


if __name__ == "__main__":
    main()
