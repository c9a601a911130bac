"""`api-gateway` entry point: uvicorn with uvloop and httptools, settings from the environment."""

from __future__ import annotations

import uvicorn

from api_gateway.config import GatewaySettings
from api_gateway.http_protocol import BoundedHttpToolsProtocol
from chassis.settings import load_settings


def main() -> None:
    settings = load_settings(GatewaySettings)
    uvicorn.run(
        "api_gateway.app:create_app_from_env",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        loop="uvloop",
        # httptools with a header size bound and a header read timeout (http_protocol.py).
        http=BoundedHttpToolsProtocol,
        # uvicorn's own proxy handling stays off: the client address is the TCP peer's, and
        # X-Forwarded-For is read by the gateway itself only from GATEWAY_TRUSTED_PROXIES
        # (forwarded.py), so no client can pick its own login-throttling key.
        proxy_headers=False,
        # The gateway writes its own structured access line per request.
        access_log=False,
        log_config=None,
        timeout_graceful_shutdown=10,
    )


if __name__ == "__main__":
    main()
