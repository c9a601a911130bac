"""`api-gateway` entry point: uvicorn with uvloop and httptools, settings from the environment."""

from __future__ import annotations

import time
from types import FrameType
from typing import Any

import uvicorn

from api_gateway.config import GatewaySettings
from api_gateway.http_protocol import BoundedHttpToolsProtocol
from api_gateway.routes.health import DRAIN
from chassis.logging import get_logger
from chassis.settings import load_settings

log = get_logger(__name__)


class DrainingServer(uvicorn.Server):
    """uvicorn's server with a drain in front of its graceful shutdown.

    The first SIGTERM (or SIGINT) turns /readyz to 503 at once and the gateway goes on serving
    every request for `drain_seconds`: the balancer in front (haproxy's health check, a cluster's
    endpoints) stops sending requests here before the listening socket closes, so none meets a
    closed port or a connection closed under it. Then uvicorn's own shutdown: no new connection,
    in-flight requests finish. A second signal during the drain starts that shutdown at once.
    """

    def __init__(self, config: uvicorn.Config, drain_seconds: float) -> None:
        super().__init__(config)
        self._drain_seconds = drain_seconds
        self._stop_at: float | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._stop_at is None and self._drain_seconds > 0 and self.started:
            self._stop_at = time.monotonic() + self._drain_seconds
            DRAIN.begin()
            log.info("draining", drain_s=self._drain_seconds, signal=sig)
            return
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        # uvicorn's main loop ticks every 0.1 s: the drain ends on the first tick past its end.
        if self._stop_at is not None and time.monotonic() >= self._stop_at:
            self.should_exit = True
        return await super().on_tick(counter)


APP = "api_gateway.app:create_app_from_env"


def main() -> None:
    settings = load_settings(GatewaySettings)
    options: dict[str, Any] = {
        "factory": True,
        "host": settings.host,
        "port": settings.port,
        "workers": settings.workers,
        "loop": "uvloop",
        # httptools with a header size bound and a header read timeout (http_protocol.py).
        "http": BoundedHttpToolsProtocol,
        # uvicorn's own proxy handling stays off: the client address is the TCP peer's, and
        # X-Forwarded-For is read by the gateway itself only from GATEWAY_TRUSTED_PROXIES
        # (forwarded.py), so no client can pick its own login-throttling key.
        "proxy_headers": False,
        # The gateway writes its own structured access line per request.
        "access_log": False,
        "log_config": None,
        "timeout_graceful_shutdown": 10,
        "timeout_keep_alive": settings.keep_alive_seconds,
    }
    if settings.workers > 1:
        # Several worker processes: uvicorn's supervisor runs servers of its own, without the
        # drain (GATEWAY_WORKERS is for one host; a cluster scales by replicas).
        uvicorn.run(APP, **options)
        return
    server = DrainingServer(uvicorn.Config(APP, **options), settings.shutdown_drain_delay_seconds)
    server.run()
    if not server.started:
        raise SystemExit(3)  # uvicorn's STARTUP_FAILURE: the app did not start


if __name__ == "__main__":
    main()
